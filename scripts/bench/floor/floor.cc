// Benchmark floor: the bare setsockopt syscalls socktune makes, looped in C and timed with
// clock_gettime, so scripts/bench.mjs can tell the cost of the kernel from the cost of the API;
// and a plain netlink sock_diag dump that counts TCP sockets by state (scripts/bench/diag.mjs).
// Bench-only; never part of the shipped package.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#ifdef __linux__
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#endif

namespace {

// The clock the loops are timed with: CLOCK_MONOTONIC (wall time) by default, or the calling
// thread's CPU time (useCpuClock(true)), which leaves out the time other processes held the CPU.
clockid_t g_clock = CLOCK_MONOTONIC;

int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t now_ns() { return clock_ns(g_clock); }

napi_value fail(napi_env env, const char* what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "floor: %s failed: %s", what, strerror(err));
  napi_throw_error(env, nullptr, msg);
  return nullptr;
}

// Reads the first `count` arguments as int32 (a bool argument reads as 0 or 1).
bool int_args(napi_env env, napi_callback_info info, int32_t* out, size_t count) {
  napi_value argv[16];
  size_t argc = 16;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < count) {
    napi_throw_type_error(env, nullptr, "floor: missing arguments");
    return false;
  }
  for (size_t i = 0; i < count; i++) {
    bool b;
    if (napi_get_value_int32(env, argv[i], &out[i]) == napi_ok) continue;
    if (napi_get_value_bool(env, argv[i], &b) == napi_ok) {
      out[i] = b;
      continue;
    }
    napi_throw_type_error(env, nullptr, "floor: arguments must be numbers or booleans");
    return false;
  }
  // The iteration count is always the second argument.
  if (count > 1 && out[1] <= 0) {
    napi_throw_range_error(env, nullptr, "floor: iterations must be > 0");
    return false;
  }
  return true;
}

napi_value ns_per_op(napi_env env, int64_t elapsed, int32_t iterations) {
  napi_value out;
  napi_create_double(env, static_cast<double>(elapsed) / iterations, &out);
  return out;
}

int set_int(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

// noDelay(fd, iterations): TCP_NODELAY alternating 1/0, as the JS benchmark alternates it.
napi_value NoDelay(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (!int_args(env, info, a, 2)) return nullptr;
  const int fd = a[0];
  const int32_t n = a[1];
  const int64_t t0 = now_ns();
  for (int32_t i = 0; i < n; i++) {
    if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, (i & 1) == 0) != 0) return fail(env, "setsockopt(TCP_NODELAY)", errno);
  }
  return ns_per_op(env, now_ns() - t0, n);
}

// setNoDelay(fd, on): one untimed setsockopt(TCP_NODELAY), for JS loops that time one Node-API
// crossing per op: the least any addon called from JavaScript can cost per option.
napi_value SetNoDelay(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  int32_t fd = -1;
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, nullptr, "floor: setNoDelay(fd, on)");
    return nullptr;
  }
  if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, on) != 0) return fail(env, "setsockopt(TCP_NODELAY)", errno);
  return nullptr;
}

#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT) && defined(TCP_USER_TIMEOUT)
// The five sets of configure({ keepAlive: { idle, interval, count }, userTimeout }) in socktune's
// order (timings before SO_KEEPALIVE). 0 or errno.
int set_heartbeat(int fd, const int32_t* v) {
  static const int kTimings[4] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT};
  for (int k = 0; k < 4; k++) {
    if (set_int(fd, IPPROTO_TCP, kTimings[k], v[k]) != 0) return errno;
  }
  return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1) != 0 ? errno : 0;
}
#endif

// heartbeat(fd, iterations, idleA, intervalA, countA, userTimeoutA, ...B): the heartbeat's five
// setsockopt looped in C, alternating between values A and B.
napi_value Heartbeat(napi_env env, napi_callback_info info) {
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT) && defined(TCP_USER_TIMEOUT)
  int32_t a[10];
  if (!int_args(env, info, a, 10)) return nullptr;
  const int fd = a[0];
  const int32_t n = a[1];
  const int32_t* values[2] = {a + 2, a + 6};
  const int64_t t0 = now_ns();
  for (int32_t i = 0; i < n; i++) {
    int err = set_heartbeat(fd, values[i & 1]);
    if (err != 0) return fail(env, "setsockopt", err);
  }
  return ns_per_op(env, now_ns() - t0, n);
#else
  (void)info;
  napi_throw_error(env, nullptr, "floor: this platform lacks TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT/TCP_USER_TIMEOUT");
  return nullptr;
#endif
}

// setHeartbeat(fd, idle, interval, count, userTimeout): the same five setsockopt, untimed, once per
// call: what the heartbeat costs through one Node-API crossing with no work of socktune's.
napi_value SetHeartbeat(napi_env env, napi_callback_info info) {
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT) && defined(TCP_USER_TIMEOUT)
  napi_value argv[5];
  size_t argc = 5;
  int32_t a[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  for (size_t i = 0; i < 5; i++) {
    if (i >= argc || napi_get_value_int32(env, argv[i], &a[i]) != napi_ok) {
      napi_throw_type_error(env, nullptr, "floor: setHeartbeat(fd, idle, interval, count, userTimeout)");
      return nullptr;
    }
  }
  int err = set_heartbeat(a[0], a + 1);
  if (err != 0) return fail(env, "setsockopt", err);
  return nullptr;
#else
  (void)info;
  napi_throw_error(env, nullptr, "floor: this platform lacks TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT/TCP_USER_TIMEOUT");
  return nullptr;
#endif
}

