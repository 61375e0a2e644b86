// The JavaScript face of the core: flat verb-named functions registered in one block at the end.
// Arguments and results travel through one scratch buffer per environment, shared with
// src/binding.ts, so a call costs one crossing and no allocation. Every socket function takes the
// fd that src/handle.ts has just read from the live handle (through Node's own accessor, in the
// same synchronous turn, written to S_FD) and uses it for this call only: nothing here stores,
// dups or closes it.
#include <napi.h>
#include <errno.h>
#include <string.h>
#include <algorithm>
#include <string>
#include <vector>
#include "core.h"
#include "diag.h"
#include "diag_report.h"
#include "watch.h"

namespace {

// Layout of the scratch buffer, in 32-bit slots unless said otherwise: ST_SLOTS (tables.h), exported
// to src/binding.ts as `layout`, so neither side hard-codes the other's numbers.
enum Slot : int {
#define ST_X(id, name, at) S_##id = at,
  ST_SLOTS(ST_X)
#undef ST_X
      S_INT_SLOTS = 104,
};
static_assert(st::OPT_COUNT <= ST_OPTION_SLOTS && ST_OPTION_SLOTS <= 31, "options overflow their slots (and the bit masks)");
static_assert(S_VALUES == S_IDS + ST_OPTION_SLOTS, "option values follow the ids");
static_assert(S_KEEP_SHORTER >= S_VALUES + ST_OPTION_SLOTS, "option values overflow their slots");
static_assert(S_QUEUES >= S_READ + ST_OPTION_SLOTS, "options read back overflow their slots");
static_assert(S_DIAG_DST == S_DIAG_SRC + 4 && S_DIAG_COUNTS == S_DIAG_DST + 4, "addresses take 16 bytes");
static_assert(S_DIAG_COUNTS + 16 <= S_NEW_FAMILY, "state counts overflow their slots");
static_assert(S_BIND_ADDR + 4 <= S_NEW_FD && S_NEW_FD < S_INT_SLOTS, "the new socket's slots overflow the integer slots");
constexpr size_t kInfoOffset = S_INT_SLOTS * 4;         // Float64 TCP_INFO fields
constexpr size_t kCookieOffset = kInfoOffset + 8 * 48;  // one BigUint64
constexpr size_t kScratchBytes = kCookieOffset + 8;
static_assert(st::TI_COUNT <= 48, "TCP_INFO fields overflow the scratch area");

enum Syscall : int { SYS_SETSOCKOPT = 0, SYS_GETSOCKOPT = 1, SYS_IOCTL = 2, SYS_SOCKET = 3, SYS_BIND = 4 };

// Status returned to JavaScript: 0, a negative errno, or one of these.
enum Status : int { ST_OK = 0, ST_E_NOFD = 2 };

struct AddonData {
  Napi::Reference<Napi::ArrayBuffer> scratch_ref;
  int32_t* slots = nullptr;
  double* info = nullptr;
  uint64_t* cookie = nullptr;
  // The fd createSocket made and JavaScript has not yet said it handed over (releaseSocket), or -1.
  int pending_fd = -1;
  // This environment's watch set (watch.h), opened on first use; closed with the environment.
  int watch_set = -1;
  ~AddonData() {
    if (pending_fd >= 0) st::close_socket(pending_fd);
    st::watch_close(watch_set);
  }
};

const char* const kInfoNames[st::TI_COUNT] = {
#define ST_X(id, name, member) name,
    ST_TCP_INFO_FIELDS(ST_X)
#undef ST_X
};
const char* const kStateNames[st::TCPS_COUNT] = {
#define ST_X(id, name) name,
    ST_TCP_STATES(ST_X)
#undef ST_X
};

AddonData* Data(const Napi::CallbackInfo& info) { return info.Env().GetInstanceData<AddonData>(); }

// Checks the fd src/handle.ts has just read: -1 (a closed handle) is ST_E_NOFD; with
// slots[S_VERIFY] set it must be a TCP socket of IPv4/IPv6 (src/handle.ts asks once per handle: a
// handle's fd never changes while it is open). Returns ST_OK or a status.
int CheckFd(AddonData* d, int32_t fd) {
  if (fd < 0) return ST_E_NOFD;
  if (d->slots[S_VERIFY] != 0) {
    int rc = st::check_tcp(fd);
    if (rc != 0) {
      d->slots[S_FAILED_OPTION] = -1;
      d->slots[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
      return rc;
    }
  }
  return ST_OK;
}

// The shape of every socket function: takes no JavaScript arguments (the fd is in S_FD), checks the
// fd (CheckFd), runs Op on it, and writes Op's result to S_RESULT. Plain Node-API: the
// environment's data arrives as the function's data in the one napi_get_cb_info call, and no
// JavaScript value is made or read, so a crossing costs as little as Node-API allows.
template <int (*Op)(int32_t* slots, AddonData* d, int fd)>
napi_value SocketCall(napi_env env, napi_callback_info cbinfo) {
  void* data = nullptr;
  if (napi_get_cb_info(env, cbinfo, nullptr, nullptr, nullptr, &data) != napi_ok) return nullptr;
  AddonData* d = static_cast<AddonData*>(data);
  int32_t* s = d->slots;
  if (s == nullptr) {
    napi_throw_error(env, nullptr, "socktune: init(scratch) was not called");
    return nullptr;
  }
  int fd = s[S_FD];
  int rc = CheckFd(d, fd);
  if (rc == ST_OK) rc = Op(s, d, fd);
  s[S_RESULT] = rc;
  return nullptr;
}

// locate(localAddress, localPort, [remoteAddress, remotePort], candidate): the socket of this
// process with those addresses (where a runtime hands out no fd: Node on Windows), or a negative
// errno. `candidate` (-1 for none) is tried first.
Napi::Value Locate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsNumber() || !info[4].IsNumber()) return Napi::Number::New(env, -EINVAL);
  std::string local = info[0].As<Napi::String>().Utf8Value();
  std::string remote = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : std::string();
  st::SocketQuery q;
  q.local = local.c_str();
  q.local_port = info[1].As<Napi::Number>().Int32Value();
  q.remote = info[2].IsString() ? remote.c_str() : nullptr;
  q.remote_port = info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 0;
  int fd = info[4].As<Napi::Number>().Int32Value();
  int rc = st::locate_socket(q, &fd);
  return Napi::Number::New(env, rc == 0 ? fd : rc);
}

