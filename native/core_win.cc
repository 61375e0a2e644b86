// Windows: Node's TCP handles expose no socket to an addon (their `fd` reads -1), so no option can
// be reached. Every option is listed by its name as unsupported, so the JavaScript layer answers
// ERR_SOCKTUNE_UNSUPPORTED naming what is missing (keepalive and Nagle remain reachable through
// Node's own socket.setKeepAlive and socket.setNoDelay); the kernel views are views_none.cc's.
// Cross-compiled with mingw-w64 and loaded in node.exe under wine in CI (scripts/pack-smoke.mjs).
#include <errno.h>
#include "core.h"

#ifndef ENOTSUP
#define ENOTSUP 129
#endif

namespace st {

namespace {
// Level -1 marks each option unsupported.
const OptionInfo kOptions[OPT_COUNT] = {
#define ST_X(id, name) {name, -1, -1},
    ST_OPTIONS(ST_X)
#undef ST_X
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
int create_socket(int, int, const int32_t*, const int32_t*, int, const uint8_t*, int, uint32_t, int* applied, int* step,
                  int* fd_out) {
  *applied = 0;
  *step = STEP_SOCKET;
  *fd_out = -1;
  return -ENOTSUP;
}
int close_socket(int) { return -ENOTSUP; }
int socket_error(int, int32_t*) { return -ENOTSUP; }
const char* platform_name() { return "win32"; }

}  // namespace st
