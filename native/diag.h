// TCP socket dump through netlink sock_diag (Linux). Knows nothing of JavaScript.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace st {

struct DiagFilter {
  uint32_t state_mask = 0xffffffffu;  // bit n = kernel TCP state n
  int family = 0;                     // 0 both, else AF_INET or AF_INET6
  int sport = -1;                     // -1 any
  int dport = -1;
  int any_port = -1;                  // either side
  const uint32_t* inodes = nullptr;   // sorted; only sockets with these inodes (this process)
  size_t n_inodes = 0;
  bool inode_filter = false;
  int src_family = 0;                 // 0 any, else only sockets of this family with this local address
  uint8_t src[16] = {0};
  int dst_family = 0;                 // 0 any, else only sockets of this family with this remote address
  uint8_t dst[16] = {0};
};

struct DiagEntry {
  uint8_t family;  // AF_INET / AF_INET6
  uint8_t state;
  uint16_t sport;  // host byte order
  uint16_t dport;
  uint16_t pad;
  uint32_t inode;
  uint32_t uid;
  uint32_t rqueue;  // bytes: receive queue (or accept backlog for LISTEN)
  uint32_t wqueue;  // bytes: send queue (or accept backlog limit for LISTEN)
  uint8_t src[16];  // IPv4 in the first 4 bytes
  uint8_t dst[16];
};
static_assert(sizeof(DiagEntry) == 56, "DiagEntry layout is shared with src/diagnose/states.ts");

typedef void (*DiagVisit)(const DiagEntry& e, void* ctx);

// Dumps TCP sockets of the calling thread's network namespace that pass the filter.
// Returns 0 or -errno (-EPROTONOSUPPORT when sock_diag is not available).
int diag_dump(const DiagFilter& filter, DiagVisit visit, void* ctx);

bool has_diag();

// AF_INET and AF_INET6 as this platform numbers them (-1 where there is no sock_diag).
void diag_families(int* inet, int* inet6);

}  // namespace st
