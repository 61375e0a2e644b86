// socktune native core: plain C++ over a socket fd. Knows nothing of JavaScript or of policies.
// Every function returns 0 or -errno; it never stores, dups or closes the fd it is given (the one
// fd it closes is one create_socket made that could not be handed over).
#pragma once
#include <stdint.h>
#include "tables.h"

namespace st {

// Option ids shared with JavaScript (exported by the binding, never written as numbers in TS):
// OPT_KEEPALIVE, OPT_KEEPIDLE, ... in the order of ST_OPTIONS (tables.h), with their units there.
enum Option : int32_t {
#define ST_X(id, name) OPT_##id,
  ST_OPTIONS(ST_X)
#undef ST_X
      OPT_COUNT
};

struct OptionInfo {
  const char* name;  // the kernel's name for the option, as users search for it
  int level;         // -1 when the platform has no such option
  int optname;
};

// The option table for this platform (platform aliases already resolved).
const OptionInfo& option_info(int32_t id);

// Sets one option. Linger: value < 0 turns it off, 0 turns on a zero-timeout linger.
int set_option(int fd, int32_t id, int32_t value);
// Reads one option in the same units set_option takes.
int get_option(int fd, int32_t id, int32_t* value);

// Applies n options in order and stops at the first the kernel refuses, leaving the ones before it
// set: no snapshot is read and nothing is rolled back (a refusal after validation means a closing
// socket or a security policy such as seccomp or a cgroup BPF hook, where restoring earlier values
// helps nobody). Returns 0 or the refusal's -errno; *applied is the count set before it.
int apply_options(int fd, const int32_t* ids, const int32_t* values, int n, int* applied);

// What a policy does before applying its options (design rule 9: never lengthen a dead-peer budget
// someone set shorter). Drops from ids/values, in place and in order, the keepalive options
// (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) when the socket already has SO_KEEPALIVE
// on with a budget (idle + interval x count) shorter than the one they would leave — and then
// lowers TCP_USER_TIMEOUT to that budget, since Linux's keepalive waits out a user timeout before
// dropping an idle connection — and, with `user_timeout_too`, TCP_USER_TIMEOUT when the socket's is
// non-zero and no longer. Up to five getsockopt calls. Returns 0 or -errno; *n becomes the count
// left, *kept a bit mask (1 << id) of the options dropped.
int keep_shorter(int fd, int32_t* ids, int32_t* values, int* n, int32_t* kept, bool user_timeout_too);

// What create_socket was doing when it failed.
enum CreateStep : int { STEP_SOCKET = 0, STEP_OPTION = 1, STEP_BIND = 2 };

// The stages before Node: a new TCP socket of IP version `ip` (4 or 6), non-blocking and
// close-on-exec, with IPV6_V6ONLY set first when v6only >= 0 (an IPv6 socket), then n options in
// order (as apply_options), then, when bind_port >= 0, bound to `bind_addr` (4 or 16 bytes in
// network order; `scope` for a link-local IPv6 address) and that port. On success *fd_out is the
// new fd, the caller's from then on: the core keeps nothing. On failure it returns -errno, nothing
// is left open, *step says what failed and *applied counts the options set before.
int create_socket(int ip, int v6only, const int32_t* ids, const int32_t* values, int n, const uint8_t* bind_addr, int bind_port, uint32_t scope, int* applied,
                  int* step, int* fd_out);

// Closes an fd create_socket made that could not be handed over. 0 or -errno.
int close_socket(int fd);

// 0 when fd is a TCP socket of the IPv4 or IPv6 family; -ENOTSOCK, -EPROTOTYPE, -EAFNOSUPPORT else.
int check_tcp(int fd);

// TCP_INFO, flattened into doubles (all fields fit in 53 bits): TI_STATE, TI_CA_STATE, ... in the
// order of ST_TCP_INFO_FIELDS (tables.h). Returns the count written.
enum InfoField : int {
#define ST_X(id, name, member) TI_##id,
  ST_TCP_INFO_FIELDS(ST_X)
#undef ST_X
      TI_COUNT
};
int tcp_info(int fd, double* out /* TI_COUNT */);

// Send queue (bytes not yet acknowledged, of which not yet sent) and receive queue.
int queues(int fd, int32_t* outq, int32_t* notsent, int32_t* inq);

// The reset path's fast step: when the send queue is empty (every byte written is acknowledged),
// turns on a zero-timeout SO_LINGER so the next close() sends RST. Writes the send-queue bytes
// (SIOCOUTQ) to *outq either way; leaves the socket untouched when they are not 0.
// *peer_closed is set to 1, and nothing is changed, when the peer's FIN has arrived (CLOSE_WAIT): a
// connection the peer closed first ends with FIN (passively, keeping no TIME_WAIT) and a reset
// would only turn the peer's clean end into an error.
int linger_if_drained(int fd, int32_t* outq, int32_t* peer_closed);

// The kernel state number of the connection (tcpi_state), read without the rest of TCP_INFO.
int tcp_state(int fd, int32_t* state);

// SO_COOKIE: the kernel's stable identity for this socket, never reused while the system runs.
int cookie(int fd, uint64_t* value);

// SO_ERROR: the socket's pending error as a positive errno (0 for none). Reading it clears it, so
// only a caller about to close the socket itself may take it.
int socket_error(int fd, int32_t* err);

// Where a runtime hands out no descriptor for its sockets (Node's TCP handles on Windows answer -1
// for their fd), the socket is found by what the runtime's own handle reports of it: the one socket
// of this process that is a stream socket with exactly these addresses (a TCP connection is unique
// by its four; no `remote` asks for a listening socket on the local address). Addresses are
// numeric (inet_pton). *fd, when not -1 on entry, is tried first (the socket found last time), and
// is the socket found on return. Returns 0, -EINVAL for an address that does not parse, -ENOENT
// when no socket of this process matches (-ENOTSUP where descriptors are handed out).
struct SocketQuery {
  const char* local;
  int local_port;
  const char* remote;  // nullptr: a listening socket
  int remote_port;
};
int locate_socket(const SocketQuery& q, int* fd);

// Kernel TCP state numbers (tcpi_state), in the order of ST_TCP_STATES (tables.h).
enum TcpStateNumber : int32_t {
#define ST_X(id, name) TCPS_##id,
  ST_TCP_STATES(ST_X)
#undef ST_X
      TCPS_COUNT
};

// Compile-time facts the binding exports for `socktune doctor` and errors.
const char* platform_name();
bool has_tcp_info();
bool has_queues();
bool has_cookie();

}  // namespace st
