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
int socket_inodes(int, std::vector<uint32_t>*) { return -EPROTONOSUPPORT; }
int socket_owners(const uint32_t*, size_t, std::vector<uint32_t>*) { return -EPROTONOSUPPORT; }
int run_in_background(int (*fn)(void*), void* ctx) { return fn(ctx); }
int netns_open(const char*, int fds[3]) {
  fds[0] = fds[1] = fds[2] = -1;
  return -EPROTONOSUPPORT;
}
}  // namespace st
