// Platform aliases for socket options, resolved once here so the rest of the core never branches
// on an OS name. Each ST_HAS_* says whether the option exists on this platform at all.
#pragma once
#if defined(_WIN32)
// Windows (10 1709+): the options it has, at their Winsock levels; ws2ipdef.h of the Windows SDK
// numbers the TCP ones, which mingw-w64's headers lack. TCP_MAXRT (seconds) is the user timeout:
// how long a connection retransmits before it is dropped. No SO_REUSEPORT, and SO_REUSEADDR
// means port stealing there: both are reported unsupported by name.
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0A00
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#ifndef TCP_KEEPALIVE
#define TCP_KEEPALIVE 3
#endif
#ifndef TCP_MAXRT
#define TCP_MAXRT 5
#endif
#ifndef TCP_KEEPCNT
#define TCP_KEEPCNT 16
#endif
#ifndef TCP_KEEPINTVL
#define TCP_KEEPINTVL 17
#endif
#define ST_AT_KEEPALIVE SOL_SOCKET, SO_KEEPALIVE
#define ST_AT_KEEPIDLE IPPROTO_TCP, TCP_KEEPALIVE
#define ST_AT_KEEPINTVL IPPROTO_TCP, TCP_KEEPINTVL
#define ST_AT_KEEPCNT IPPROTO_TCP, TCP_KEEPCNT
#define ST_AT_USER_TIMEOUT IPPROTO_TCP, TCP_MAXRT
#define ST_AT_LINGER SOL_SOCKET, SO_LINGER
#define ST_AT_NODELAY IPPROTO_TCP, TCP_NODELAY
#define ST_AT_REUSEADDR -1, -1
#define ST_AT_REUSEPORT -1, -1
#define ST_AT_RCVBUF SOL_SOCKET, SO_RCVBUF
#define ST_AT_SNDBUF SOL_SOCKET, SO_SNDBUF
// Windows takes IP_TOS and, by default, ignores it (Microsoft: "do not use"; the DSCP byte is the
// QoS API's): left out, so it is refused by name rather than accepted and dropped. The stages'
// options are Linux's; the stages themselves make no socket here (core_win.cc, create_socket).
#define ST_AT_TOS -1, -1
#define ST_AT_BIND_ADDRESS_NO_PORT -1, -1
#define ST_AT_LOCAL_PORT_RANGE -1, -1
#define ST_AT_DEFER_ACCEPT -1, -1
// TCP_MAXRT counts seconds; socktune's user timeout milliseconds (rounded up, never down).
#define ST_USER_TIMEOUT_UNIT 1000
// A socket is a SOCKET; option values travel as char pointers.
typedef SOCKET st_socket;
#define ST_SOCKET(fd) static_cast<SOCKET>(static_cast<uintptr_t>(fd))
#define ST_OPTVAL(p) (char*)(p)  // setsockopt takes const char*, getsockopt char*
typedef int st_socklen;
// The last socket error as a positive errno of libuv's numbering (what Node's error map reads).
namespace st {
int socket_errno();
}
#define ST_ERRNO() (st::socket_errno())
#define ST_ERRNO_NOPROTOOPT 4035  // UV_ENOPROTOOPT on Windows
// Which options this Windows has is known only by asking it (core_posix.cc's probe_options).
#define ST_PROBE_OPTIONS 1
#define ST_INVALID_SOCKET INVALID_SOCKET
#define ST_CLOSE_SOCKET(s) closesocket(s)
#else
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
typedef int st_socket;
#define ST_SOCKET(fd) (fd)
#define ST_OPTVAL(p) (p)
typedef socklen_t st_socklen;
#define ST_ERRNO() errno
// The stages before Node (create_socket, close_socket) make the socket here (core_posix.cc).
#define ST_CREATES_SOCKETS 1

// Idle time before the first keepalive probe: Linux and the BSDs call it TCP_KEEPIDLE, Apple
// platforms TCP_KEEPALIVE (also in seconds).
#if defined(TCP_KEEPIDLE)
#define ST_TCP_KEEPIDLE TCP_KEEPIDLE
#elif defined(TCP_KEEPALIVE)
#define ST_TCP_KEEPIDLE TCP_KEEPALIVE
#endif

// Apple's SO_LINGER counts in clock ticks; SO_LINGER_SEC is the one in seconds. Only a zero
// timeout is ever set, but reads must use the seconds variant to be comparable.
#if defined(SO_LINGER_SEC)
#define ST_SO_LINGER SO_LINGER_SEC
#else
#define ST_SO_LINGER SO_LINGER
#endif