// watchAdd(hi, lo): the fd in S_FD (read from the live handle in this call) joins this environment's
// watch set under the key hi:lo; 0 or -errno into S_RESULT.
napi_value WatchAdd(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value argv[2];
  void* data = nullptr;
  if (napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data) != napi_ok) return nullptr;
  AddonData* d = static_cast<AddonData*>(data);
  uint32_t hi = 0, lo = 0;
  if (d->slots == nullptr || argc < 2 || napi_get_value_uint32(env, argv[0], &hi) != napi_ok || napi_get_value_uint32(env, argv[1], &lo) != napi_ok) {
    napi_throw_type_error(env, nullptr, "watchAdd(hi, lo) expects two uint32 after init(scratch)");
    return nullptr;
  }
  int32_t* s = d->slots;
  int rc = CheckFd(d, s[S_FD]);
  if (rc == ST_OK && d->watch_set < 0) {
    int set = st::watch_open();
    if (set < 0)
      rc = set;
    else
      d->watch_set = set;
  }
  if (rc == ST_OK) rc = st::watch_add(d->watch_set, s[S_FD], (static_cast<uint64_t>(hi) << 32) | lo);
  s[S_RESULT] = rc;
  return nullptr;
}

// watchDrain(keys: Uint32Array): the keys (hi, lo pairs) of sockets whose peer's FIN or RST came
// since the last call, without waiting; returns how many (0 before the first watchAdd), or -errno.
napi_value WatchDrain(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value argv[1];
  void* data = nullptr;
  napi_value result = nullptr;
  if (napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data) != napi_ok) return nullptr;
  AddonData* d = static_cast<AddonData*>(data);
  napi_typedarray_type type;
  size_t length = 0;
  void* raw = nullptr;
  bool is = false;
  if (argc < 1 || napi_is_typedarray(env, argv[0], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &raw, nullptr, nullptr) != napi_ok || type != napi_uint32_array) {
    napi_throw_type_error(env, nullptr, "watchDrain(keys) expects a Uint32Array");
    return nullptr;
  }
  int n = 0;
  if (d->watch_set >= 0) {
    uint64_t keys[64];
    int max = static_cast<int>(std::min<size_t>(64, length / 2));
    n = st::watch_drain(d->watch_set, keys, max);
    uint32_t* out = static_cast<uint32_t*>(raw);
    for (int i = 0; i < n; i++) {
      out[2 * i] = static_cast<uint32_t>(keys[i] >> 32);
      out[2 * i + 1] = static_cast<uint32_t>(keys[i]);
    }
  }
  napi_create_int32(env, n, &result);
  return result;
}

