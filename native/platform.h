// Platform aliases for socket options, resolved once here so the rest of the core never branches
// on an OS name. Each ST_HAS_* says whether the option exists on this platform at all.
#pragma once
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

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

// TCP_USER_TIMEOUT exists on Linux (2.6.37+); Apple has none (TCP_RXT_CONNDROPTIME is a
// different, connect-time knob), so it is reported unsupported there.

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
#if defined(TCP_USER_TIMEOUT)
#define ST_AT_USER_TIMEOUT IPPROTO_TCP, TCP_USER_TIMEOUT
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
