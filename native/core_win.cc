// Windows: the options go through core_posix.cc's setsockopt/getsockopt (Winsock; the option table,
// SOCKET and the error numbering are platform.h's); the kernel views are views_none.cc's. Two things
// are Windows' own:
// - Node's TCP handles answer -1 for their fd there (libuv keeps the SOCKET to itself), so a socket
//   is found by the addresses Node's own handle reports of it (locate_socket);
// - the DLL binds Node-API to the process that loads it, whatever its executable is called (a
//   single-executable application, a renamed node.exe), as node-gyp's delay-load hook does for
//   MSVC builds: Node-API is imported through delay-load stubs (dlltool --output-delaylib, see
//   scripts/prebuilds.mjs), and __delayLoadHelper2 below resolves each from the host process.
// Cross-compiled with mingw-w64 and run in node.exe under wine in CI (scripts/pack-smoke.mjs).
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "core.h"
#include "platform.h"
#include <windows.h>

namespace st {

const char* platform_name() { return "win32"; }

// The stages before Node make no socket here: they hand a socket to Node by descriptor (an fd
// opened into the connecting handle, `listen({ fd })`), and Node on Windows takes none that way
// (its documentation: listening on a file descriptor is not supported on Windows). connect()'s
// `prebind` and listen() are refused by name in JavaScript (src/options.ts, assertStageAvailable);
// these answer -ENOTSUP should anything reach them.
int create_socket(int, int, const int32_t*, const int32_t*, int, const uint8_t*, int, uint32_t, int* applied, int* step, int* fd_out) {
  *applied = 0;
  *step = STEP_SOCKET;
  *fd_out = -1;
  return -ENOTSUP;
}
int close_socket(int) { return -ENOTSUP; }

extern "C" int uv_translate_sys_error(int sys_errno);

int socket_errno() {
  const int e = WSAGetLastError();
  // libuv's table leaves WSAENOPROTOOPT out (UV_UNKNOWN); an option the system lacks is ENOPROTOOPT.
  return e == WSAENOPROTOOPT ? ST_ERRNO_NOPROTOOPT : -uv_translate_sys_error(e);
}

namespace {

struct Address {
  int family;
  uint8_t bytes[16];
  int port;
};

bool parse(const char* text, int port, Address* a) {
  a->port = port;
  memset(a->bytes, 0, sizeof a->bytes);
  if (inet_pton(AF_INET, text, a->bytes) == 1) {
    a->family = AF_INET;
    return true;
  }
  a->family = AF_INET6;
  return inet_pton(AF_INET6, text, a->bytes) == 1;
}

bool same_address(const sockaddr_storage& s, const Address& a) {
  if (s.ss_family != a.family) return false;
  if (a.family == AF_INET) {
    const sockaddr_in& in = reinterpret_cast<const sockaddr_in&>(s);
    return ntohs(in.sin_port) == a.port && memcmp(&in.sin_addr, a.bytes, 4) == 0;
  }
  const sockaddr_in6& in6 = reinterpret_cast<const sockaddr_in6&>(s);
  return ntohs(in6.sin6_port) == a.port && memcmp(&in6.sin6_addr, a.bytes, 16) == 0;
}

bool matches(SOCKET s, const Address& local, const Address* remote) {
  sockaddr_storage got;
  int len = sizeof got;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&got), &len) != 0 || !same_address(got, local)) return false;
  int type = 0;
  len = sizeof type;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &len) != 0 || type != SOCK_STREAM) return false;
  if (remote == nullptr) {
    BOOL listening = FALSE;
    len = sizeof listening;
    return getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, reinterpret_cast<char*>(&listening), &len) == 0 && listening;
  }
  len = sizeof got;
  return getpeername(s, reinterpret_cast<sockaddr*>(&got), &len) == 0 && same_address(got, *remote);
}

}  // namespace

int locate_socket(const SocketQuery& q, int* fd) {
  Address local, remote;
  if (!parse(q.local, q.local_port, &local) || (q.remote != nullptr && !parse(q.remote, q.remote_port, &remote))) return -EINVAL;
  const Address* peer = q.remote != nullptr ? &remote : nullptr;
  if (*fd > 0 && matches(static_cast<SOCKET>(*fd), local, peer)) return 0;
  // Kernel handles are multiples of 4, handed out lowest-free first: every handle of the process
  // lies below 4 x (its handle count + the slots freed since), bounded generously here. Winsock
  // answers WSAENOTSOCK at once for a handle that is no socket.
  DWORD count = 0;
  GetProcessHandleCount(GetCurrentProcess(), &count);
  const uintptr_t limit = 4 * (static_cast<uintptr_t>(count) + 4096);
  for (uintptr_t h = 4; h < limit && h <= INT32_MAX; h += 4) {
    if (!matches(static_cast<SOCKET>(h), local, peer)) continue;
    *fd = static_cast<int>(h);
    return 0;
  }
  *fd = -1;
  return -ENOENT;
}

}  // namespace st

// ---------------------------------------------------------------- Node-API from the host process

#include <delayimp.h>

extern "C" IMAGE_DOS_HEADER __ImageBase;

// Called by a delay-load stub the first time its import is used: resolves the function in the
// host process (libnode.dll where Node is built as one, else the executable itself), stores it in
// the import address table and returns it. A host without the function is not a Node-API host:
// the process stops with the loader's own exception, as an unresolvable import would.
extern "C" FARPROC WINAPI __delayLoadHelper2(PCImgDelayDescr descr, FARPROC* entry) {
  BYTE* base = reinterpret_cast<BYTE*>(&__ImageBase);
  HMODULE* module = reinterpret_cast<HMODULE*>(base + descr->rvaHmod);
  if (*module == nullptr) {
    HMODULE m = GetModuleHandleW(L"libnode.dll");
    *module = m != nullptr ? m : GetModuleHandleW(nullptr);
  }
  const IMAGE_THUNK_DATA* iat = reinterpret_cast<const IMAGE_THUNK_DATA*>(base + descr->rvaIAT);
  const IMAGE_THUNK_DATA* names = reinterpret_cast<const IMAGE_THUNK_DATA*>(base + descr->rvaINT);
  const size_t index = reinterpret_cast<const IMAGE_THUNK_DATA*>(entry) - iat;
  FARPROC fn;
  if (IMAGE_SNAP_BY_ORDINAL(names[index].u1.Ordinal)) {
    fn = GetProcAddress(*module, MAKEINTRESOURCEA(IMAGE_ORDINAL(names[index].u1.Ordinal)));
  } else {
    const IMAGE_IMPORT_BY_NAME* by_name = reinterpret_cast<const IMAGE_IMPORT_BY_NAME*>(base + names[index].u1.AddressOfData);
    fn = GetProcAddress(*module, reinterpret_cast<LPCSTR>(by_name->Name));
  }
  if (fn == nullptr) RaiseException(VcppException(ERROR_SEVERITY_ERROR, ERROR_PROC_NOT_FOUND), 0, 0, nullptr);
  *entry = fn;
  return fn;
}