napi_value NewFunction(napi_env env, const char* name, napi_callback cb, AddonData* data) {
  napi_value fn = nullptr;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, data, &fn);
  return fn;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = Data(info);
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "init(scratch) expects an ArrayBuffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.ByteLength() < kScratchBytes) {
    Napi::RangeError::New(env, "scratch buffer too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  d->scratch_ref = Napi::Persistent(ab);
  uint8_t* base = static_cast<uint8_t*>(ab.Data());
  d->slots = reinterpret_cast<int32_t*>(base);
  d->info = reinterpret_cast<double*>(base + kInfoOffset);
  d->cookie = reinterpret_cast<uint64_t*>(base + kCookieOffset);
  return env.Undefined();
}

// apply: sets S_COUNT options from S_IDS/S_VALUES in order and stops at the first the kernel
// refuses, leaving the ones before it set (no snapshot, no rollback); S_APPLIED gets how many were
// set. configure()'s hot path.
int Apply(int32_t* s, AddonData*, int fd) {
  int n = s[S_COUNT];
  if (n < 0 || n > st::OPT_COUNT) n = 0;
  s[S_KEPT] = 0;
  if (s[S_KEEP_SHORTER] != 0) {
    int rc = st::keep_shorter(fd, s + S_IDS, s + S_VALUES, &n, s + S_KEPT, (s[S_KEEP_SHORTER] & 2) != 0);
    if (rc != 0) {
      s[S_APPLIED] = 0;
      s[S_FAILED_OPTION] = -1;
      s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
      return rc;
    }
    s[S_COUNT] = n;  // the ids left, compacted: S_APPLIED counts into them
  }
  int applied = 0;
  int rc = st::apply_options(fd, s + S_IDS, s + S_VALUES, n, &applied);
  s[S_APPLIED] = applied;
  if (rc != 0) {
    s[S_FAILED_OPTION] = s[S_IDS + applied];
    s[S_FAILED_SYSCALL] = SYS_SETSOCKOPT;
  }
  return rc;
}

// read: reads every supported option into S_READ (unsupported ones are skipped); an option this
// kernel does not know (IP_LOCAL_PORT_RANGE before Linux 6.3) is marked in S_READ_MISSING.
int Read(int32_t* s, AddonData*, int fd) {
  s[S_READ_MISSING] = 0;
  for (int32_t id = 0; id < st::OPT_COUNT; id++) {
    if (st::option_info(id).level < 0) continue;
    int rc = st::get_option(fd, id, s + S_READ + id);
#ifdef EOPNOTSUPP
    if (rc == -EOPNOTSUPP) rc = -ENOPROTOOPT;
#endif
    if (rc == -ENOPROTOOPT) {
      s[S_READ + id] = 0;
      s[S_READ_MISSING] |= 1 << id;
      continue;
    }
    if (rc != 0) {
      s[S_FAILED_OPTION] = id;
      s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
      return rc;
    }
  }
  return 0;
}

