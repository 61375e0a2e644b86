// Apple platforms: options work through core_posix.cc; TCP_INFO, queue ioctls and SO_COOKIE have
// no direct equivalent in the shape socktune reports, so they say so with -ENOTSUP.
// Cross-compiled with zig for x64 and arm64 in CI (scripts/prebuilds.mjs); not run there.
#include <errno.h>
#include "core.h"

namespace st {

const char* platform_name() { return "darwin"; }
bool has_tcp_info() { return false; }
bool has_queues() { return false; }
bool has_cookie() { return false; }

const char* const* tcp_state_names(int* n) {
  *n = 0;
  return nullptr;
}
int tcp_info(int, double*) { return -ENOTSUP; }
int queues(int, int32_t*, int32_t*, int32_t*) { return -ENOTSUP; }
int linger_if_drained(int, int32_t*, int32_t*) { return -ENOTSUP; }
int tcp_state(int, int32_t*) { return -ENOTSUP; }
int cookie(int, uint64_t*) { return -ENOPROTOOPT; }

}  // namespace st
