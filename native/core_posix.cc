// Socket options through setsockopt/getsockopt: shared by every platform (POSIX, and Windows'
// Winsock, whose differences are platform.h's: the option table, SOCKET, the error numbering).
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "core.h"
#include "platform.h"
#if defined(ST_CREATES_SOCKETS)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace st {

namespace {

// Names from tables.h, places from platform.h (ST_AT_<ID>: level, optname, or -1, -1).
OptionInfo kOptions[OPT_COUNT] = {
#define ST_X(id, name) {name, ST_AT_##id},
    ST_OPTIONS(ST_X)
#undef ST_X
};

// Where the headers cannot say which options the running system has (Windows: the keepalive
// timings and TCP_MAXRT came with Windows 10 1709, and wine implements none of them), each is
// read once on a socket of our own; one the system does not know is marked absent, so it is
// refused by name like any other the platform lacks. Once per process, before the table is read.
bool probe_options() {
#if defined(ST_PROBE_OPTIONS)
  st_socket s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (s == ST_INVALID_SOCKET) return false;
  for (OptionInfo& o : kOptions) {
    if (o.level < 0) continue;
    char value[16];
    st_socklen len = sizeof value;
    if (getsockopt(s, o.level, o.optname, value, &len) != 0 && ST_ERRNO() == ST_ERRNO_NOPROTOOPT) o.level = o.optname = -1;
  }
  ST_CLOSE_SOCKET(s);
#endif
  return true;
}

}  // namespace

const OptionInfo& option_info(int32_t id) {
  static const bool probed = probe_options();
  (void)probed;
  return kOptions[id];
}

