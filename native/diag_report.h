// Counts by state and rankings (peers, destinations, local ports) built in one pass over a
// sock_diag dump, so 200,000 TIME_WAIT sockets cost no JavaScript object each. Plain C++, no
// platform calls: the dump is diag.h's.
#pragma once
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <vector>
#include "diag.h"

namespace st {

// TOP_LISTENING rows are not a ranking: one per listening local port (count: its listeners), so
// the caller tells the sides of the sockets it kept apart the same way.
enum TopKind : uint8_t { TOP_PEER = 0, TOP_DESTINATION = 1, TOP_LOCAL_PORT = 2, TOP_LISTENING = 3 };

// One row of a ranking, as src/diagnose/states.ts reads it.
struct TopRow {
  uint8_t state;   // kernel state number
  uint8_t kind;    // TopKind
  uint8_t family;  // AF_INET / AF_INET6; 0 for a local port
  uint8_t pad;
  uint16_t port;  // the destination's port, or the local port
  uint16_t pad2;
  uint32_t count;
  uint8_t addr[16];  // the peer (IPv4 in the first 4 bytes)
};
static_assert(sizeof(TopRow) == 28, "TopRow layout is shared with src/diagnose/states.ts");

// Counts per (family, address, port) in an open-addressing table: one probe sequence per socket,
// no allocation per key.
class KeyCounts {
 public:
  void add(uint8_t family, const uint8_t* addr, uint16_t port) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    Slot* s = find(family, addr, port);
    if (s->count == 0) {
      s->family = family;
      s->port = port;
      memcpy(s->addr, addr, 16);
      size_++;
    }
    s->count++;
  }

  // The `limit` largest counts, most first; ties by family, address, then port.
  void top(size_t limit, uint8_t state, uint8_t kind, std::vector<TopRow>* out) const {
    std::vector<const Slot*> all;
    all.reserve(size_);
    for (const Slot& s : slots_)
      if (s.count > 0) all.push_back(&s);
    size_t k = std::min(limit, all.size());
    std::partial_sort(all.begin(), all.begin() + k, all.end(), before);
    for (size_t i = 0; i < k; i++) {
      TopRow r;
      memset(&r, 0, sizeof r);
      r.state = state;
      r.kind = kind;
      r.family = all[i]->family;
      r.port = all[i]->port;
      r.count = all[i]->count;
      memcpy(r.addr, all[i]->addr, 16);
      out->push_back(r);
    }
  }

 private:
  struct Slot {
    uint32_t count = 0;
    uint16_t port = 0;
    uint8_t family = 0;
    uint8_t addr[16] = {0};
  };

  static bool before(const Slot* a, const Slot* b) {
    if (a->count != b->count) return a->count > b->count;
    if (a->family != b->family) return a->family < b->family;
    int c = memcmp(a->addr, b->addr, 16);
    if (c != 0) return c < 0;
    return a->port < b->port;
  }

