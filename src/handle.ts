/**
 * The one place that reads `_handle` and the fd from a Node socket, and turns a native status into
 * an error. Sockets are borrowed: the fd is read from the live handle through Node's own accessor
 * immediately before each native call, in the same synchronous turn (nothing can close it in
 * between), and is never kept. Reading it here rather than from C++ saves a JS call-back per
 * operation (~150 ns, half a setsockopt).
 * @module
 */
import net from 'node:net';
import tls from 'node:tls';
import dgram from 'node:dgram';
import { constants as osConstants } from 'node:os';
import { TCP, constants, readFd, slots } from './binding.js';
import { codes, invalidArgType, kernelError, socktuneError } from './errors.js';

/** What socktune accepts as a socket: a TCP `net.Socket` (including `tls.TLSSocket`) or `net.Server`. */
export type TcpSocketLike = net.Socket | net.Server;

interface WithHandle {
  _handle?: { _parent?: unknown } | null;
}

const { layout, status, syscalls, options: optionTable } = constants;

/**
 * Marks a handle whose fd has passed the SO_TYPE/SO_DOMAIN/SO_PROTOCOL check (an open handle
 * never changes fd). A symbol on the handle is a third of the cost of a WeakSet lookup.
 */
const kVerified = Symbol('socktune.verified');
const VERIFY = layout.verify;

/** The outcome of locating a handle: the handle, or why there is none yet. */
export type HandleLookup = { handle: object } | { pending: true };

function notTcp(what: string): Error {
  return socktuneError(codes.NOT_TCP, `socktune works on TCP sockets only; got ${what}`, 'TypeError');
}

/**
 * Finds the TCP handle of `socket`, or `{ pending: true }` for a socket that is still connecting.
 * Throws for anything that is not a live TCP socket.
 */
export function lookupHandle(socket: unknown, name = 'socket'): HandleLookup {
  if (socket instanceof net.Socket && socket.destroyed) throw socktuneError(codes.SOCKET_CLOSED, 'The socket is destroyed');
  return findHandle(socket, name);
}

/**
 * The TCP handle of a connected socket whose `destroy()` is under way but whose handle is still
 * open (a reset policy drains the send queue between `destroy()` and closing the handle).
 */
export function closingHandle(socket: net.Socket): object {
  const found = findHandle(socket, 'socket');
  if ('pending' in found) throw socktuneError(codes.NOT_CONNECTED, 'The socket is still connecting');
  return found.handle;
}

function findHandle(socket: unknown, name: string): HandleLookup {
  if (socket instanceof net.Socket) {
    let handle = (socket as unknown as WithHandle)._handle;
    // A TLSSocket's handle is a TLSWrap; the TCP handle under it is its _parent.
    if (socket instanceof tls.TLSSocket && handle != null) handle = handle._parent as WithHandle['_handle'];
    if (handle == null) {
      if (socket.connecting) return { pending: true };
      throw socktuneError(codes.NOT_CONNECTED, 'The socket is not connected (it has no handle yet)');
    }
    if (!(handle instanceof TCP)) {
      if ((handle as object).constructor?.name === 'Pipe') throw notTcp('a Unix-domain (pipe) socket');
      throw invalidHandle();
    }
    if (socket.connecting) return { pending: true };
    return { handle };
  }
  if (socket instanceof net.Server) {
    const handle = (socket as unknown as WithHandle)._handle;
    if (handle == null) throw socktuneError(codes.NOT_CONNECTED, 'The server is not listening');
    if (!(handle instanceof TCP)) throw notTcp('a server listening on a Unix-domain socket or pipe');
    return { handle };
  }
  if (socket instanceof dgram.Socket) throw notTcp('a UDP (dgram) socket');
  throw invalidArgType(name, 'an instance of net.Socket, tls.TLSSocket or net.Server', socket);
}

/** Like {@link lookupHandle}, but a connecting socket is an error too. */
export function connectedHandle(socket: unknown, name = 'socket'): object {
  const found = lookupHandle(socket, name);
  if ('pending' in found) throw socktuneError(codes.NOT_CONNECTED, 'The socket is still connecting');
  return found.handle;
}

