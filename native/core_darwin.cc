// Apple platforms: options work through core_posix.cc (TCP_KEEPALIVE as the keepalive idle time,
// SO_LINGER_SEC: platform.h); the kernel views are views_none.cc's.
// Cross-compiled with zig for x64 and arm64 in CI (scripts/prebuilds.mjs); not run there.
#include <errno.h>
#include "core.h"

namespace st {

const char* platform_name() { return "darwin"; }
// Node and Bun hand out the fd of every socket.
int locate_socket(const SocketQuery&, int*) { return -ENOTSUP; }

}  // namespace st
