// The JavaScript face of the core: flat verb-named functions registered in one block at the end.
// Arguments travel through one scratch buffer per environment, shared with src/binding.ts, so a
// call costs one crossing and no allocation. Every function takes the fd that src/handle.ts has
// just read from the live handle (through Node's own accessor, in the same synchronous turn) and
// uses it for this call only: nothing here stores, dups or closes it.
#include <napi.h>
#include <errno.h>
#include <string.h>
#include <algorithm>
#include <vector>
#include "core.h"
#include "diag.h"

namespace {

// Layout of the scratch buffer, in 32-bit slots unless said otherwise. Mirrored in src/binding.ts
// through the `layout` export, so neither side hard-codes the other's numbers.
enum Slot : int {
  S_COUNT = 0,                       // options to apply
  S_IDS = 1,                         // OPT_COUNT ids
  S_VALUES = S_IDS + st::OPT_COUNT,  // OPT_COUNT values
  S_FAILED_OPTION = 20,              // option id (or -1) that a failure concerns
  S_FAILED_SYSCALL = 21,             // Syscall below
  S_READ = 24,                       // OPT_COUNT values read back
  S_QUEUES = 40,                     // outq, notsent, inq
  S_VERIFY = 45,                     // non-zero: check the fd is TCP over IPv4/IPv6 first
  S_DIAG_STATES = 48,                // sock_diag filter: state bit mask
  S_DIAG_FAMILY = 49,                // 0, AF_INET, AF_INET6
  S_DIAG_SPORT = 50,                 // -1 or a local port
  S_DIAG_DPORT = 51,                 // -1 or a remote port
  S_DIAG_ANYPORT = 52,               // -1 or a port on either side
  S_DIAG_SRC_FAMILY = 54,            // 0 or the family of the local address below
  S_DIAG_DST_FAMILY = 55,            // 0 or the family of the remote address below
  S_DIAG_SRC = 56,                   // 16 bytes: local address (network order)
  S_DIAG_DST = 60,                   // 16 bytes: remote address
  S_DIAG_COUNTS = 64,                // 16 counts by kernel state number
  S_INT_SLOTS = 80,
};
constexpr size_t kInfoOffset = S_INT_SLOTS * 4;                   // Float64 TCP_INFO fields
constexpr size_t kCookieOffset = kInfoOffset + 8 * 48;            // one BigUint64
constexpr size_t kScratchBytes = kCookieOffset + 8;
static_assert(st::TI_COUNT <= 48, "TCP_INFO fields overflow the scratch area");

enum Syscall : int { SYS_SETSOCKOPT = 0, SYS_GETSOCKOPT = 1, SYS_IOCTL = 2 };

// Status returned to JavaScript: 0, a negative errno, or one of these.
enum Status : int { ST_OK = 0, ST_E_HANDLE = 1, ST_E_NOFD = 2 };

struct AddonData {
  Napi::Reference<Napi::ArrayBuffer> scratch_ref;
  int32_t* slots = nullptr;
  double* info = nullptr;
  uint64_t* cookie = nullptr;
};

const char* const kInfoNames[st::TI_COUNT] = {
    "state", "caState", "retransmits", "probes", "backoff", "options",
    "rto", "ato", "sndMss", "rcvMss", "unacked", "sacked", "lost", "retrans",
    "lastDataSent", "lastDataReceived", "lastAckReceived", "pmtu", "rcvSsthresh",
    "rtt", "rttvar", "sndSsthresh", "sndCwnd", "advmss", "reordering",
    "rcvRtt", "rcvSpace", "totalRetrans", "pacingRate", "bytesAcked",
    "bytesReceived", "segsOut", "segsIn", "notsentBytes", "minRtt",
    "deliveryRate", "bytesSent", "bytesRetrans", "sndWnd",
};

AddonData* Data(const Napi::CallbackInfo& info) {
  return info.Env().GetInstanceData<AddonData>();
}

// Takes the fd in info[0]; verifies it is a TCP socket of IPv4/IPv6 when slots[S_VERIFY] is set
// (src/handle.ts asks once per handle: a handle's fd never changes while it is open).
// Returns ST_OK with *fd set, or a status.
int TakeFd(const Napi::CallbackInfo& info, AddonData* d, int* fd) {
  int32_t n;
  if (d == nullptr || d->slots == nullptr || napi_get_value_int32(info.Env(), info[0], &n) != napi_ok)
    return ST_E_HANDLE;
  if (n < 0) return ST_E_NOFD;
  if (d->slots[S_VERIFY] != 0) {
    int rc = st::check_tcp(n);
    if (rc != 0) {
      d->slots[S_FAILED_OPTION] = -1;
      d->slots[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
      return rc;
    }
  }
  *fd = n;
  return ST_OK;
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

// apply(fd): applies slots[S_COUNT] options from S_IDS/S_VALUES, all or nothing.
Napi::Value Apply(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    int32_t* s = d->slots;
    int n = s[S_COUNT];
    if (n < 0 || n > st::OPT_COUNT) n = 0;
    int failed = 0;
    rc = st::apply_options(fd, s + S_IDS, s + S_VALUES, n, &failed);
    if (rc != 0) {
      s[S_FAILED_OPTION] = s[S_IDS + failed];
      s[S_FAILED_SYSCALL] = SYS_SETSOCKOPT;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

// read(fd): reads every supported option into S_READ (unsupported ones are skipped).
Napi::Value Read(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    int32_t* s = d->slots;
    for (int32_t id = 0; id < st::OPT_COUNT; id++) {
      if (st::option_info(id).level < 0) continue;
      rc = st::get_option(fd, id, s + S_READ + id);
      if (rc != 0) {
        s[S_FAILED_OPTION] = id;
        s[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
        break;
      }
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value TcpInfo(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    rc = st::tcp_info(fd, d->info);
    if (rc < 0) {
      d->slots[S_FAILED_OPTION] = -1;
      d->slots[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
    } else {
      rc = ST_OK;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value Queues(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    int32_t* s = d->slots;
    rc = st::queues(fd, s + S_QUEUES, s + S_QUEUES + 1, s + S_QUEUES + 2);
    if (rc != 0) {
      s[S_FAILED_OPTION] = -1;
      s[S_FAILED_SYSCALL] = SYS_IOCTL;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

// lingerIfDrained(fd): SIOCOUTQ into S_QUEUES; when it is 0, SO_LINGER {on, 0} as well. One
// crossing for the reset path's common case, where Node's resetAndDestroy makes one setsockopt.
Napi::Value LingerIfDrained(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    int32_t* s = d->slots;
    s[S_QUEUES] = -1;
    rc = st::linger_if_drained(fd, s + S_QUEUES);
    if (rc != 0) {
      bool set = s[S_QUEUES] == 0;  // the ioctl succeeded: the setsockopt failed
      s[S_FAILED_OPTION] = set ? st::OPT_LINGER : -1;
      s[S_FAILED_SYSCALL] = set ? SYS_SETSOCKOPT : SYS_IOCTL;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value Cookie(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    rc = st::cookie(fd, d->cookie);
    if (rc != 0) {
      d->slots[S_FAILED_OPTION] = -1;
      d->slots[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

// socketError(fd): SO_ERROR into S_QUEUES (a positive errno, 0 for none); reading clears it.
Napi::Value SocketError(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info);
  int fd;
  int rc = TakeFd(info, d, &fd);
  if (rc == ST_OK) {
    rc = st::socket_error(fd, d->slots + S_QUEUES);
    if (rc != 0) {
      d->slots[S_FAILED_OPTION] = -1;
      d->slots[S_FAILED_SYSCALL] = SYS_GETSOCKOPT;
    }
  }
  return Napi::Number::New(info.Env(), rc);
}

// Fills a DiagFilter from the scratch slots; an optional sorted Uint32Array of inodes in info[0]
// limits the dump to those sockets (the process view).
bool TakeDiagFilter(const Napi::CallbackInfo& info, AddonData* d, st::DiagFilter* f) {
  if (d == nullptr || d->slots == nullptr) return false;
  const int32_t* s = d->slots;
  f->state_mask = static_cast<uint32_t>(s[S_DIAG_STATES]);
  f->family = s[S_DIAG_FAMILY];
  f->sport = s[S_DIAG_SPORT];
  f->dport = s[S_DIAG_DPORT];
  f->any_port = s[S_DIAG_ANYPORT];
  f->src_family = s[S_DIAG_SRC_FAMILY];
  f->dst_family = s[S_DIAG_DST_FAMILY];
  memcpy(f->src, s + S_DIAG_SRC, 16);
  memcpy(f->dst, s + S_DIAG_DST, 16);
  if (info.Length() > 0 && info[0].IsTypedArray()) {
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_uint32_array) return false;
    Napi::Uint32Array inodes = info[0].As<Napi::Uint32Array>();
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

void ListVisit(const st::DiagEntry& e, void* ctx) {
  static_cast<std::vector<st::DiagEntry>*>(ctx)->push_back(e);
}

// diagList([inodes]): an ArrayBuffer of DiagEntry records, or a negative errno.
Napi::Value DiagList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = Data(info);
  st::DiagFilter f;
  if (!TakeDiagFilter(info, d, &f)) return Napi::Number::New(env, -EINVAL);
  std::vector<st::DiagEntry> entries;
  int rc = st::diag_dump(f, ListVisit, &entries);
  if (rc != 0) return Napi::Number::New(env, rc);
  size_t bytes = entries.size() * sizeof(st::DiagEntry);
  Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, bytes);
  if (bytes > 0) memcpy(out.Data(), entries.data(), bytes);
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
  int nstates = 0;
  const char* const* state_names = st::tcp_state_names(&nstates);
  Napi::Array states = Napi::Array::New(env, nstates);
  for (int i = 0; i < nstates; i++) states.Set(i, state_names[i]);
  c.Set("tcpStates", states);

  Napi::Object layout = Napi::Object::New(env);
  layout.Set("bytes", static_cast<double>(kScratchBytes));
  layout.Set("count", static_cast<double>(S_COUNT));
  layout.Set("ids", static_cast<double>(S_IDS));
  layout.Set("values", static_cast<double>(S_VALUES));
  layout.Set("failedOption", static_cast<double>(S_FAILED_OPTION));
  layout.Set("failedSyscall", static_cast<double>(S_FAILED_SYSCALL));
  layout.Set("read", static_cast<double>(S_READ));
  layout.Set("queues", static_cast<double>(S_QUEUES));
  layout.Set("verify", static_cast<double>(S_VERIFY));
  layout.Set("diagStates", static_cast<double>(S_DIAG_STATES));
  layout.Set("diagFamily", static_cast<double>(S_DIAG_FAMILY));
  layout.Set("diagSport", static_cast<double>(S_DIAG_SPORT));
  layout.Set("diagDport", static_cast<double>(S_DIAG_DPORT));
  layout.Set("diagAnyPort", static_cast<double>(S_DIAG_ANYPORT));
  layout.Set("diagCounts", static_cast<double>(S_DIAG_COUNTS));
  layout.Set("diagSrcFamily", static_cast<double>(S_DIAG_SRC_FAMILY));
  layout.Set("diagDstFamily", static_cast<double>(S_DIAG_DST_FAMILY));
  layout.Set("diagSrc", static_cast<double>(S_DIAG_SRC));
  layout.Set("diagDst", static_cast<double>(S_DIAG_DST));
  layout.Set("diagEntryBytes", static_cast<double>(sizeof(st::DiagEntry)));
  layout.Set("infoOffset", static_cast<double>(kInfoOffset));
  layout.Set("cookieOffset", static_cast<double>(kCookieOffset));
  c.Set("layout", layout);

  Napi::Object status = Napi::Object::New(env);
  status.Set("OK", static_cast<double>(ST_OK));
  status.Set("E_HANDLE", static_cast<double>(ST_E_HANDLE));  // not an fd number
  status.Set("E_NOFD", static_cast<double>(ST_E_NOFD));
  c.Set("status", status);
  Napi::Array syscalls = Napi::Array::New(env, 3);
  syscalls.Set(static_cast<uint32_t>(SYS_SETSOCKOPT), "setsockopt");
  syscalls.Set(static_cast<uint32_t>(SYS_GETSOCKOPT), "getsockopt");
  syscalls.Set(static_cast<uint32_t>(SYS_IOCTL), "ioctl");
  c.Set("syscalls", syscalls);

  Napi::Object platform = Napi::Object::New(env);
  platform.Set("name", st::platform_name());
  platform.Set("tcpInfo", st::has_tcp_info());
  platform.Set("queues", st::has_queues());
  platform.Set("cookie", st::has_cookie());
  platform.Set("sockDiag", st::has_diag());
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
  env.SetInstanceData(new AddonData());  // deleted by Node when this environment (or worker) ends
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("apply", Napi::Function::New(env, Apply, "apply"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("tcpInfo", Napi::Function::New(env, TcpInfo, "tcpInfo"));
  exports.Set("queues", Napi::Function::New(env, Queues, "queues"));
  exports.Set("cookie", Napi::Function::New(env, Cookie, "cookie"));
  exports.Set("lingerIfDrained", Napi::Function::New(env, LingerIfDrained, "lingerIfDrained"));
  exports.Set("socketError", Napi::Function::New(env, SocketError, "socketError"));
  exports.Set("diagCount", Napi::Function::New(env, DiagCount, "diagCount"));
  exports.Set("diagList", Napi::Function::New(env, DiagList, "diagList"));
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(socktune, Register)