// tcpInfo: TCP_INFO into the Float64 area.
int TcpInfo(int32_t* s, AddonData* d, int fd) {
  int rc = st::tcp_info(fd, d->info);
  if (rc >= 0) return 0;
  s[S_FAILED_OPTION] = -1;
  s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
  return rc;
}

// queues: SIOCOUTQ, SIOCOUTQNSD and SIOCINQ into S_QUEUES.
int Queues(int32_t* s, AddonData*, int fd) {
  int rc = st::queues(fd, s + S_QUEUES, s + S_QUEUES + 1, s + S_QUEUES + 2);
  if (rc != 0) {
    s[S_FAILED_OPTION] = -1;
    s[S_FAILED_SYSCALL] = SYS_IOCTL;
  }
  return rc;
}

// lingerIfDrained: SIOCOUTQ into S_QUEUES; when it is 0, SO_LINGER {on, 0} as well. One crossing
// for the reset path's common case, where Node's resetAndDestroy makes one setsockopt.
int LingerIfDrained(int32_t* s, AddonData*, int fd) {
  s[S_QUEUES] = -1;
  int rc = st::linger_if_drained(fd, s + S_QUEUES, s + S_QUEUES + 1);
  if (rc != 0) {
    bool set = s[S_QUEUES] == 0;  // the ioctl succeeded: the state read or the setsockopt failed
    s[S_FAILED_OPTION] = set ? st::OPT_LINGER : -1;
    s[S_FAILED_SYSCALL] = set ? SYS_SETSOCKOPT : SYS_IOCTL;
  }
  return rc;
}

// state: the kernel state number into S_STATE (one getsockopt of TCP_INFO's first byte).
int State(int32_t* s, AddonData*, int fd) {
  int rc = st::tcp_state(fd, s + S_STATE);
  if (rc != 0) {
    s[S_FAILED_OPTION] = -1;
    s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
  }
  return rc;
}

// cookie: SO_COOKIE into the BigUint64 slot.
int Cookie(int32_t* s, AddonData* d, int fd) {
  int rc = st::cookie(fd, d->cookie);
  if (rc != 0) {
    s[S_FAILED_OPTION] = -1;
    s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
  }
  return rc;
}

// check: nothing beyond CheckFd's SO_TYPE/SO_DOMAIN/SO_PROTOCOL check (with slots[S_VERIFY] set):
// where a runtime's handle class alone does not tell TCP from a Unix-domain socket (Bun's).
int Check(int32_t*, AddonData*, int) { return 0; }

// socketError: SO_ERROR into S_QUEUES (a positive errno, 0 for none); reading clears it.
int SocketError(int32_t* s, AddonData*, int fd) {
  int rc = st::socket_error(fd, s + S_QUEUES);
  if (rc != 0) {
    s[S_FAILED_OPTION] = -1;
    s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
  }
  return rc;
}

