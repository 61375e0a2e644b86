// Linux-only views of a TCP socket: TCP_INFO, queue sizes, SO_COOKIE.
// <linux/tcp.h> is used for the full struct tcp_info (glibc's copy stops at tcpi_total_retrans).
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include "core.h"

namespace st {

const char* platform_name() { return "linux"; }
// Node and Bun hand out the fd of every socket.
int locate_socket(const SocketQuery&, int*) { return -ENOTSUP; }
bool has_tcp_info() { return true; }
bool has_queues() { return true; }
bool has_cookie() {
#ifdef SO_COOKIE
  return true;
#else
  return false;
#endif
}

int tcp_info(int fd, double* out) {
  struct tcp_info ti;
  memset(&ti, 0, sizeof ti);
  socklen_t len = sizeof ti;
  // Older kernels fill a prefix of the struct; the rest stays 0.
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -errno;
#define ST_X(id, name, member) out[TI_##id] = static_cast<double>(ti.member);
  ST_TCP_INFO_FIELDS(ST_X)
#undef ST_X
  return TI_COUNT;
}

int queues(int fd, int32_t* outq, int32_t* notsent, int32_t* inq) {
  int v = 0;
  if (ioctl(fd, SIOCOUTQ, &v) != 0) return -errno;
  *outq = v;
  if (ioctl(fd, SIOCOUTQNSD, &v) != 0) return -errno;
  *notsent = v;
  if (ioctl(fd, SIOCINQ, &v) != 0) return -errno;
  *inq = v;
  return 0;
}

int tcp_state(int fd, int32_t* state) {
  // TCP_INFO copies as much of the struct as asked for: its first byte is the state. The buffer is
  // larger than the one byte asked for: qemu-user (the arm64 runs) copies 4 bytes of TCP_INFO
  // whatever the length.
  uint8_t buf[8] = {0};
  socklen_t len = 1;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &len) != 0) return -errno;
  *state = buf[0];
  return 0;
}

int linger_if_drained(int fd, int32_t* outq, int32_t* peer_closed) {
  *peer_closed = 0;
  int v = 0;
  if (ioctl(fd, SIOCOUTQ, &v) != 0) return -errno;
  *outq = v;
  if (v != 0) return 0;
  int32_t state = 0;
  int rc = tcp_state(fd, &state);
  if (rc != 0) return rc;
  if (state == TCPS_CLOSE_WAIT) {
    *peer_closed = 1;
    return 0;
  }
  return set_option(fd, OPT_LINGER, 0);
}

int cookie(int fd, uint64_t* value) {
#ifdef SO_COOKIE
  uint64_t c = 0;
  socklen_t len = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0) return -errno;
  *value = c;
  return 0;
#else
  (void)fd;
  (void)value;
  return -ENOPROTOOPT;
#endif
}

}  // namespace st
