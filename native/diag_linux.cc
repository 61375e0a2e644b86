// netlink sock_diag: the kernel's own socket table, as `ss` reads it, without spawning anything.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <algorithm>
#include <thread>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include "diag.h"

namespace st {

bool has_diag() { return true; }

void diag_families(int* inet, int* inet6) {
  *inet = AF_INET;
  *inet6 = AF_INET6;
}

namespace {

bool same_address(int want_family, const uint8_t* want, int family, const uint32_t* have) {
  if (want_family != family) return false;
  return memcmp(want, have, family == AF_INET ? 4 : 16) == 0;
}

// The kernel's number of the LISTEN state (include/net/tcp_states.h).
constexpr uint8_t kListen = 10;

// A filter as the dump applies it: `f` with DIAG_WITH_LISTENERS taken out of the family, and the
// states the kernel is asked for (the filter's, plus LISTEN when every listener is wanted).
struct Dump {
  const DiagFilter& f;
  int family;
  bool listeners;
  uint32_t kernel_states;
  explicit Dump(const DiagFilter& filter)
      : f(filter),
        family(filter.family & ~DIAG_WITH_LISTENERS),
        listeners((filter.family & DIAG_WITH_LISTENERS) != 0),
        kernel_states(filter.state_mask | (listeners ? 1u << kListen : 0u)) {}
};

// Whether a socket passes the filter's ports, process and addresses (the kernel filtered states).
bool selected(const DiagFilter& f, const struct inet_diag_msg* m, uint16_t sport, uint16_t dport) {
  if (f.sport >= 0 && sport != f.sport) return false;
  if (f.dport >= 0 && dport != f.dport) return false;
  if (f.any_port >= 0 && sport != f.any_port && dport != f.any_port) return false;
  if (f.inode_filter && !std::binary_search(f.inodes, f.inodes + f.n_inodes, m->idiag_inode)) return false;
  if (f.src_family != 0 && !same_address(f.src_family, f.src, m->idiag_family, m->id.idiag_src)) return false;
  if (f.dst_family != 0 && !same_address(f.dst_family, f.dst, m->idiag_family, m->id.idiag_dst)) return false;
  return true;
}

// Sends one dump request and visits every socket of the answer. `*answered` turns true at the
// first socket, so a caller can tell a refused request from a dump that failed halfway.
int dump(int nl, const void* req, size_t len, uint16_t type, const Dump& d, DiagVisit visit, void* ctx, char* buf, size_t buflen, bool* answered) {
  const DiagFilter& f = d.f;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  if (sendto(nl, req, len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) return -errno;

  for (;;) {
    ssize_t n = recv(nl, buf, buflen, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    size_t left = static_cast<size_t>(n);
    for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
        return err->error != 0 ? err->error : -EIO;
      }
      if (h->nlmsg_type != type) continue;
      *answered = true;
      const struct inet_diag_msg* m = static_cast<const struct inet_diag_msg*>(NLMSG_DATA(h));
      uint16_t sport = ntohs(m->id.idiag_sport);
      uint16_t dport = ntohs(m->id.idiag_dport);
      uint16_t flags = 0;
      if (!((f.state_mask >> m->idiag_state) & 1u) || !selected(f, m, sport, dport)) {
        // Not the filter's: only a listener, when every listener is wanted, as context.
        if (!d.listeners || m->idiag_state != kListen) continue;
        flags = DIAG_CONTEXT;
      }
      DiagEntry e;
      e.family = m->idiag_family;
      e.state = m->idiag_state;
      e.sport = sport;
      e.dport = dport;
      e.flags = flags;
      e.inode = m->idiag_inode;
      e.uid = m->idiag_uid;
      e.rqueue = m->idiag_rqueue;
      e.wqueue = m->idiag_wqueue;
      memcpy(e.src, m->id.idiag_src, 16);
      memcpy(e.dst, m->id.idiag_dst, 16);
      visit(e, ctx);
    }
  }
}

int dump_family(int nl, int family, const Dump& d, DiagVisit visit, void* ctx, char* buf, size_t buflen) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nlh.nlmsg_seq = 1;
  req.r.sdiag_family = static_cast<uint8_t>(family);
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = d.kernel_states;  // the kernel filters states itself
  bool answered = false;
  return dump(nl, &req, sizeof req, SOCK_DIAG_BY_FAMILY, d, visit, ctx, buf, buflen, &answered);
}

// Both families in one walk: the kernel keeps IPv4 and IPv6 TCP sockets in one hash table, and a
// per-family request walks all of it (a dump of an empty IPv6 side costs as much as the IPv4 one:
// about 0.3 µs per socket of the table at 200,000 TIME_WAIT). The original TCPDIAG_GETSOCK request
// (still served by every kernel with inet_diag) asks for every family in one pass. Returns
// -EOPNOTSUPP without having visited anything when the kernel does not serve it.
int dump_all(int nl, const Dump& d, DiagVisit visit, void* ctx, char* buf, size_t buflen, bool* answered) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = TCPDIAG_GETSOCK;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nlh.nlmsg_seq = 2;
  req.r.idiag_family = AF_INET;  // ignored for a dump: the kernel asks for every family
  req.r.idiag_states = d.kernel_states;
  return dump(nl, &req, sizeof req, TCPDIAG_GETSOCK, d, visit, ctx, buf, buflen, answered);
}

}  // namespace

