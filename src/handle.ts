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
import { codes, invalidArgType, invalidArgValue, kernelError, socktuneError } from './errors.js';

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

// Why a socket has no usable handle (classify() returns one of these or the handle itself).
const enum Why {
  Pending,
  Closed,
  NeverConnected,
  Pipe,
  Foreign,
  ServerNotListening,
  ServerPipe,
  Udp,
  NotASocket,
}

/**
 * Finds the TCP handle of `socket`, or a reason there is none. Throws nothing of its own: on a
 * spoofed object (getters, Proxies) whatever it throws is the object's, and the caller wraps it.
 */
function classify(socket: unknown): object | Why {
  if (socket instanceof net.Socket) {
    let handle: unknown = (socket as unknown as WithHandle)._handle;
    if (!(handle instanceof TCP)) {
      if (handle == null) {
        if (socket.connecting === true) return Why.Pending;
        // Node's destroy() drops _handle at once; `destroyed` only words the error.
        return socket.destroyed === true ? Why.Closed : Why.NeverConnected;
      }
      // A TLSSocket's handle is a TLSWrap; the TCP handle under it is its _parent.
      if (socket instanceof tls.TLSSocket) handle = (handle as WithHandle['_handle'] & object)._parent;
      if (!(handle instanceof TCP)) return (handle as object | null)?.constructor?.name === 'Pipe' ? Why.Pipe : Why.Foreign;
    }
    return socket.connecting === true ? Why.Pending : handle;
  }
  if (socket instanceof net.Server) {
    const handle: unknown = (socket as unknown as WithHandle)._handle;
    if (handle == null) return Why.ServerNotListening;
    return handle instanceof TCP ? handle : Why.ServerPipe;
  }
  if (socket instanceof dgram.Socket) return Why.Udp;
  return Why.NotASocket;
}

function notTcp(what: string): Error {
  return socktuneError(codes.NOT_TCP, `socktune works on TCP sockets only; got ${what}`, 'TypeError');
}

function notASocket(socket: unknown, name: string): Error {
  return invalidArgType(name, 'an instance of net.Socket, tls.TLSSocket or net.Server', socket);
}

/**
 * The TCP handle of `socket`, or `undefined` for a socket that is still connecting. Throws a
 * coded error for anything that is not a live TCP socket; what a spoofed object throws while it
 * is inspected (a getter, a Proxy trap) becomes ERR_INVALID_ARG_VALUE with it as `cause`.
 */
export function tcpHandle(socket: unknown, name = 'socket'): object | undefined {
  let found: object | Why;
  try {
    found = classify(socket);
  } catch (cause) {
    const err = invalidArgValue(name, socket, 'could not be inspected as a socket (reading it threw, see `cause`)');
    Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
    throw err;
  }
  if (typeof found === 'object') return found;
  switch (found) {
    case Why.Pending: return undefined;
    case Why.Closed: throw socktuneError(codes.SOCKET_CLOSED, 'The socket is destroyed');
    case Why.NeverConnected: throw socktuneError(codes.NOT_CONNECTED, 'The socket is not connected (it has no handle yet)');
    case Why.Pipe: throw notTcp('a Unix-domain (pipe) socket');
    case Why.Foreign: throw invalidHandle();
    case Why.ServerNotListening: throw socktuneError(codes.NOT_CONNECTED, 'The server is not listening');
    case Why.ServerPipe: throw notTcp('a server listening on a Unix-domain socket or pipe');
    case Why.Udp: throw notTcp('a UDP (dgram) socket');
    default: throw notASocket(socket, name);
  }
}

/**
 * Finds the TCP handle of `socket`, or `{ pending: true }` for a socket that is still connecting.
 * Throws for anything that is not a live TCP socket. (The result has no prototype, so `'handle' in`
 * it means what it says even when Object.prototype is polluted.)
 */
export function lookupHandle(socket: unknown, name = 'socket'): HandleLookup {
  const handle = tcpHandle(socket, name);
  return handle === undefined ? { __proto__: null, pending: true } as HandleLookup : { __proto__: null, handle } as HandleLookup;
}

/** Like {@link tcpHandle}, but a connecting socket is an error too. */
export function connectedHandle(socket: unknown, name = 'socket'): object {
  const handle = tcpHandle(socket, name);
  if (handle === undefined) throw socktuneError(codes.NOT_CONNECTED, 'The socket is still connecting');
  return handle;
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