#ifdef __linux__
// Sends one dump request on `nl` and adds 1 to counts[state] per socket of the answer. The kernel
// filters states itself. 0 or -errno; -EOPNOTSUPP-like errors arrive before any socket.
int dump_count(int nl, const void* req, size_t len, uint32_t* counts) {
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl, req, len, 0, reinterpret_cast<const struct sockaddr*>(&kernel), sizeof kernel) < 0) return -errno;

  // The kernel caps dump datagrams at SKB_WITH_OVERHEAD(32 KiB); a truncated one would drop sockets
  // from the count, so it is an error rather than an assumption.
  static char buf[64 * 1024];
  struct iovec iov = {buf, sizeof buf};
  for (;;) {
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = recvmsg(nl, &msg, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    if (msg.msg_flags & MSG_TRUNC) return -EMSGSIZE;
    size_t left = static_cast<size_t>(n);
    for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
        return e->error != 0 ? e->error : -EIO;
      }
      const struct inet_diag_msg* m = static_cast<const struct inet_diag_msg*>(NLMSG_DATA(h));
      counts[m->idiag_state & 15]++;
    }
  }
}

// One SOCK_DIAG_BY_FAMILY dump of one family (each walks the kernel's whole TCP hash table).
int dump_family(int nl, uint8_t family, uint32_t state_mask, uint32_t* counts) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = family;
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = state_mask;
  return dump_count(nl, &req, sizeof req, counts);
}

// One TCPDIAG_GETSOCK dump: both families in one walk of the table.
int dump_all(int nl, uint32_t state_mask, uint32_t* counts) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = TCPDIAG_GETSOCK;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.idiag_family = AF_INET;
  req.r.idiag_states = state_mask;
  return dump_count(nl, &req, sizeof req, counts);
}

napi_value count_array(napi_env env, const uint32_t* counts) {
  napi_value out;
  napi_create_array_with_length(env, 16, &out);
  for (uint32_t i = 0; i < 16; i++) {
    napi_value v;
    napi_create_uint32(env, counts[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

// Counts TCP sockets of this network namespace by state, in one walk (all) or per family.
napi_value diag_count(napi_env env, napi_callback_info info, bool per_family) {
  int32_t a[1];
  if (!int_args(env, info, a, 1)) return nullptr;
  uint32_t counts[16] = {0};
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return fail(env, "socket(NETLINK_SOCK_DIAG)", errno);
  const uint32_t mask = static_cast<uint32_t>(a[0]);
  int rc = per_family ? -EOPNOTSUPP : dump_all(nl, mask, counts);
  if (rc != 0) {
    memset(counts, 0, sizeof counts);
    rc = dump_family(nl, AF_INET, mask, counts);
    if (rc == 0) rc = dump_family(nl, AF_INET6, mask, counts);
  }
  close(nl);
  if (rc != 0) return fail(env, "sock_diag dump", -rc);
  return count_array(env, counts);
}
#endif

// diagCount(stateMask): TCP sockets of this network namespace, both families in one walk of the
// kernel's table (TCPDIAG_GETSOCK; per family where the kernel refuses it), counted by kernel
// state: an array of 16 counts indexed by state number. Bit n of stateMask selects state n (-1 all).
napi_value DiagCount(napi_env env, napi_callback_info info) {
#ifdef __linux__
  return diag_count(env, info, false);
#else
  (void)info;
  napi_throw_error(env, nullptr, "floor: sock_diag is Linux only");
  return nullptr;
#endif
}

// diagCountPerFamily(stateMask): the same from one SOCK_DIAG_BY_FAMILY dump per family (IPv4 then
// IPv6), as ss makes them: two walks of the table.
napi_value DiagCountPerFamily(napi_env env, napi_callback_info info) {
#ifdef __linux__
  return diag_count(env, info, true);
#else
  (void)info;
  napi_throw_error(env, nullptr, "floor: sock_diag is Linux only");
  return nullptr;
#endif
}

// useCpuClock(on): times the loops above with the thread's CPU clock (on) or CLOCK_MONOTONIC.
napi_value UseCpuClock(napi_env env, napi_callback_info info) {
  int32_t a[1];
  if (!int_args(env, info, a, 1)) return nullptr;
  g_clock = a[0] != 0 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
  return nullptr;
}

// threadCpuNs(): CPU time of the calling thread in ns (CLOCK_THREAD_CPUTIME_ID), for JS loops timed
// the same way as the C loops.
napi_value ThreadCpuNs(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_double(env, static_cast<double>(clock_ns(CLOCK_THREAD_CPUTIME_ID)), &out);
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"noDelay", nullptr, NoDelay, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setNoDelay", nullptr, SetNoDelay, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"heartbeat", nullptr, Heartbeat, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setHeartbeat", nullptr, SetHeartbeat, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"diagCount", nullptr, DiagCount, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"useCpuClock", nullptr, UseCpuClock, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"threadCpuNs", nullptr, ThreadCpuNs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"diagCountPerFamily", nullptr, DiagCountPerFamily, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