int diag_dump(const DiagFilter& f, DiagVisit visit, void* ctx) {
  Dump d(f);
  int nl = f.netlink_fd;
  if (nl < 0) {
    nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return errno == EAFNOSUPPORT ? -EPROTONOSUPPORT : -errno;
  }
  // Large reads: the kernel packs as many sockets as fit into each datagram.
  static thread_local char buf[256 * 1024];
  int rc = 0;
  bool answered = false;
  if (d.family == 0) {
    rc = dump_all(nl, d, visit, ctx, buf, sizeof buf, &answered);
    if (rc != 0 && !answered) {
      // Refused before any socket: per family, which every sock_diag kernel serves.
      rc = dump_family(nl, AF_INET, d, visit, ctx, buf, sizeof buf);
      if (rc == 0) rc = dump_family(nl, AF_INET6, d, visit, ctx, buf, sizeof buf);
    }
  } else {
    rc = dump_family(nl, d.family, d, visit, ctx, buf, sizeof buf);
  }
  if (nl != f.netlink_fd) close(nl);
  return rc;
}

namespace {

// Calls `found(inode)` for every socket among the open files listed in the directory `path`
// (/proc/<pid>/fd). Returns 0 or -errno of opening the directory.
template <typename F>
int each_socket(const char* path, F found) {
  DIR* dir = opendir(path);
  if (dir == nullptr) return -errno;
  int dfd = dirfd(dir);
  char target[64];
  for (struct dirent* d; (d = readdir(dir)) != nullptr;) {
    if (d->d_name[0] == '.') continue;
    ssize_t n = readlinkat(dfd, d->d_name, target, sizeof target - 1);
    if (n < 0) continue;  // closed between readdir and readlink
    target[n] = '\0';
    if (strncmp(target, "socket:[", 8) != 0) continue;
    found(static_cast<uint32_t>(strtoul(target + 8, nullptr, 10)));
  }
  closedir(dir);
  return 0;
}

}  // namespace

int socket_inodes(int pid, std::vector<uint32_t>* out) {
  char path[64];
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
  else
    snprintf(path, sizeof path, "/proc/self/fd");
  int rc = each_socket(path, [&](uint32_t inode) { out->push_back(inode); });
  if (rc != 0) return rc;
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
  return 0;
}

int socket_owners(const uint32_t* inodes, size_t n, std::vector<uint32_t>* pairs) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -errno;
  char path[64];
  for (struct dirent* d; (d = readdir(proc)) != nullptr;) {
    char* end;
    unsigned long pid = strtoul(d->d_name, &end, 10);
    if (*end != '\0' || pid == 0) continue;
    snprintf(path, sizeof path, "/proc/%lu/fd", pid);
    int rc = each_socket(path, [&](uint32_t inode) {
      if (!std::binary_search(inodes, inodes + n, inode)) return;
      pairs->push_back(inode);
      pairs->push_back(static_cast<uint32_t>(pid));
    });
    if (rc == -EACCES || rc == -EPERM) {
      // Another user's process: whether it holds one of these cannot be told without root.
      pairs->push_back(0);
      pairs->push_back(static_cast<uint32_t>(pid));
    }
  }
  closedir(proc);
  return 0;
}

int run_in_background(int (*fn)(void*), void* ctx) {
  int rc = 0;
  std::thread runner([&] {
    // SCHED_BATCH: the same share of the CPU, but no wakeup preemption, so the thread that started
    // the dump (an event loop woken by its timers) gets its CPU back at once. Lowering the policy
    // of a new thread needs no privilege; the thread ends with the dump.
    struct sched_param none;
    memset(&none, 0, sizeof none);
    sched_setscheduler(0, SCHED_BATCH, &none);
    rc = fn(ctx);
  });
  runner.join();
  return rc;
}

int netns_open(const char* path, int fds[3]) {
  fds[0] = fds[1] = fds[2] = -1;
  // O_NONBLOCK: a FIFO given as the path would otherwise block open() until a writer comes.
  int ns = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (ns < 0) return -errno;
  struct stat st;
  if (fstat(ns, &st) != 0 || !S_ISREG(st.st_mode)) {
    // Namespace files (nsfs, bind-mounted under /run/netns, or /proc/PID/ns/net) are regular files.
    close(ns);
    return -EINVAL;
  }
  int rc = 0;
  // setns changes the namespace of the calling thread only, and a socket or /proc/thread-self/net
  // file keeps the namespace it was opened in: a short-lived thread opens them and ends.
  std::thread joiner([&] {
    if (setns(ns, CLONE_NEWNET) != 0) {
      rc = -errno;
      return;
    }
    fds[0] = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fds[0] < 0) {
      rc = errno == EAFNOSUPPORT ? -EPROTONOSUPPORT : -errno;
      return;
    }
    fds[1] = open("/proc/thread-self/net/tcp", O_RDONLY | O_CLOEXEC);
    fds[2] = open("/proc/thread-self/net/tcp6", O_RDONLY | O_CLOEXEC);
  });
  joiner.join();
  close(ns);
  if (rc != 0) {
    for (int i = 0; i < 3; i++) {
      if (fds[i] >= 0) close(fds[i]);
      fds[i] = -1;
    }
  }
  return rc;
}

}  // namespace st