// The user timeout: how long sent data may stay unacknowledged before the connection is dropped.
// Linux (2.6.37+) has TCP_USER_TIMEOUT in milliseconds; Apple has TCP_RXT_CONNDROPTIME, the time
// after which retransmissions stop and the connection is dropped, in seconds (socktune's
// milliseconds are rounded up).
#if defined(TCP_USER_TIMEOUT)
#define ST_TCP_USER_TIMEOUT TCP_USER_TIMEOUT
#define ST_USER_TIMEOUT_UNIT 1
#elif defined(TCP_RXT_CONNDROPTIME)
#define ST_TCP_USER_TIMEOUT TCP_RXT_CONNDROPTIME
#define ST_USER_TIMEOUT_UNIT 1000
#else
#define ST_USER_TIMEOUT_UNIT 1
#endif

// Where each option of ST_OPTIONS (tables.h) lives on this platform: ST_AT_<ID> is `level, optname`,
// or `-1, -1` where the platform has no such option (it is then reported unsupported by name).
#define ST_AT_KEEPALIVE SOL_SOCKET, SO_KEEPALIVE
#if defined(ST_TCP_KEEPIDLE)
#define ST_AT_KEEPIDLE IPPROTO_TCP, ST_TCP_KEEPIDLE
#else
#define ST_AT_KEEPIDLE -1, -1
#endif
#if defined(TCP_KEEPINTVL)
#define ST_AT_KEEPINTVL IPPROTO_TCP, TCP_KEEPINTVL
#else
#define ST_AT_KEEPINTVL -1, -1
#endif
#if defined(TCP_KEEPCNT)
#define ST_AT_KEEPCNT IPPROTO_TCP, TCP_KEEPCNT
#else
#define ST_AT_KEEPCNT -1, -1
#endif
#if defined(ST_TCP_USER_TIMEOUT)
#define ST_AT_USER_TIMEOUT IPPROTO_TCP, ST_TCP_USER_TIMEOUT
#else
#define ST_AT_USER_TIMEOUT -1, -1
#endif
#define ST_AT_LINGER SOL_SOCKET, ST_SO_LINGER
#define ST_AT_NODELAY IPPROTO_TCP, TCP_NODELAY
#define ST_AT_REUSEADDR SOL_SOCKET, SO_REUSEADDR
#if defined(SO_REUSEPORT)
#define ST_AT_REUSEPORT SOL_SOCKET, SO_REUSEPORT
#else
#define ST_AT_REUSEPORT -1, -1
#endif
#define ST_AT_RCVBUF SOL_SOCKET, SO_RCVBUF
#define ST_AT_SNDBUF SOL_SOCKET, SO_SNDBUF
// IP_TOS; on an IPv6 socket the core sets IPV6_TCLASS instead (core_posix.cc), the same byte.
#define ST_AT_TOS IPPROTO_IP, IP_TOS

// Linux 4.2+: bind() an address without reserving a port; connect() picks the port per destination.
#if defined(IP_BIND_ADDRESS_NO_PORT)
#define ST_AT_BIND_ADDRESS_NO_PORT IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT
#elif defined(__linux__)
#define ST_AT_BIND_ADDRESS_NO_PORT IPPROTO_IP, 24
#else
#define ST_AT_BIND_ADDRESS_NO_PORT -1, -1
#endif

// Linux 6.3+: a per-socket slice of ip_local_port_range. glibc and musl headers do not define it
// yet; the kernel's uapi number is used. Older kernels answer ENOPROTOOPT.
#if defined(IP_LOCAL_PORT_RANGE)
#define ST_AT_LOCAL_PORT_RANGE IPPROTO_IP, IP_LOCAL_PORT_RANGE
#elif defined(__linux__)
#define ST_AT_LOCAL_PORT_RANGE IPPROTO_IP, 51
#else
#define ST_AT_LOCAL_PORT_RANGE -1, -1
#endif

// Linux: wake the listener only when data has arrived (BSDs have accept filters instead).
#if defined(TCP_DEFER_ACCEPT)
#define ST_AT_DEFER_ACCEPT IPPROTO_TCP, TCP_DEFER_ACCEPT
#else
#define ST_AT_DEFER_ACCEPT -1, -1
#endif
#endif  // _WIN32