namespace {

// IP_TOS on an IPv6 socket reaches only IPv4-mapped traffic: its own traffic's byte is IPV6_TCLASS.
int socket_family(int fd) {
#ifdef SO_DOMAIN
  int domain = 0;
  st_socklen len = sizeof domain;
  if (getsockopt(ST_SOCKET(fd), SOL_SOCKET, SO_DOMAIN, ST_OPTVAL(&domain), &len) != 0) return -ST_ERRNO();
  return domain;
#else
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  st_socklen len = sizeof ss;
  if (getsockname(ST_SOCKET(fd), reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) return -ST_ERRNO();
  return ss.ss_family;
#endif
}

// Where option `id` lives on `fd`: IP_TOS moves to IPV6_TCLASS on an IPv6 socket. -errno when the
// family cannot be read.
int place(int fd, int32_t id, OptionInfo* out) {
  *out = option_info(id);
#if defined(IPV6_TCLASS)
  if (id == OPT_TOS && out->level >= 0) {
    int family = socket_family(fd);
    if (family < 0) return family;
    if (family == AF_INET6) {
      out->level = IPPROTO_IPV6;
      out->optname = IPV6_TCLASS;
    }
  }
#else
  (void)fd;
#endif
  return 0;
}

}  // namespace

// A user timeout in milliseconds, in the unit the platform's option counts (rounded up).
static int32_t to_platform_unit(int32_t id, int32_t value) {
  if (id != OPT_USER_TIMEOUT || ST_USER_TIMEOUT_UNIT == 1 || value <= 0) return value;
  return static_cast<int32_t>((static_cast<int64_t>(value) + ST_USER_TIMEOUT_UNIT - 1) / ST_USER_TIMEOUT_UNIT);
}

int set_option(int fd, int32_t id, int32_t value) {
  OptionInfo o;
  int rc = place(fd, id, &o);
  if (rc != 0) return rc;
  if (o.level < 0) return -ENOPROTOOPT;
  if (id == OPT_LINGER) {
    struct linger l;
    l.l_onoff = value >= 0 ? 1 : 0;
    l.l_linger = value >= 0 ? value : 0;
    rc = setsockopt(ST_SOCKET(fd), o.level, o.optname, ST_OPTVAL(&l), sizeof l);
  } else {
    int v = to_platform_unit(id, value);
    rc = setsockopt(ST_SOCKET(fd), o.level, o.optname, ST_OPTVAL(&v), sizeof v);
  }
  return rc == 0 ? 0 : -ST_ERRNO();
}

int get_option(int fd, int32_t id, int32_t* value) {
  OptionInfo o;
  int rc = place(fd, id, &o);
  if (rc != 0) return rc;
  if (o.level < 0) return -ENOPROTOOPT;
  if (id == OPT_LINGER) {
    struct linger l;
    memset(&l, 0, sizeof l);
    st_socklen len = sizeof l;
    if (getsockopt(ST_SOCKET(fd), o.level, o.optname, ST_OPTVAL(&l), &len) != 0) return -ST_ERRNO();
    *value = l.l_onoff ? l.l_linger : -1;
    return 0;
  }
  int v = 0;
  st_socklen len = sizeof v;
  if (getsockopt(ST_SOCKET(fd), o.level, o.optname, ST_OPTVAL(&v), &len) != 0) return -ST_ERRNO();
  // Boolean options read back as any non-zero value (SO_KEEPALIVE returns 8 on some BSDs).
  if (id == OPT_KEEPALIVE || id == OPT_NODELAY || id == OPT_REUSEADDR || id == OPT_REUSEPORT || id == OPT_BIND_ADDRESS_NO_PORT) v = v != 0;
  if (id == OPT_USER_TIMEOUT && v > 0) v *= ST_USER_TIMEOUT_UNIT;
  *value = v;
  return 0;
}

int apply_options(int fd, const int32_t* ids, const int32_t* values, int n, int* applied) {
  // Every argument is worked out on the stack before the first syscall. With page-table isolation
  // each syscall empties the TLB, so memory touched between two setsockopt calls (the option
  // table, the caller's slots) costs a page walk each time: the loop below touches only the stack.
  struct Request {
    int level;
    int optname;
    st_socklen len;
    union {
      int value;
      struct linger linger;
    } arg;
  } requests[OPT_COUNT];
  if (n > OPT_COUNT) n = OPT_COUNT;
  static const OptionInfo kNone = {"", -1, -1};
  for (int i = 0; i < n; i++) {
    OptionInfo o = kNone;
    if (ids[i] >= 0 && ids[i] < OPT_COUNT) {
      int rc = place(fd, ids[i], &o);
      if (rc != 0) {
        *applied = i;
        return rc;
      }
    }
    Request& r = requests[i];
    r.level = o.level;
    r.optname = o.optname;
    if (ids[i] == OPT_LINGER) {
      r.arg.linger.l_onoff = values[i] >= 0 ? 1 : 0;
      r.arg.linger.l_linger = values[i] >= 0 ? values[i] : 0;
      r.len = sizeof r.arg.linger;
    } else {
      r.arg.value = to_platform_unit(ids[i], values[i]);
      r.len = sizeof r.arg.value;
    }
  }
  for (int i = 0; i < n; i++) {
    const Request& r = requests[i];
    if (r.level < 0 || setsockopt(ST_SOCKET(fd), r.level, r.optname, ST_OPTVAL(&r.arg), r.len) != 0) {
      *applied = i;
      return r.level < 0 ? -ENOPROTOOPT : -ST_ERRNO();
    }
  }
  *applied = n;
  return 0;
}

int keep_shorter(int fd, int32_t* ids, int32_t* values, int* n, int32_t* kept, bool user_timeout_too) {
  *kept = 0;
  // What the options would set: -1 where they leave a field alone.
  int32_t on = -1, idle = -1, interval = -1, count = -1, user_timeout = -1;
  for (int i = 0; i < *n; i++) {
    switch (ids[i]) {
      case OPT_KEEPALIVE:
        on = values[i];
        break;
      case OPT_KEEPIDLE:
        idle = values[i];
        break;
      case OPT_KEEPINTVL:
        interval = values[i];
        break;
      case OPT_KEEPCNT:
        count = values[i];
        break;
      case OPT_USER_TIMEOUT:
        user_timeout = values[i];
        break;
      default:
        break;
    }
  }
  int32_t drop = 0;
  int64_t kept_budget_ms = -1;
  // Turning keepalive off is the policy's explicit choice; only timings compete on length.
  if (on != 0 && (on == 1 || idle >= 0 || interval >= 0 || count >= 0) && option_info(OPT_KEEPIDLE).level >= 0 && option_info(OPT_KEEPINTVL).level >= 0 &&
      option_info(OPT_KEEPCNT).level >= 0) {
    int32_t now_on = 0;
    int rc = get_option(fd, OPT_KEEPALIVE, &now_on);
    if (rc != 0) return rc;
    if (now_on == 1) {
      int32_t now_idle = 0, now_interval = 0, now_count = 0;
      if ((rc = get_option(fd, OPT_KEEPIDLE, &now_idle)) != 0) return rc;
      if ((rc = get_option(fd, OPT_KEEPINTVL, &now_interval)) != 0) return rc;
      if ((rc = get_option(fd, OPT_KEEPCNT, &now_count)) != 0) return rc;
      int64_t now = static_cast<int64_t>(now_idle) + static_cast<int64_t>(now_interval) * now_count;
      int64_t want =
          static_cast<int64_t>(idle >= 0 ? idle : now_idle) + static_cast<int64_t>(interval >= 0 ? interval : now_interval) * (count >= 0 ? count : now_count);
      if (now < want) {
        drop |= (1 << OPT_KEEPALIVE) | (1 << OPT_KEEPIDLE) | (1 << OPT_KEEPINTVL) | (1 << OPT_KEEPCNT);
        kept_budget_ms = now * 1000;
      }
    }
  }
  if (user_timeout > 0 && option_info(OPT_USER_TIMEOUT).level >= 0) {
    // With TCP_USER_TIMEOUT set, Linux's keepalive drops an idle connection only once the user
    // timeout has passed (the probe count no longer decides): a user timeout longer than the
    // keepalive budget kept would lengthen it. It follows that budget instead (design rule 10).
    if (kept_budget_ms >= 0 && user_timeout > kept_budget_ms) {
      user_timeout = static_cast<int32_t>(kept_budget_ms);
      for (int i = 0; i < *n; i++) {
        if (ids[i] == OPT_USER_TIMEOUT) values[i] = user_timeout;
      }
    }
    if (user_timeout_too) {
      int32_t now = 0;
      int rc = get_option(fd, OPT_USER_TIMEOUT, &now);
      if (rc != 0) return rc;
      if (now > 0 && now <= user_timeout) drop |= 1 << OPT_USER_TIMEOUT;
    }
  }
  if (drop == 0) return 0;
  int left = 0;
  for (int i = 0; i < *n; i++) {
    if (ids[i] >= 0 && ids[i] < OPT_COUNT && (drop & (1 << ids[i])) != 0) {
      *kept |= 1 << ids[i];
      continue;
    }
    ids[left] = ids[i];
    values[left] = values[i];
    left++;
  }
  *n = left;
  return 0;
}

// The stages before Node, where the platform makes their sockets here (platform.h); elsewhere
// (Windows) the platform file answers -ENOTSUP.
#if defined(ST_CREATES_SOCKETS)
int create_socket(int ip, int v6only, const int32_t* ids, const int32_t* values, int n, const uint8_t* bind_addr, int bind_port, uint32_t scope, int* applied,
                  int* step, int* fd_out) {
  *applied = 0;
  *step = STEP_SOCKET;
  *fd_out = -1;
  if (ip != 4 && ip != 6) return -EAFNOSUPPORT;
  int family = ip == 4 ? AF_INET : AF_INET6;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t addr_len = 0;
  if (bind_port >= 0) {
    if (bind_port > 65535) return -EINVAL;
    if (ip == 4) {
      struct sockaddr_in* a = reinterpret_cast<struct sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_port = htons(static_cast<uint16_t>(bind_port));
      memcpy(&a->sin_addr, bind_addr, 4);
      addr_len = sizeof *a;
    } else {
      struct sockaddr_in6* a = reinterpret_cast<struct sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(static_cast<uint16_t>(bind_port));
      memcpy(&a->sin6_addr, bind_addr, 16);
      a->sin6_scope_id = scope;
      addr_len = sizeof *a;
    }
  }
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return -errno;
#else
  int fd = socket(family, SOCK_STREAM, IPPROTO_TCP);
  if (fd < 0) return -errno;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
#endif
  int rc = 0;
#if defined(IPV6_V6ONLY)
  if (family == AF_INET6 && v6only >= 0) {
    int on = v6only != 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0) rc = -errno;
  }
#else
  (void)v6only;
#endif
  if (rc == 0) {
    *step = STEP_OPTION;
    rc = apply_options(fd, ids, values, n, applied);
  }
  if (rc == 0 && addr_len > 0) {
    *step = STEP_BIND;
    if (bind(fd, reinterpret_cast<struct sockaddr*>(&ss), addr_len) != 0) rc = -errno;
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  *fd_out = fd;
  return 0;
}

int close_socket(int fd) { return close(fd) == 0 ? 0 : -errno; }
#endif  // ST_CREATES_SOCKETS

int check_tcp(int fd) {
  int type = 0;
  st_socklen len = sizeof type;
  if (getsockopt(ST_SOCKET(fd), SOL_SOCKET, SO_TYPE, ST_OPTVAL(&type), &len) != 0) return -ST_ERRNO();
  if (type != SOCK_STREAM) return -EPROTOTYPE;
#ifdef SO_DOMAIN
  int domain = 0;
  len = sizeof domain;
  if (getsockopt(ST_SOCKET(fd), SOL_SOCKET, SO_DOMAIN, ST_OPTVAL(&domain), &len) != 0) return -ST_ERRNO();
#else
  struct sockaddr_storage ss;
  len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(ST_SOCKET(fd), reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) return -ST_ERRNO();
  int domain = ss.ss_family;
#endif
  if (domain != AF_INET && domain != AF_INET6) return -EAFNOSUPPORT;
#ifdef SO_PROTOCOL
  int proto = 0;
  len = sizeof proto;
  if (getsockopt(ST_SOCKET(fd), SOL_SOCKET, SO_PROTOCOL, ST_OPTVAL(&proto), &len) != 0) return -ST_ERRNO();
  if (proto != IPPROTO_TCP) return -EPROTOTYPE;
#endif
  return 0;
}

int socket_error(int fd, int32_t* err) {
  int value = 0;
  st_socklen len = sizeof value;
  if (getsockopt(ST_SOCKET(fd), SOL_SOCKET, SO_ERROR, ST_OPTVAL(&value), &len) != 0) return -ST_ERRNO();
  *err = value;
  return 0;
}

}  // namespace st
