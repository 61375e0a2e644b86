// Apple platforms: options work through core_posix.cc (TCP_KEEPALIVE as the keepalive idle time,
// TCP_RXT_CONNDROPTIME as the user timeout, SO_LINGER_SEC: platform.h); the kernel views are
// views_none.cc's.
// Cross-compiled with zig for x64 and arm64 in CI (scripts/prebuilds.mjs); not run there.
#include <errno.h>
#include "core.h"
#include "platform.h"

// What macOS has, required at build time (the prebuilds are never run here): the keepalive idle
// time, interval and count, and the user timeout (TCP_RXT_CONNDROPTIME, in seconds).
#if !defined(ST_TCP_KEEPIDLE) || !defined(TCP_KEEPINTVL) || !defined(TCP_KEEPCNT) || !defined(TCP_RXT_CONNDROPTIME)
#error "macOS headers without TCP_KEEPALIVE, TCP_KEEPINTVL, TCP_KEEPCNT or TCP_RXT_CONNDROPTIME"
#endif
static_assert(ST_USER_TIMEOUT_UNIT == 1000, "TCP_RXT_CONNDROPTIME counts seconds");

namespace st {

const char* platform_name() { return "darwin"; }
// Node and Bun hand out the fd of every socket.
int locate_socket(const SocketQuery&, int*) { return -ENOTSUP; }

}  // namespace st
