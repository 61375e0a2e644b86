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