// createSocket: a new TCP socket for the stages before Node (st::create_socket) from the slots:
// S_NEW_FAMILY (4 or 6), S_BIND_V6ONLY, the S_COUNT options of S_IDS/S_VALUES, and S_BIND_PORT (-1:
// no bind), S_BIND_ADDR, S_BIND_SCOPE. Writes the fd to S_NEW_FD and 0 or -errno to S_RESULT (with
// S_APPLIED, S_FAILED_OPTION and S_FAILED_SYSCALL on failure). The fd stays the binding's until
// releaseSocket says JavaScript handed it over to Node (or not: then it is closed here), so a fd
// is never leaked and never closed twice.
napi_value CreateSocket(napi_env env, napi_callback_info cbinfo) {
  void* data = nullptr;
  if (napi_get_cb_info(env, cbinfo, nullptr, nullptr, nullptr, &data) != napi_ok) return nullptr;
  AddonData* d = static_cast<AddonData*>(data);
  int32_t* s = d->slots;
  if (s == nullptr) {
    napi_throw_error(env, nullptr, "socktune: init(scratch) was not called");
    return nullptr;
  }
  if (d->pending_fd >= 0) {
    st::close_socket(d->pending_fd);  // a caller that never released it: not leaked
    d->pending_fd = -1;
  }
  int n = s[S_COUNT];
  if (n < 0 || n > st::OPT_COUNT) n = 0;
  uint8_t addr[16];
  memcpy(addr, s + S_BIND_ADDR, 16);
  int applied = 0, step = 0, fd = -1;
  int rc = st::create_socket(s[S_NEW_FAMILY], s[S_BIND_V6ONLY], s + S_IDS, s + S_VALUES, n, addr, s[S_BIND_PORT], static_cast<uint32_t>(s[S_BIND_SCOPE]),
                             &applied, &step, &fd);
  s[S_APPLIED] = applied;
  s[S_NEW_FD] = fd;
  if (rc != 0) {
    s[S_FAILED_OPTION] = step == st::STEP_OPTION ? s[S_IDS + applied] : -1;
    s[S_FAILED_SYSCALL] = step == st::STEP_OPTION ? SYS_SETSOCKOPT : step == st::STEP_BIND ? SYS_BIND : SYS_SOCKET;
  } else {
    d->pending_fd = fd;
  }
  s[S_RESULT] = rc;
  return nullptr;
}

// releaseSocket(handedOver): the fd createSocket made is Node's now (true), or is closed (false).
napi_value ReleaseSocket(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value argv[1];
  void* data = nullptr;
  if (napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data) != napi_ok) return nullptr;
  AddonData* d = static_cast<AddonData*>(data);
  bool handed = false;
  if (argc >= 1) napi_get_value_bool(env, argv[0], &handed);
  if (d->pending_fd >= 0 && !handed) st::close_socket(d->pending_fd);
  d->pending_fd = -1;
  return nullptr;
}

// Fills a DiagFilter from the scratch slots; an optional sorted Uint32Array of inodes in
// info[inodes_arg] limits the dump to those sockets (one process's).
bool TakeDiagFilter(const Napi::CallbackInfo& info, AddonData* d, st::DiagFilter* f, size_t inodes_arg = 0) {
  if (d == nullptr || d->slots == nullptr) return false;
  const int32_t* s = d->slots;
  f->state_mask = static_cast<uint32_t>(s[S_DIAG_STATES]);
  f->family = s[S_DIAG_FAMILY];
  f->sport = s[S_DIAG_SPORT];
  f->dport = s[S_DIAG_DPORT];
  f->any_port = s[S_DIAG_ANYPORT];
  f->src_family = s[S_DIAG_SRC_FAMILY];
  f->dst_family = s[S_DIAG_DST_FAMILY];
  f->netlink_fd = s[S_DIAG_NETLINK];
  memcpy(f->src, s + S_DIAG_SRC, 16);
  memcpy(f->dst, s + S_DIAG_DST, 16);
  if (info.Length() > inodes_arg && info[inodes_arg].IsTypedArray()) {
    Napi::TypedArray ta = info[inodes_arg].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_uint32_array) return false;
    Napi::Uint32Array inodes = info[inodes_arg].As<Napi::Uint32Array>();
    f->inodes = inodes.Data();
    f->n_inodes = inodes.ElementLength();
    f->inode_filter = true;
  }
  return true;
}

void CountVisit(const st::DiagEntry& e, void* ctx) {
  int32_t* counts = static_cast<int32_t*>(ctx);
  counts[e.state < 16 ? e.state : 0]++;
}

// diagCount([inodes]): counts TCP sockets by state into S_DIAG_COUNTS; 0 or -errno.
Napi::Value DiagCount(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  st::DiagFilter f;
  if (!TakeDiagFilter(info, d, &f)) return Napi::Number::New(info.Env(), -EINVAL);
  int32_t* counts = d->slots + S_DIAG_COUNTS;
  std::fill(counts, counts + 16, 0);
  return Napi::Number::New(info.Env(), st::diag_dump(f, CountVisit, counts));
}

