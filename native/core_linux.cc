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
bool has_tcp_info() { return true; }
bool has_queues() { return true; }
bool has_cookie() {
#ifdef SO_COOKIE
  return true;
#else
  return false;
#endif
}

// The kernel's own numbering (include/net/tcp_states.h); glibc's <netinet/tcp.h> copy lacks
// NEW_SYN_RECV and clashes with <linux/tcp.h>, so the table is kept here, next to TCP_INFO.
const char* const* tcp_state_names(int* n) {
  static const char* const kStates[] = {
      "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
      "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"};
  *n = sizeof kStates / sizeof kStates[0];
  return kStates;
}

int tcp_info(int fd, double* out) {
  struct tcp_info ti;
  memset(&ti, 0, sizeof ti);
  socklen_t len = sizeof ti;
  // Older kernels fill a prefix of the struct; the rest stays 0.
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -errno;
  out[TI_STATE] = ti.tcpi_state;
  out[TI_CA_STATE] = ti.tcpi_ca_state;
  out[TI_RETRANSMITS] = ti.tcpi_retransmits;
  out[TI_PROBES] = ti.tcpi_probes;
  out[TI_BACKOFF] = ti.tcpi_backoff;
  out[TI_OPTIONS] = ti.tcpi_options;
  out[TI_RTO] = ti.tcpi_rto;
  out[TI_ATO] = ti.tcpi_ato;
  out[TI_SND_MSS] = ti.tcpi_snd_mss;
  out[TI_RCV_MSS] = ti.tcpi_rcv_mss;
  out[TI_UNACKED] = ti.tcpi_unacked;
  out[TI_SACKED] = ti.tcpi_sacked;
  out[TI_LOST] = ti.tcpi_lost;
  out[TI_RETRANS] = ti.tcpi_retrans;
  out[TI_LAST_DATA_SENT] = ti.tcpi_last_data_sent;
  out[TI_LAST_DATA_RECV] = ti.tcpi_last_data_recv;
  out[TI_LAST_ACK_RECV] = ti.tcpi_last_ack_recv;
  out[TI_PMTU] = ti.tcpi_pmtu;
  out[TI_RCV_SSTHRESH] = ti.tcpi_rcv_ssthresh;
  out[TI_RTT] = ti.tcpi_rtt;
  out[TI_RTTVAR] = ti.tcpi_rttvar;
  out[TI_SND_SSTHRESH] = ti.tcpi_snd_ssthresh;
  out[TI_SND_CWND] = ti.tcpi_snd_cwnd;
  out[TI_ADVMSS] = ti.tcpi_advmss;
  out[TI_REORDERING] = ti.tcpi_reordering;
  out[TI_RCV_RTT] = ti.tcpi_rcv_rtt;
  out[TI_RCV_SPACE] = ti.tcpi_rcv_space;
  out[TI_TOTAL_RETRANS] = ti.tcpi_total_retrans;
  out[TI_PACING_RATE] = static_cast<double>(ti.tcpi_pacing_rate);
  out[TI_BYTES_ACKED] = static_cast<double>(ti.tcpi_bytes_acked);
  out[TI_BYTES_RECEIVED] = static_cast<double>(ti.tcpi_bytes_received);
  out[TI_SEGS_OUT] = ti.tcpi_segs_out;
  out[TI_SEGS_IN] = ti.tcpi_segs_in;
  out[TI_NOTSENT_BYTES] = ti.tcpi_notsent_bytes;
  out[TI_MIN_RTT] = ti.tcpi_min_rtt;
  out[TI_DELIVERY_RATE] = static_cast<double>(ti.tcpi_delivery_rate);
  out[TI_BYTES_SENT] = static_cast<double>(ti.tcpi_bytes_sent);
  out[TI_BYTES_RETRANS] = static_cast<double>(ti.tcpi_bytes_retrans);
  out[TI_SND_WND] = ti.tcpi_snd_wnd;
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

// TCP_CLOSE_WAIT in include/net/tcp_states.h (the table above); <netinet/tcp.h> cannot be included.
constexpr int32_t kCloseWait = 8;

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
  if (state == kCloseWait) {
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
