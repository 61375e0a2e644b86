// Socket options through setsockopt/getsockopt: shared by every POSIX platform.
#include <errno.h>
#include <string.h>
#include "core.h"
#include "platform.h"

namespace st {

namespace {

#define ST_ROW(name, level, opt) {name, level, opt}
#define ST_NONE(name) {name, -1, -1}

const OptionInfo kOptions[OPT_COUNT] = {
    ST_ROW("SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE),
#ifdef ST_TCP_KEEPIDLE
    ST_ROW("TCP_KEEPIDLE", IPPROTO_TCP, ST_TCP_KEEPIDLE),
#else
    ST_NONE("TCP_KEEPIDLE"),
#endif
#ifdef TCP_KEEPINTVL
    ST_ROW("TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL),
#else
    ST_NONE("TCP_KEEPINTVL"),
#endif
#ifdef TCP_KEEPCNT
    ST_ROW("TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT),
#else
    ST_NONE("TCP_KEEPCNT"),
#endif
#ifdef TCP_USER_TIMEOUT
    ST_ROW("TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT),
#else
    ST_NONE("TCP_USER_TIMEOUT"),
#endif
    ST_ROW("SO_LINGER", SOL_SOCKET, ST_SO_LINGER),
    ST_ROW("TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY),
    ST_ROW("SO_REUSEADDR", SOL_SOCKET, SO_REUSEADDR),
#ifdef SO_REUSEPORT
    ST_ROW("SO_REUSEPORT", SOL_SOCKET, SO_REUSEPORT),
#else
    ST_NONE("SO_REUSEPORT"),
#endif
};

}  // namespace

const OptionInfo& option_info(int32_t id) { return kOptions[id]; }

int set_option(int fd, int32_t id, int32_t value) {
  const OptionInfo& o = kOptions[id];
  if (o.level < 0) return -ENOPROTOOPT;
  int rc;
  if (id == OPT_LINGER) {
    struct linger l;
    l.l_onoff = value >= 0 ? 1 : 0;
    l.l_linger = value >= 0 ? value : 0;
    rc = setsockopt(fd, o.level, o.optname, &l, sizeof l);
  } else {
    int v = value;
    rc = setsockopt(fd, o.level, o.optname, &v, sizeof v);
  }
  return rc == 0 ? 0 : -errno;
}

int get_option(int fd, int32_t id, int32_t* value) {
  const OptionInfo& o = kOptions[id];
  if (o.level < 0) return -ENOPROTOOPT;
  if (id == OPT_LINGER) {
    struct linger l;
    memset(&l, 0, sizeof l);
    socklen_t len = sizeof l;
    if (getsockopt(fd, o.level, o.optname, &l, &len) != 0) return -errno;
    *value = l.l_onoff ? l.l_linger : -1;
    return 0;
  }
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, o.level, o.optname, &v, &len) != 0) return -errno;
  // Boolean options read back as any non-zero value (SO_KEEPALIVE returns 8 on some BSDs).
  if (id == OPT_KEEPALIVE || id == OPT_NODELAY || id == OPT_REUSEADDR || id == OPT_REUSEPORT)
    v = v != 0;
  *value = v;
  return 0;
}

int apply_options(int fd, const int32_t* ids, const int32_t* values, int n, int* failed) {
  int32_t saved[OPT_COUNT];
  int rc = 0;
  int i = 0;
  for (; i < n; i++) {
    // The last option needs no snapshot: nothing after it can fail and ask for a rollback.
    if (i + 1 < n) {
      rc = get_option(fd, ids[i], &saved[i]);
      if (rc != 0) break;
    }
    rc = set_option(fd, ids[i], values[i]);
    if (rc != 0) break;
  }
  if (rc == 0) return 0;
  *failed = i;
  // Best effort: a restore of a value the kernel held a moment ago does not fail in practice,
  // and the error reported is the one that stopped the application.
  while (i-- > 0) set_option(fd, ids[i], saved[i]);
  return rc;
}

int check_tcp(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return -errno;
  if (type != SOCK_STREAM) return -EPROTOTYPE;
#ifdef SO_DOMAIN
  int domain = 0;
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return -errno;
#else
  struct sockaddr_storage ss;
  len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) return -errno;
  int domain = ss.ss_family;
#endif
  if (domain != AF_INET && domain != AF_INET6) return -EAFNOSUPPORT;
#ifdef SO_PROTOCOL
  int proto = 0;
  len = sizeof proto;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0) return -errno;
  if (proto != IPPROTO_TCP) return -EPROTOTYPE;
#endif
  return 0;
}

int socket_error(int fd, int32_t* err) {
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &len) != 0) return -errno;
  *err = value;
  return 0;
}

}  // namespace st
