// The tables the core shares with JavaScript, each defined once, here, as an X-macro list. The
// core's enums and name arrays are generated from them, the binding exports them
// (`constants.options`, `.tcpStates`, `.infoFields`, `.layout`), and src/tables.ts holds the
// TypeScript side, which test/00-tables.test.ts checks against what the addon exports.
#pragma once

// Socket options: X(ID, kernel name). The id is the position (OPT_<ID>), the name is the one users
// search for. Units: SO_KEEPALIVE, TCP_NODELAY, SO_REUSEADDR, SO_REUSEPORT, IP_BIND_ADDRESS_NO_PORT
// 0/1; TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_DEFER_ACCEPT seconds; TCP_KEEPCNT probes;
// TCP_USER_TIMEOUT milliseconds; SO_LINGER -1 off, 0 on with a zero timeout (close sends RST);
// SO_RCVBUF, SO_SNDBUF bytes (the kernel holds twice what is set); IP_TOS the byte (IPV6_TCLASS on an
// IPv6 socket); IP_LOCAL_PORT_RANGE (max << 16) | min as a 32-bit pattern, 0 for the system range.
// The last five matter at a stage: before bind (IP_BIND_ADDRESS_NO_PORT), before connect
// (IP_LOCAL_PORT_RANGE, the buffers' window scale), on a listener (TCP_DEFER_ACCEPT).
#define ST_OPTIONS(X)                                \
  X(KEEPALIVE, "SO_KEEPALIVE")                       \
  X(KEEPIDLE, "TCP_KEEPIDLE")                        \
  X(KEEPINTVL, "TCP_KEEPINTVL")                      \
  X(KEEPCNT, "TCP_KEEPCNT")                          \
  X(USER_TIMEOUT, "TCP_USER_TIMEOUT")                \
  X(LINGER, "SO_LINGER")                             \
  X(NODELAY, "TCP_NODELAY")                          \
  X(REUSEADDR, "SO_REUSEADDR")                       \
  X(REUSEPORT, "SO_REUSEPORT")                       \
  X(RCVBUF, "SO_RCVBUF")                             \
  X(SNDBUF, "SO_SNDBUF")                             \
  X(TOS, "IP_TOS")                                   \
  X(BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT") \
  X(LOCAL_PORT_RANGE, "IP_LOCAL_PORT_RANGE")         \
  X(DEFER_ACCEPT, "TCP_DEFER_ACCEPT")

// Room for options in the scratch slots (ids, values, read-back): more than ST_OPTIONS has, so an
// option added later moves no other slot.
#define ST_OPTION_SLOTS 16

// Kernel TCP states, by tcpi_state (include/net/tcp_states.h: ESTABLISHED = 1 ...), as ss and /proc
// spell them: X(ID, name). glibc's <netinet/tcp.h> copy lacks NEW_SYN_RECV and clashes with
// <linux/tcp.h>, so the numbering is kept here.
#define ST_TCP_STATES(X)        \
  X(UNKNOWN, "UNKNOWN")         \
  X(ESTABLISHED, "ESTABLISHED") \
  X(SYN_SENT, "SYN_SENT")       \
  X(SYN_RECV, "SYN_RECV")       \
  X(FIN_WAIT1, "FIN_WAIT1")     \
  X(FIN_WAIT2, "FIN_WAIT2")     \
  X(TIME_WAIT, "TIME_WAIT")     \
  X(CLOSE, "CLOSE")             \
  X(CLOSE_WAIT, "CLOSE_WAIT")   \
  X(LAST_ACK, "LAST_ACK")       \
  X(LISTEN, "LISTEN")           \
  X(CLOSING, "CLOSING")         \
  X(NEW_SYN_RECV, "NEW_SYN_RECV")

// TCP_INFO, flattened into doubles (every field fits in 53 bits): X(ID, JavaScript name, member of
// Linux's struct tcp_info). Times the kernel counts in microseconds (rto, ato, rtt, rttvar, rcvRtt,
// minRtt) are converted to milliseconds in JavaScript.
#define ST_TCP_INFO_FIELDS(X)                                \
  X(STATE, "state", tcpi_state)                              \
  X(CA_STATE, "caState", tcpi_ca_state)                      \
  X(RETRANSMITS, "retransmits", tcpi_retransmits)            \
  X(PROBES, "probes", tcpi_probes)                           \
  X(BACKOFF, "backoff", tcpi_backoff)                        \
  X(OPTIONS, "options", tcpi_options)                        \
  X(RTO, "rto", tcpi_rto)                                    \
  X(ATO, "ato", tcpi_ato)                                    \
  X(SND_MSS, "sndMss", tcpi_snd_mss)                         \
  X(RCV_MSS, "rcvMss", tcpi_rcv_mss)                         \
  X(UNACKED, "unacked", tcpi_unacked)                        \
  X(SACKED, "sacked", tcpi_sacked)                           \
  X(LOST, "lost", tcpi_lost)                                 \
  X(RETRANS, "retrans", tcpi_retrans)                        \
  X(LAST_DATA_SENT, "lastDataSent", tcpi_last_data_sent)     \
  X(LAST_DATA_RECV, "lastDataReceived", tcpi_last_data_recv) \
  X(LAST_ACK_RECV, "lastAckReceived", tcpi_last_ack_recv)    \
  X(PMTU, "pmtu", tcpi_pmtu)                                 \
  X(RCV_SSTHRESH, "rcvSsthresh", tcpi_rcv_ssthresh)          \
  X(RTT, "rtt", tcpi_rtt)                                    \
  X(RTTVAR, "rttvar", tcpi_rttvar)                           \
  X(SND_SSTHRESH, "sndSsthresh", tcpi_snd_ssthresh)          \
  X(SND_CWND, "sndCwnd", tcpi_snd_cwnd)                      \
  X(ADVMSS, "advmss", tcpi_advmss)                           \
  X(REORDERING, "reordering", tcpi_reordering)               \
  X(RCV_RTT, "rcvRtt", tcpi_rcv_rtt)                         \
  X(RCV_SPACE, "rcvSpace", tcpi_rcv_space)                   \
  X(TOTAL_RETRANS, "totalRetrans", tcpi_total_retrans)       \
  X(PACING_RATE, "pacingRate", tcpi_pacing_rate)             \
  X(BYTES_ACKED, "bytesAcked", tcpi_bytes_acked)             \
  X(BYTES_RECEIVED, "bytesReceived", tcpi_bytes_received)    \
  X(SEGS_OUT, "segsOut", tcpi_segs_out)                      \
  X(SEGS_IN, "segsIn", tcpi_segs_in)                         \
  X(NOTSENT_BYTES, "notsentBytes", tcpi_notsent_bytes)       \
  X(MIN_RTT, "minRtt", tcpi_min_rtt)                         \
  X(DELIVERY_RATE, "deliveryRate", tcpi_delivery_rate)       \
  X(BYTES_SENT, "bytesSent", tcpi_bytes_sent)                \
  X(BYTES_RETRANS, "bytesRetrans", tcpi_bytes_retrans)       \
  X(SND_WND, "sndWnd", tcpi_snd_wnd)

// The scratch buffer's 32-bit slots: X(ID, JavaScript name, first slot). Arguments and results of
// every call travel through it (native/binding.cc); JavaScript reads the offsets from
// `constants.layout`, never writes them as numbers.
#define ST_SLOTS(X)                                                                                           \
  X(COUNT, "count", 0)                    /* options to apply */                                              \
  X(IDS, "ids", 1)                        /* ST_OPTION_SLOTS option ids */                                    \
  X(VALUES, "values", 17)                 /* ST_OPTION_SLOTS values */                                        \
  X(KEEP_SHORTER, "keepShorter", 33)      /* 1: apply() keeps a shorter keepalive; 3: and user timeout */     \
  X(FAILED_OPTION, "failedOption", 34)    /* option id (or -1) that a failure concerns */                     \
  X(FAILED_SYSCALL, "failedSyscall", 35)  /* the Syscall of a failure */                                      \
  X(APPLIED, "applied", 36)               /* options apply() set before the one the kernel refused */         \
  X(KEPT, "kept", 37)                     /* bit mask (1 << id) of options left to a shorter budget */        \
  X(READ, "read", 38)                     /* ST_OPTION_SLOTS values read back */                              \
  X(QUEUES, "queues", 54)                 /* outq, notsent, inq; lingerIfDrained: outq, peer closed */        \
  X(STATE, "state", 57)                   /* state(): the kernel state number */                              \
  X(READ_MISSING, "readMissing", 58)      /* read(): bit mask (1 << id) of options this kernel lacks */       \
  X(VERIFY, "verify", 59)                 /* non-zero: check the fd is TCP over IPv4/IPv6 first */            \
  X(FD, "fd", 60)                         /* the fd a socket function works on */                             \
  X(RESULT, "result", 61)                 /* 0, a negative errno, or a Status */                              \
  X(DIAG_STATES, "diagStates", 62)        /* sock_diag filter: state bit mask */                              \
  X(DIAG_FAMILY, "diagFamily", 63)        /* 0, AF_INET, AF_INET6 */                                          \
  X(DIAG_SPORT, "diagSport", 64)          /* -1 or a local port */                                            \
  X(DIAG_DPORT, "diagDport", 65)          /* -1 or a remote port */                                           \
  X(DIAG_ANYPORT, "diagAnyPort", 66)      /* -1 or a port on either side */                                   \
  X(DIAG_NETLINK, "diagNetlink", 67)      /* -1, or a sock_diag socket of another namespace */                \
  X(DIAG_SRC_FAMILY, "diagSrcFamily", 68) /* 0 or the family of the local address below */                    \
  X(DIAG_DST_FAMILY, "diagDstFamily", 69) /* 0 or the family of the remote address below */                   \
  X(DIAG_SRC, "diagSrc", 70)              /* 16 bytes: local address (network order) */                       \
  X(DIAG_DST, "diagDst", 74)              /* 16 bytes: remote address */                                      \
  X(DIAG_COUNTS, "diagCounts", 78)        /* 16 counts by kernel state number */                              \
  X(NEW_FAMILY, "newFamily", 94)          /* createSocket(): 4 or 6 */                                        \
  X(BIND_PORT, "bindPort", 95)            /* createSocket(): -1 (no bind) or the port to bind */              \
  X(BIND_V6ONLY, "bindV6Only", 96)        /* createSocket(): IPV6_V6ONLY before bind: -1 untouched, 0, 1 */   \
  X(BIND_SCOPE, "bindScope", 97)          /* createSocket(): the IPv6 scope id of the address below */        \
  X(BIND_ADDR, "bindAddr", 98)            /* createSocket(): 16 bytes, the address to bind (network order) */ \
  X(NEW_FD, "newFd", 102)                 /* createSocket(): the fd made, the caller's from then on */
