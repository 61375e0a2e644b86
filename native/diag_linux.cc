// netlink sock_diag: the kernel's own socket table, as `ss` reads it, without spawning anything.
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <algorithm>
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

int dump_family(int nl, int family, const DiagFilter& f, DiagVisit visit, void* ctx, char* buf, size_t buflen) {
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
  req.r.idiag_states = f.state_mask;  // the kernel filters states itself

  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  if (sendto(nl, &req, sizeof req, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) return -errno;

  for (;;) {
    ssize_t n = recv(nl, buf, buflen, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    size_t len = static_cast<size_t>(n);
    for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
        return err->error != 0 ? err->error : -EIO;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      const struct inet_diag_msg* m = static_cast<const struct inet_diag_msg*>(NLMSG_DATA(h));
      uint16_t sport = ntohs(m->id.idiag_sport);
      uint16_t dport = ntohs(m->id.idiag_dport);
      if (f.sport >= 0 && sport != f.sport) continue;
      if (f.dport >= 0 && dport != f.dport) continue;
      if (f.any_port >= 0 && sport != f.any_port && dport != f.any_port) continue;
      if (f.inode_filter && !std::binary_search(f.inodes, f.inodes + f.n_inodes, m->idiag_inode)) continue;
      if (f.src_family != 0 && !same_address(f.src_family, f.src, m->idiag_family, m->id.idiag_src)) continue;
      if (f.dst_family != 0 && !same_address(f.dst_family, f.dst, m->idiag_family, m->id.idiag_dst)) continue;
      DiagEntry e;
      e.family = m->idiag_family;
      e.state = m->idiag_state;
      e.sport = sport;
      e.dport = dport;
      e.pad = 0;
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

}  // namespace

int diag_dump(const DiagFilter& f, DiagVisit visit, void* ctx) {
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return errno == EAFNOSUPPORT ? -EPROTONOSUPPORT : -errno;
  // Large reads: the kernel packs as many sockets as fit into each datagram.
  static thread_local char buf[256 * 1024];
  int rc = 0;
  if (f.family == 0 || f.family == AF_INET) rc = dump_family(nl, AF_INET, f, visit, ctx, buf, sizeof buf);
  if (rc == 0 && (f.family == 0 || f.family == AF_INET6)) rc = dump_family(nl, AF_INET6, f, visit, ctx, buf, sizeof buf);
  close(nl);
  return rc;
}

}  // namespace st