Napi::ArrayBuffer CopyOut(Napi::Env env, const void* data, size_t bytes) {
  Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, bytes);
  if (bytes > 0) memcpy(out.Data(), data, bytes);
  return out;
}

void ListVisit(const st::DiagEntry& e, void* ctx) { static_cast<std::vector<st::DiagEntry>*>(ctx)->push_back(e); }

// diagList([inodes]): an ArrayBuffer of DiagEntry records, or a negative errno.
Napi::Value DiagList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = Data(info);
  st::DiagFilter f;
  if (!TakeDiagFilter(info, d, &f)) return Napi::Number::New(env, -EINVAL);
  std::vector<st::DiagEntry> entries;
  int rc = st::diag_dump(f, ListVisit, &entries);
  if (rc != 0) return Napi::Number::New(env, rc);
  return CopyOut(env, entries.data(), entries.size() * sizeof(st::DiagEntry));
}

// diagReport(limit, rankedMask, keepMask, [inodes]): counts by state into S_DIAG_COUNTS and
// returns [rankings as TopRow records, the DiagEntry records of the kept states] (two
// ArrayBuffers), or a negative errno, from one dump.
Napi::Value DiagReport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = Data(info);
  st::DiagFilter f;
  uint32_t limit, ranked, keep;
  if (info.Length() < 3 || napi_get_value_uint32(env, info[0], &limit) != napi_ok || napi_get_value_uint32(env, info[1], &ranked) != napi_ok ||
      napi_get_value_uint32(env, info[2], &keep) != napi_ok || !TakeDiagFilter(info, d, &f, 3))
    return Napi::Number::New(env, -EINVAL);
  st::DiagReport report(ranked, keep);
  int rc = st::diag_dump(f, st::DiagReport::visit, &report);
  if (rc != 0) return Napi::Number::New(env, rc);
  std::copy(report.counts(), report.counts() + 16, d->slots + S_DIAG_COUNTS);
  std::vector<st::TopRow> rows = report.top(limit);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, CopyOut(env, rows.data(), rows.size() * sizeof(st::TopRow)));
  out.Set(1u, CopyOut(env, report.kept().data(), report.kept().size() * sizeof(st::DiagEntry)));
  return out;
}

// One collector scrape, off the main thread: the inodes of this process's sockets and one dump of
// the namespace, counted by state for both scopes. Resolves with a Uint32Array(32) (namespace
// counts by state number, then this process's) or a negative errno.
class ScrapeWorker : public Napi::AsyncWorker {
 public:
  ScrapeWorker(Napi::Env env, bool process) : Napi::AsyncWorker(env, "socktune:diagScrape"), deferred_(Napi::Promise::Deferred::New(env)), process_(process) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { rc_ = st::run_in_background(Run, this); }

