// The watch set on Linux: epoll, edge-triggered, EPOLLRDHUP (the peer's FIN) and the EPOLLHUP and
// EPOLLERR every registration reports (the peer's RST, or the kernel's timeout). EPOLLIN is not
// asked for: data arriving on a paused socket is not an event here.
#include "watch.h"
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

namespace st {

bool has_watch() { return true; }

int watch_open() {
  int set = epoll_create1(EPOLL_CLOEXEC);
  return set < 0 ? -errno : set;
}

void watch_close(int set) {
  if (set >= 0) close(set);
}

int watch_add(int set, int fd, uint64_t key) {
  struct epoll_event ev = {};
  ev.events = EPOLLRDHUP | EPOLLET;
  ev.data.u64 = key;
  if (epoll_ctl(set, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
  if (errno != EEXIST) return -errno;
  return epoll_ctl(set, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : -errno;
}

int watch_drain(int set, uint64_t* keys, int max) {
  struct epoll_event events[64];
  if (max > 64) max = 64;
  int n;
  do {
    n = epoll_wait(set, events, max, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; i++) keys[i] = events[i].data.u64;
  return n;
}

}  // namespace st
