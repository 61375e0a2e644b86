// Windows: Node's TCP handles expose no socket to an addon (their `fd` reads -1), so no option or
// view can be reached. Every option is listed by its name as unsupported, so the JavaScript layer
// answers ERR_SOCKTUNE_UNSUPPORTED naming what is missing (keepalive and Nagle remain reachable
// through Node's own socket.setKeepAlive and socket.setNoDelay).
// Cross-compiled with mingw-w64 and loaded in node.exe under wine in CI (scripts/emulated.mjs).
#include <errno.h>
#include "core.h"

#ifndef ENOTSUP
#define ENOTSUP 129
#endif

namespace st {

namespace {
// Ids and names as in core_posix.cc's table; level -1 marks each one unsupported.
const OptionInfo kOptions[OPT_COUNT] = {
    {"SO_KEEPALIVE", -1, -1}, {"TCP_KEEPIDLE", -1, -1},     {"TCP_KEEPINTVL", -1, -1},
    {"TCP_KEEPCNT", -1, -1},  {"TCP_USER_TIMEOUT", -1, -1}, {"SO_LINGER", -1, -1},
    {"TCP_NODELAY", -1, -1},  {"SO_REUSEADDR", -1, -1},     {"SO_REUSEPORT", -1, -1},
};
}  // namespace

const OptionInfo& option_info(int32_t id) { return kOptions[id]; }
int set_option(int, int32_t, int32_t) { return -ENOTSUP; }
int get_option(int, int32_t, int32_t*) { return -ENOTSUP; }
int apply_options(int, const int32_t*, const int32_t*, int, int* applied) {
  *applied = 0;
  return -ENOTSUP;
}
int keep_shorter(int, int32_t*, int32_t*, int*, int32_t* kept, bool) {
  *kept = 0;
  return -ENOTSUP;
}
int check_tcp(int) { return -ENOTSUP; }
const char* platform_name() { return "win32"; }
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
int cookie(int, uint64_t*) { return -ENOTSUP; }
int socket_error(int, int32_t*) { return -ENOTSUP; }

}  // namespace st