  void OnOK() override {
    Napi::Env env = Env();
    if (rc_ != 0) {
      deferred_.Resolve(Napi::Number::New(env, rc_));
      return;
    }
    Napi::Uint32Array out = Napi::Uint32Array::New(env, 32);
    memcpy(out.Data(), counts_, sizeof counts_);
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  static int Run(void* ctx) {
    ScrapeWorker* w = static_cast<ScrapeWorker*>(ctx);
    if (w->process_) {
      int rc = st::socket_inodes(0, &w->inodes_);
      if (rc != 0) return rc;
    }
    st::DiagFilter everything;
    return st::diag_dump(everything, Visit, w);
  }

  static void Visit(const st::DiagEntry& e, void* ctx) {
    ScrapeWorker* w = static_cast<ScrapeWorker*>(ctx);
    uint8_t state = e.state < 16 ? e.state : 0;
    w->counts_[state]++;
    if (w->process_ && e.inode != 0 && std::binary_search(w->inodes_.begin(), w->inodes_.end(), e.inode)) w->counts_[16 + state]++;
  }

  Napi::Promise::Deferred deferred_;
  bool process_;
  int rc_ = 0;
  std::vector<uint32_t> inodes_;
  uint32_t counts_[32] = {0};
};

// diagScrape(process): a Promise of ScrapeWorker's result.
Napi::Value DiagScrape(const Napi::CallbackInfo& info) {
  ScrapeWorker* w = new ScrapeWorker(info.Env(), info.Length() > 0 && info[0].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();  // deleted by node-addon-api after OnOK/OnError
  return p;
}

// socketInodes(pid): a sorted Uint32Array of the socket inodes in /proc/<pid>/fd (0: this
// process), or a negative errno.
Napi::Value SocketInodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid;
  if (info.Length() < 1 || napi_get_value_int32(env, info[0], &pid) != napi_ok || pid < 0) return Napi::Number::New(env, -EINVAL);
  std::vector<uint32_t> inodes;
  int rc = st::socket_inodes(pid, &inodes);
  if (rc != 0) return Napi::Number::New(env, rc);
  Napi::Uint32Array out = Napi::Uint32Array::New(env, inodes.size());
  if (!inodes.empty()) memcpy(out.Data(), inodes.data(), inodes.size() * sizeof(uint32_t));
  return out;
}

// socketOwners(inodes): a Uint32Array of (inode, pid) pairs, one per process holding one of the
// sorted `inodes` open (as ss -p reads /proc/<pid>/fd), or a negative errno.
Napi::Value SocketOwners(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    return Napi::Number::New(env, -EINVAL);
  Napi::Uint32Array inodes = info[0].As<Napi::Uint32Array>();
  std::vector<uint32_t> pairs;
  int rc = st::socket_owners(inodes.Data(), inodes.ElementLength(), &pairs);
  if (rc != 0) return Napi::Number::New(env, rc);
  Napi::Uint32Array out = Napi::Uint32Array::New(env, pairs.size());
  if (!pairs.empty()) memcpy(out.Data(), pairs.data(), pairs.size() * sizeof(uint32_t));
  return out;
}

// netnsOpen(path): an Int32Array of [sock_diag socket, /proc/net/tcp, /proc/net/tcp6] fds opened
// in the network namespace at `path` (-1 for an absent file), or a negative errno.
Napi::Value NetnsOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return Napi::Number::New(env, -EINVAL);
  std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.find('\0') != std::string::npos) return Napi::Number::New(env, -EINVAL);
  int fds[3];
  int rc = st::netns_open(path.c_str(), fds);
  if (rc != 0) return Napi::Number::New(env, rc);
  Napi::Int32Array out = Napi::Int32Array::New(env, 3);
  for (int i = 0; i < 3; i++) out[i] = fds[i];
  return out;
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  Napi::Array options = Napi::Array::New(env, st::OPT_COUNT);
  for (int32_t id = 0; id < st::OPT_COUNT; id++) {
    const st::OptionInfo& o = st::option_info(id);
    Napi::Object row = Napi::Object::New(env);
    row.Set("id", id);
    row.Set("name", o.name);
    row.Set("supported", o.level >= 0);
    row.Set("level", o.level);
    row.Set("optname", o.optname);
    options.Set(id, row);
  }
  c.Set("options", options);
  Napi::Array names = Napi::Array::New(env, st::TI_COUNT);
  for (int i = 0; i < st::TI_COUNT; i++) names.Set(i, kInfoNames[i]);
  c.Set("infoFields", names);
  Napi::Array states = Napi::Array::New(env, st::TCPS_COUNT);
  for (int i = 0; i < st::TCPS_COUNT; i++) states.Set(i, kStateNames[i]);
  c.Set("tcpStates", states);

  Napi::Object layout = Napi::Object::New(env);
  layout.Set("bytes", static_cast<double>(kScratchBytes));
#define ST_X(id, name, at) layout.Set(name, static_cast<double>(S_##id));
  ST_SLOTS(ST_X)
