// Platforms without netlink sock_diag: the JavaScript layer falls back or says unsupported.
#include <errno.h>
#include "diag.h"

namespace st {
bool has_diag() { return false; }
void diag_families(int* inet, int* inet6) {
  *inet = -1;
  *inet6 = -1;
}
int diag_dump(const DiagFilter&, DiagVisit, void*) { return -EPROTONOSUPPORT; }
}  // namespace st
