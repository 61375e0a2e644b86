// Windows: a Node socket handle exposes no usable fd, so the whole core reports unsupported.
// The JavaScript layer documents the fallback (keepalive through Node's own setKeepAlive).
// Not built or run in socktune's CI (Linux only); kept compiling by reading.
#include <errno.h>
#include "core.h"

#ifndef ENOTSUP
#define ENOTSUP 129
#endif

namespace st {

namespace {
const OptionInfo kNone = {"", -1, -1};
}

const OptionInfo& option_info(int32_t) { return kNone; }
int set_option(int, int32_t, int32_t) { return -ENOTSUP; }
int get_option(int, int32_t, int32_t*) { return -ENOTSUP; }
int apply_options(int, const int32_t*, const int32_t*, int, int* failed) {
  *failed = 0;
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
int linger_if_drained(int, int32_t*) { return -ENOTSUP; }
int cookie(int, uint64_t*) { return -ENOTSUP; }
int socket_error(int, int32_t*) { return -ENOTSUP; }

}  // namespace st