#undef ST_X
  layout.Set("optionSlots", static_cast<double>(ST_OPTION_SLOTS));
  layout.Set("topRowBytes", static_cast<double>(sizeof(st::TopRow)));
  layout.Set("diagEntryBytes", static_cast<double>(sizeof(st::DiagEntry)));
  layout.Set("infoOffset", static_cast<double>(kInfoOffset));
  layout.Set("cookieOffset", static_cast<double>(kCookieOffset));
  c.Set("layout", layout);

  Napi::Object status = Napi::Object::New(env);
  status.Set("OK", static_cast<double>(ST_OK));
  status.Set("E_NOFD", static_cast<double>(ST_E_NOFD));
  c.Set("status", status);
  Napi::Array syscalls = Napi::Array::New(env, 5);
  syscalls.Set(static_cast<uint32_t>(SYS_SETSOCKOPT), "setsockopt");
  syscalls.Set(static_cast<uint32_t>(SYS_GETSOCKOPT), "getsockopt");
  syscalls.Set(static_cast<uint32_t>(SYS_IOCTL), "ioctl");
  syscalls.Set(static_cast<uint32_t>(SYS_SOCKET), "socket");
  syscalls.Set(static_cast<uint32_t>(SYS_BIND), "bind");
  c.Set("syscalls", syscalls);

  Napi::Object platform = Napi::Object::New(env);
  platform.Set("name", st::platform_name());
  platform.Set("tcpInfo", st::has_tcp_info());
  platform.Set("queues", st::has_queues());
  platform.Set("cookie", st::has_cookie());
  platform.Set("sockDiag", st::has_diag());
  platform.Set("watch", st::has_watch());
  int inet = -1, inet6 = -1;
  st::diag_families(&inet, &inet6);
  Napi::Object families = Napi::Object::New(env);
  families.Set("inet", static_cast<double>(inet));
  families.Set("inet6", static_cast<double>(inet6));
  c.Set("families", families);
  c.Set("platform", platform);
  return c;
}

Napi::Object Register(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  env.SetInstanceData(data);  // deleted by Node when this environment (or worker) ends
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("apply", NewFunction(env, "apply", SocketCall<Apply>, data));
  exports.Set("read", NewFunction(env, "read", SocketCall<Read>, data));
  exports.Set("tcpInfo", NewFunction(env, "tcpInfo", SocketCall<TcpInfo>, data));
  exports.Set("queues", NewFunction(env, "queues", SocketCall<Queues>, data));
  exports.Set("cookie", NewFunction(env, "cookie", SocketCall<Cookie>, data));
  exports.Set("state", NewFunction(env, "state", SocketCall<State>, data));
  exports.Set("lingerIfDrained", NewFunction(env, "lingerIfDrained", SocketCall<LingerIfDrained>, data));
  exports.Set("socketError", NewFunction(env, "socketError", SocketCall<SocketError>, data));
  exports.Set("createSocket", NewFunction(env, "createSocket", CreateSocket, data));
  exports.Set("releaseSocket", NewFunction(env, "releaseSocket", ReleaseSocket, data));
  exports.Set("check", NewFunction(env, "check", SocketCall<Check>, data));
  exports.Set("locate", Napi::Function::New(env, Locate, "locate"));
  exports.Set("watchAdd", NewFunction(env, "watchAdd", WatchAdd, data));
  exports.Set("watchDrain", NewFunction(env, "watchDrain", WatchDrain, data));
  exports.Set("diagCount", Napi::Function::New(env, DiagCount, "diagCount"));
  exports.Set("diagList", Napi::Function::New(env, DiagList, "diagList"));
  exports.Set("diagReport", Napi::Function::New(env, DiagReport, "diagReport"));
  exports.Set("diagScrape", Napi::Function::New(env, DiagScrape, "diagScrape"));
  exports.Set("socketInodes", Napi::Function::New(env, SocketInodes, "socketInodes"));
  exports.Set("socketOwners", Napi::Function::New(env, SocketOwners, "socketOwners"));
  exports.Set("netnsOpen", Napi::Function::New(env, NetnsOpen, "netnsOpen"));
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(socktune, Register)