  static uint64_t hash(uint8_t family, const uint8_t* addr, uint16_t port) {
    uint64_t a, b;
    memcpy(&a, addr, 8);
    memcpy(&b, addr + 8, 8);
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0xC2B2AE3D27D4EB4Full) * 0x165667B19E3779F9ull ^
                 ((static_cast<uint64_t>(family) << 16 | port) * 0xD6E8FEB86659FD93ull);
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    return h ^ (h >> 29);
  }

  Slot* find(uint8_t family, const uint8_t* addr, uint16_t port) {
    size_t mask = slots_.size() - 1;
    for (size_t i = hash(family, addr, port) & mask;; i = (i + 1) & mask) {
      Slot* s = &slots_[i];
      if (s->count == 0 || (s->family == family && s->port == port && memcmp(s->addr, addr, 16) == 0)) return s;
    }
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.resize(old.empty() ? 1024 : old.size() * 2);
    for (const Slot& s : old) {
      if (s.count == 0) continue;
      *find(s.family, s.addr, s.port) = s;
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
};

// Counts every socket by state, ranks the sockets of the states in `ranked` (a bit mask of kernel
// state numbers) by peer, destination (peer and port) and local port, and keeps the whole entries
// of the states in `keep` (the ones a process can own, to find their owners).
//
// Which side a socket is on decides what its ports mean: a connection accepted by a listener of
// this namespace has the server's port as its local port and the client's ephemeral port as the
// peer's, so it is ranked by local port (the service) and never as a destination; one this side
// opened is ranked by destination (peer and port) and never by its ephemeral local port. Peers
// rank both. A local port is a listener's when any listening socket of the namespace has it: the
// dump visits every listener (DIAG_WITH_LISTENERS), those outside the filter marked DIAG_CONTEXT,
// which are not counted. Listeners may come after the connections in the dump, so the ranked
// sockets are kept (24 bytes each) and sorted out in top().
class DiagReport {
 public:
  DiagReport(uint32_t ranked, uint32_t keep) : keep_(keep), listening_(65536, 0) {
    for (int s = 0; s < 16; s++) {
      index_[s] = -1;
      if ((ranked >> s) & 1u) {
        index_[s] = static_cast<int8_t>(states_.size());
        states_.push_back(s);
      }
    }
  }

  void add(const DiagEntry& e) {
    uint8_t state = e.state < 16 ? e.state : 0;
    if (state == kListenState) listening_[e.sport]++;
    if (e.flags & DIAG_CONTEXT) return;
    counts_[state]++;
    if ((keep_ >> state) & 1u) kept_.push_back(e);
    int r = index_[state];
    if (r < 0) return;
    Socket s;
    s.rank = static_cast<uint8_t>(r);
    s.family = e.family;
    s.sport = e.sport;
    s.dport = e.dport;
    memcpy(s.dst, e.dst, 16);
    sockets_.push_back(s);
  }

  static void visit(const DiagEntry& e, void* self) { static_cast<DiagReport*>(self)->add(e); }

  const uint32_t* counts() const { return counts_; }
  const std::vector<DiagEntry>& kept() const { return kept_; }

  std::vector<TopRow> top(size_t limit) const {
    std::vector<TopRow> out;
    std::vector<Ranked> ranked(states_.size());
    for (const Socket& s : sockets_) {
      Ranked& a = ranked[s.rank];
      a.peers.add(s.family, s.dst, 0);
      if (listening_[s.sport] > 0) {
        if (a.ports.empty()) a.ports.assign(65536, 0);
        a.ports[s.sport]++;
      } else {
        a.destinations.add(s.family, s.dst, s.dport);
      }
    }
    for (size_t i = 0; i < states_.size(); i++) {
      const Ranked& a = ranked[i];
      uint8_t state = static_cast<uint8_t>(states_[i]);
      a.peers.top(limit, state, TOP_PEER, &out);
      a.destinations.top(limit, state, TOP_DESTINATION, &out);
      // Local ports: most first, ties by port.
      std::vector<uint32_t> ports;
      for (uint32_t p = 0; p < a.ports.size(); p++)
        if (a.ports[p] > 0) ports.push_back(p);
      auto more = [&](uint32_t x, uint32_t y) { return a.ports[x] != a.ports[y] ? a.ports[x] > a.ports[y] : x < y; };
      size_t k = std::min(limit, ports.size());
      std::partial_sort(ports.begin(), ports.begin() + k, ports.end(), more);
      for (size_t j = 0; j < k; j++) out.push_back(PortRow(state, TOP_LOCAL_PORT, ports[j], a.ports[ports[j]]));
    }
    for (uint32_t p = 0; p < listening_.size(); p++)
      if (listening_[p] > 0) out.push_back(PortRow(kListenState, TOP_LISTENING, p, listening_[p]));
    return out;
  }

 private:
  static constexpr uint8_t kListenState = 10;  // include/net/tcp_states.h

  // A socket of a ranked state, until top() knows the listening ports.
  struct Socket {
    uint8_t rank;  // index into states_
    uint8_t family;
    uint16_t sport;
    uint16_t dport;
    uint8_t dst[16];
  };
  static_assert(sizeof(Socket) == 22, "Socket stays small: one per ranked socket");

  struct Ranked {
    KeyCounts peers;
    KeyCounts destinations;
    std::vector<uint32_t> ports;
  };

  static TopRow PortRow(uint8_t state, uint8_t kind, uint32_t port, uint32_t count) {
    TopRow r;
    memset(&r, 0, sizeof r);
    r.state = state;
    r.kind = kind;
    r.port = static_cast<uint16_t>(port);
    r.count = count;
    return r;
  }

  uint32_t counts_[16] = {0};
  uint32_t keep_;
  std::vector<DiagEntry> kept_;
  int8_t index_[16];
  std::vector<int> states_;
  std::vector<Socket> sockets_;
  std::vector<uint32_t> listening_;
};

}  // namespace st
