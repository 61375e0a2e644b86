// No watch set where there is no epoll (macOS, Windows): the guard asks the kernel per scan there.
#include "watch.h"
#include <errno.h>

#ifndef ENOTSUP
#define ENOTSUP 129  // mingw-w64's <errno.h> has none (as views_none.cc)
#endif

namespace st {

bool has_watch() { return false; }
int watch_open() { return -ENOTSUP; }
void watch_close(int) {}
int watch_add(int, int, uint64_t) { return -ENOTSUP; }
int watch_drain(int, uint64_t*, int) { return -ENOTSUP; }

}  // namespace st
