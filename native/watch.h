// Kernel events on sockets libuv is not polling: a second epoll set, edge-triggered, per
// environment, that reports a peer's FIN (EPOLLRDHUP) or RST (EPOLLHUP, EPOLLERR) on a socket the
// application paused, so the guard need not ask TCP_INFO of every paused connection on every scan.
// Adding a socket registers its open file with the set, under a key of the caller's; the kernel
// drops the registration when the socket's last fd is closed, so nothing here stores, dups or
// closes a socket fd. Every function returns 0 (or a count) or -errno.
#pragma once
#include <stdint.h>

namespace st {

// Whether this platform has the set (Linux's epoll).
bool has_watch();
// A new set: its fd (owned by the binding, closed by watch_close), or -errno.
int watch_open();
void watch_close(int set);
// Reports the peer's FIN or RST on `fd` from now on (and at once, if it has come already), under
// `key`; a socket already in the set takes the new key.
int watch_add(int set, int fd, uint64_t key);
// The keys of up to `max` sockets that had such an event since the last call, without waiting:
// the count, or -errno.
int watch_drain(int set, uint64_t* keys, int max);

}  // namespace st
