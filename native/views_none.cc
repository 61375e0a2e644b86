// Platforms without the kernel views socktune reads on Linux (macOS, Windows): TCP_INFO, the queue
// ioctls, the state read, the reset path's queue check and SO_COOKIE have no direct equivalent in
// the shape socktune reports, so each says so with -ENOTSUP and the binding exports the facts
// (has_* false) that make JavaScript answer ERR_SOCKTUNE_UNSUPPORTED by name before calling them.
#include <errno.h>
#include "core.h"

#ifndef ENOTSUP
#define ENOTSUP 129  // mingw-w64's <errno.h> has none
#endif

namespace st {

bool has_tcp_info() { return false; }
bool has_queues() { return false; }
bool has_cookie() { return false; }
int tcp_info(int, double*) { return -ENOTSUP; }
int queues(int, int32_t*, int32_t*, int32_t*) { return -ENOTSUP; }
int linger_if_drained(int, int32_t*, int32_t*) { return -ENOTSUP; }
int tcp_state(int, int32_t*) { return -ENOTSUP; }
int cookie(int, uint64_t*) { return -ENOTSUP; }

}  // namespace st