type NativeCall = (fd: number) => number;

/**
 * Runs one native call on the fd of `handle` and throws the error its status stands for.
 * Returns normally on success; results are in the scratch slots. `verify: false` skips the
 * SO_TYPE/SO_DOMAIN/SO_PROTOCOL check for calls that only make socket-level requests (SO_LINGER,
 * SIOCOUTQ), which mean the same on any stream socket a Node TCP handle can hold.
 */
export function call(fn: NativeCall, handle: object, verify = true): void {
  let fd: number;
  try {
    // Node's accessor checks its receiver: an object Node did not create throws here.
    fd = readFd.call(handle);
  } catch {
    throw invalidHandle();
  }
  const fresh = verify && (handle as Record<symbol, unknown>)[kVerified] !== true;
  slots[VERIFY] = fresh ? 1 : 0;
  const rc = fn(fd);
  if (rc === 0) {
    if (fresh) (handle as Record<symbol, unknown>)[kVerified] = true;
    return;
  }
  throw statusError(rc);
}

function invalidHandle(): Error {
  return socktuneError(
    codes.INVALID_HANDLE,
    "The socket's _handle is not a TCP handle created by Node.js (spoofed or foreign object)",
    'TypeError',
  );
}

function statusError(rc: number): Error {
  if (rc === status.E_HANDLE) return invalidHandle();
  if (rc === status.E_NOFD) return socktuneError(codes.SOCKET_CLOSED, 'The socket has no file descriptor (closed)');
  const option = slots[layout.failedOption];
  const syscall = syscalls[slots[layout.failedSyscall]] ?? 'unknown';
  if (option < 0 && syscall === 'getsockopt' && rc < 0 && isCheckErrno(rc)) {
    return notTcp('a socket that is not TCP over IPv4/IPv6');
  }
  return kernelError(rc, syscall, option >= 0 ? optionTable[option].name : undefined);
}

// What check_tcp answers for a socket that is not TCP over IPv4/IPv6.
const { EPROTOTYPE, EAFNOSUPPORT, ENOTSOCK } = osConstants.errno;
const checkErrnos = new Set<number>([-EPROTOTYPE, -EAFNOSUPPORT, -ENOTSOCK]);
function isCheckErrno(rc: number): boolean {
  return checkErrnos.has(rc);
}

/**
 * Bytes written by the application that have not reached the kernel yet: the stream's buffer plus
 * libuv's write queue of the TCP handle (for a TLSSocket, the encrypted bytes queued on the TCP
 * handle under the TLS layer). 0 once every write callback has run. 0 for a closed socket.
 */
export function pendingWriteBytes(socket: net.Socket): number {
  let handle = (socket as unknown as WithHandle)._handle as ({ _parent?: unknown; writeQueueSize?: number } | null | undefined);
  let queued = 0;
  if (socket instanceof tls.TLSSocket && handle != null) {
    queued += handle.writeQueueSize ?? 0;
    handle = handle._parent as typeof handle;
  }
  queued += handle?.writeQueueSize ?? 0;
  // The chunk being written is in writableLength until its callback runs and, for what the kernel
  // has not taken of it, in the handle's writeQueueSize too: count it once, from the handle.
  const state = (socket as unknown as { _writableState?: { writing?: boolean; writelen?: number } })._writableState;
  const inHandle = state?.writing === true ? (state.writelen ?? 0) : 0;
  return socket.writableLength - inHandle + queued;
}

/**
 * Whether Node is reading `socket` from the kernel now (libuv's read is on). A socket that is not
 * (paused with a full buffer, or never resumed) does not see the peer's FIN or RST until it reads:
 * only the kernel knows.
 */
export function isReading(socket: net.Socket): boolean {
  return ((socket as unknown as WithHandle)._handle as { reading?: boolean } | null | undefined)?.reading === true;
}

/**
 * Whether `socket` carries a TCP connection (Node's TCP handle, under TLS too) or is still
 * connecting; false for a Unix-domain socket, a user's stream, or a socket without a connection.
 */
export function isTcpSocket(socket: net.Socket): boolean {
  try {
    findHandle(socket, 'socket');
    return true;
  } catch {
    return false;
  }
}
