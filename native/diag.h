// TCP socket dump through netlink sock_diag (Linux), and the process and namespace views around it.
// Knows nothing of JavaScript; every function returns 0 or -errno.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <vector>

namespace st {

// Or'ed into DiagFilter::family: also visit every listening socket of the namespace, whatever the
// rest of the filter says, the ones the filter did not select marked DIAG_CONTEXT. A listening
// local port is what tells an accepted connection from one this side opened (diag_report.h), and
// the listener may be outside the filter (another process's, another port's).
constexpr int DIAG_WITH_LISTENERS = 0x100;
// DiagEntry::flags of a listening socket visited only because of DIAG_WITH_LISTENERS.
constexpr uint16_t DIAG_CONTEXT = 1;

struct DiagFilter {
  uint32_t state_mask = 0xffffffffu;  // bit n = kernel TCP state n
  int family = 0;                     // 0 both, else AF_INET or AF_INET6; | DIAG_WITH_LISTENERS
  int sport = -1;                     // -1 any
  int dport = -1;
  int any_port = -1;                 // either side
  const uint32_t* inodes = nullptr;  // sorted; only sockets with these inodes (one process)
  size_t n_inodes = 0;
  bool inode_filter = false;
  int src_family = 0;  // 0 any, else only sockets of this family with this local address
  uint8_t src[16] = {0};
  int dst_family = 0;  // 0 any, else only sockets of this family with this remote address
  uint8_t dst[16] = {0};
  int netlink_fd = -1;  // a sock_diag socket to dump through (another namespace); -1: open one
};

struct DiagEntry {
  uint8_t family;  // AF_INET / AF_INET6
  uint8_t state;
  uint16_t sport;  // host byte order
  uint16_t dport;
  uint16_t flags;  // DIAG_CONTEXT, or 0
  uint32_t inode;
  uint32_t uid;
  uint32_t rqueue;  // bytes: receive queue (or accept backlog for LISTEN)
  uint32_t wqueue;  // bytes: send queue (or accept backlog limit for LISTEN)
  uint8_t src[16];  // IPv4 in the first 4 bytes
  uint8_t dst[16];
};
static_assert(sizeof(DiagEntry) == 56, "DiagEntry layout is shared with src/diagnose/states.ts");

typedef void (*DiagVisit)(const DiagEntry& e, void* ctx);

// Dumps TCP sockets of the calling thread's network namespace (or of filter.netlink_fd's) that pass
// the filter, IPv4 and IPv6 in one walk of the kernel's socket table where the kernel allows it.
// Returns 0 or -errno (-EPROTONOSUPPORT when sock_diag is not available).
int diag_dump(const DiagFilter& filter, DiagVisit visit, void* ctx);

bool has_diag();

// AF_INET and AF_INET6 as this platform numbers them (-1 where there is no sock_diag).
void diag_families(int* inet, int* inet6);

// Inodes of the sockets among the open files of process `pid` (0: this process), from
// /proc/<pid>/fd, sorted and unique. Safe on any thread.
int socket_inodes(int pid, std::vector<uint32_t>* out);

// Who holds these sockets, as `ss -p` finds out: every process's /proc/<pid>/fd is read and each
// open file that is one of `inodes` (sorted) appends an (inode, pid) pair to `pairs`. A process
// whose fd directory this user may not read (EACCES, EPERM: another user's, without root) appends
// (0, pid): its sockets cannot be told, which is not the same as holding none. Processes that end
// while being read are skipped.
int socket_owners(const uint32_t* inodes, size_t n, std::vector<uint32_t>* pairs);

// Runs fn(ctx) on a thread of its own that never preempts others when it wakes (SCHED_BATCH on
// Linux), and waits for it: a long dump on a worker thread must not take the CPU from the event
// loop it was started by. Returns what fn returns.
int run_in_background(int (*fn)(void*), void* ctx);

// Opens, on a thread of its own that first joins the network namespace at `path` (setns), a
// sock_diag socket and that namespace's /proc/net/tcp and /proc/net/tcp6: fds[0], fds[1], fds[2]
// (-1 for a /proc file the namespace does not have). The calling thread never changes namespace.
// The caller owns and closes the fds. `path` is opened without blocking (a FIFO would wait for a
// writer) and must be a regular file, as namespace files are: -EINVAL otherwise, as from setns
// for a regular file that is not a namespace.
int netns_open(const char* path, int fds[3]);

}  // namespace st
