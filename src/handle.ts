/**
 * The one place that reads `_handle` and the fd from a Node socket, and turns a native status into
 * an error. Sockets are borrowed: the fd is read from the live handle through Node's own accessor
 * immediately before each native call, in the same synchronous turn (nothing can close it in
 * between), and is never used for another call: the number that passed the TCP check is
 * remembered only to know that the check is done. Reading it here rather than from C++ saves a
 * JS call-back per operation.
 * @module
 */
import net from 'node:net';
import type tls from 'node:tls';
import type dgram from 'node:dgram';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { constants, native, slots as sharedSlots } from './binding.js';
import { codes, invalidArgType, invalidArgValue, kernelError, socktuneError } from './errors.js';

/** What socktune accepts as a socket: a TCP `net.Socket` (including `tls.TLSSocket`) or `net.Server`. */
export type TcpSocketLike = net.Socket | net.Server;

interface WithHandle {
  _handle?: { _parent?: unknown } | null;
}

const { layout, status, syscalls, options: optionTable } = constants;
const VERIFY = layout.verify;
const FD = layout.fd;
const RESULT = layout.result;

const slots = sharedSlots;
const { Socket, Server } = net;

const requireBuiltin = createRequire(import.meta.url);
const getBuiltinModule = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;

/**
 * A Node built-in module, loaded when first asked for. socktune never imports `node:http`,
 * `node:tls`, `node:dgram` or `node:http2` at load: `socktune/register` runs in processes that may
 * never load them (loading them early changes what a process does: Node's HTTP parser pool, TLS's
 * engine; node:http2 loads both). Asked for only where the module is in use already (a TLS socket
 * exists, an agent is patched, an HTTP/2 session is tuned).
 */
export function builtin<T>(id: 'node:http' | 'node:https' | 'node:tls' | 'node:dgram' | 'node:http2'): T {
  return (getBuiltinModule?.call(process, id) ?? requireBuiltin(id)) as T;
}

/** The entries of `process.moduleLoadList` read so far, and the built-ins named in them. */
let modulesRead = 0;
const loadedBuiltins = new Set<string>();

/**
 * A built-in module if the process has loaded it already, else `undefined`: never loads it. Read
 * from Node's `process.moduleLoadList` (`'NativeModule http2'`), only the entries added since the
 * last call, so asking until it appears costs next to nothing. A runtime without that list
 * answers as if the module were loaded.
 */
export function loadedBuiltin<T>(id: 'node:http2'): T | undefined {
  const list = (process as { moduleLoadList?: unknown }).moduleLoadList;
  if (Array.isArray(list)) {
    for (; modulesRead < list.length; modulesRead++) {
      const entry: unknown = list[modulesRead];
      if (typeof entry === 'string' && entry.startsWith('NativeModule ')) loadedBuiltins.add(entry.slice('NativeModule '.length));
    }
    if (!loadedBuiltins.has(id.slice('node:'.length))) return undefined;
  }
  return builtin<T>(id);
}

/** Whether `socket` is a `tls.TLSSocket` (which marks itself `encrypted`: node:tls is loaded then). */
export function isTlsSocket(socket: unknown): socket is tls.TLSSocket {
  return socket instanceof Socket && (socket as { encrypted?: unknown }).encrypted === true && socket instanceof builtin<typeof tls>('node:tls').TLSSocket;
}

/**
 * Throws ERR_SOCKTUNE_UNSUPPORTED for Bun's `node:http`/`node:https` server, which is no
 * `net.Server`: it runs on Bun.serve, whose listener and connections expose no file descriptor
 * (their sockets' `_handle` is null). Anything else passes.
 */
export function assertNotFdless(server: unknown, name = 'server'): void {
  if (runtime !== 'bun' || server instanceof Server || typeof server !== 'object' || server === null) return;
  const http = builtin<typeof import('node:http')>('node:http');
  if (!(server instanceof http.Server)) return;
  throw socktuneError(
    codes.UNSUPPORTED,
    `The "${name}" argument is Bun's HTTP server (node:http over Bun.serve), whose listener and connections have no file descriptor socktune can reach; ` +
      'under Bun, policies apply to net.Server connections, to the agents (createAgent, createHttpsAgent) and to undici (createConnector, createDispatcher)',
  );
}

/** Whether `server` is a `tls.Server` (https too), which alone has `setSecureContext`. */
export function isTlsServer(server: unknown): server is tls.Server {
  return (
    server instanceof Server &&
    typeof (server as { setSecureContext?: unknown }).setSecureContext === 'function' &&
    server instanceof builtin<typeof tls>('node:tls').Server
  );
}

// Node's TCP handle class and its fd accessor, as variables of this module that TurboFan folds into
// the code once set (the accessor is then called through its fast API path, at about half the
// cost). Looked up on the first socket call, never at import: where the lookup is refused (Node's
// permission model, a runtime without process.binding) the diagnostics that need no socket still
// work, and each socket call throws the coded reason.
let TCP: (abstract new (...args: never[]) => object) | undefined;
let getFd: (this: object) => number = unreachable;
let tcpUnavailable: Error | undefined;

/** Why Node's TCP handles cannot be reached in this process (see {@link lookupTcp}), or `undefined` when they can. */
export function tcpHandlesUnreachable(): Error | undefined {
  try {
    if (TCP === undefined) lookupTcp();
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

function unreachable(): number {
  throw new Error('socktune: the fd accessor was used before it was looked up');
}

/** The JavaScript runtime this process is: Node, or one that says it is another (`process.versions`). */
export const runtime: 'node' | 'bun' | 'deno' =
  typeof process.versions.bun === 'string' ? 'bun' : typeof (process.versions as { deno?: unknown }).deno === 'string' ? 'deno' : 'node';

/**
 * The runtime's TCP handle classes and their fd accessor, looked up once (see {@link lookupNodeTcp}
 * and {@link lookupBunTcp}); a refusal is kept and thrown by every later call.
 */
function lookupTcp(): abstract new (...args: never[]) => object {
  if (tcpUnavailable !== undefined) throw tcpUnavailable;
  if (runtime === 'bun') return lookupBunTcp();
  if (runtime === 'deno') {
    tcpUnavailable = socktuneError(
      codes.UNSUPPORTED,
      "socktune cannot borrow a socket's file descriptor under Deno: its node:net handles (TCPWrap) have no fd accessor, and the one way to a descriptor, fdForIpc(), " +
        'makes a new duplicate on every call, which socktune would have to own and close (it only borrows the descriptor of the socket it is given); ' +
        'socket options, views and policies are unavailable here; connection counts, the sysctl audit, `socktune stat` and `socktune doctor` still work',
    );
    throw tcpUnavailable;
  }
  return lookupNodeTcp();
}

/**
 * Node's own TCP handle class (`process.binding('tcp_wrap')`, on Node's allow-list from 20 to 26;
 * DEP0111 is documentation-only) and its `fd` accessor, whose receiver check rejects any object
 * Node did not create. Handles are checked against the class and the fd is read through the
 * accessor.
 */
function lookupNodeTcp(): abstract new (...args: never[]) => object {
  // process.binding is a pending deprecation (DEP0111): with --pending-deprecation it warns, and
  // with --throw-deprecation that warning ends the process a tick later. tcp_wrap is on its
  // allow-list on every Node socktune supports, and the warning would be about socktune's internals,
  // not the application's code: it is not emitted for this one lookup.
  const quiet = process.noDeprecation;
  try {
    process.noDeprecation = true;
    const Tcp = (process as unknown as { binding(name: string): { TCP: abstract new (...args: never[]) => object } }).binding('tcp_wrap').TCP;
    for (let p: object | null = Tcp.prototype; p !== null; p = Object.getPrototypeOf(p)) {
      const d = Object.getOwnPropertyDescriptor(p, 'fd');
      if (d?.get) {
        getFd = d.get as (this: object) => number;
        if (process.platform === 'win32') {
          // Node's own address methods, never the handle's own properties (a caller may set those).
          const proto = Tcp.prototype as { getsockname?: AddressOf; getpeername?: AddressOf };
          if (typeof proto.getsockname !== 'function' || typeof proto.getpeername !== 'function') throw new Error("Node's TCP handles have no address methods");
          addressOf = { local: proto.getsockname, remote: proto.getpeername };
        }
        return (TCP = Tcp);
      }
    }
    throw new Error("Node's TCP handles have no fd accessor");
  } catch (cause) {
    const code = (cause as { code?: unknown })?.code;
    const reason = `${typeof code === 'string' ? `${code} ` : ''}${String((cause as Error)?.message ?? cause).split('\n')[0]}`;
    tcpUnavailable = socktuneError(
      codes.UNSUPPORTED,
      `socktune cannot reach Node's TCP handles in this process (process.binding('tcp_wrap'): ${reason}); ` +
        'socket options, views and policies are unavailable here; connection counts, the sysctl audit, `socktune stat` and `socktune doctor` still work',
    );
    (tcpUnavailable as Error & { cause?: unknown }).cause = cause;
    throw tcpUnavailable;
  } finally {
    process.noDeprecation = quiet;
  }
}

// Bun's handles: prototypes whose own `fd` getter is native and checks its receiver ("The
// TCPSocket.fd getter can only be used on instances of TCPSocket"). Trusted only as found on
// handles socktune made itself, never as found on a caller's object.
const bunGetters = new Map<object, (this: object) => number>();
let bunTlsTrusted = false;

/**
 * Bun has no process.binding('tcp_wrap'): its handle classes (TCPSocket for client and accepted
 * sockets, Listener for servers, TLSSocket for TLS) are found on objects socktune makes itself,
 * once: a listener on 127.0.0.1 port 0 (Bun.listen) and a connection to it (net.connect makes its
 * handle synchronously), both closed at once. A handle is then genuine when its prototype is one of
 * those and the prototype's own native getter accepts it: an object merely made from the
 * prototype, a Proxy of a handle or a handle of another class makes the getter throw, so a caller
 * cannot hand socktune an fd of its choosing. The TLS class is added when a TLS socket is first met.
 */
function lookupBunTcp(): abstract new (...args: never[]) => object {
  try {
    const { listen } = (globalThis as unknown as { Bun: { listen(o: object): { port: number; stop(closeActive?: boolean): void } } }).Bun;
    const listener = listen({ hostname: '127.0.0.1', port: 0, socket: { open() {}, data() {}, close() {}, error() {} } });
    try {
      trustBun(listener);
      const probe = net.connect({ port: listener.port, host: '127.0.0.1' });
      probe.on('error', () => {});
      try {
        trustBun((probe as unknown as WithHandle)._handle);
      } finally {
        probe.destroy();
      }
    } finally {
      listener.stop(true);
    }
    const Tcp = class {
      static [Symbol.hasInstance](handle: unknown): boolean {
        return typeof handle === 'object' && handle !== null && bunGetters.has(Object.getPrototypeOf(handle) as object);
      }
    };
    getFd = function bunFd(this: object): number {
      const get = bunGetters.get(Object.getPrototypeOf(this) as object);
      if (get === undefined) throw new TypeError('not a handle of Bun');
      return get.call(this);
    };
    return (TCP = Tcp);
  } catch (cause) {
    tcpUnavailable = socktuneError(
      codes.UNSUPPORTED,
      `socktune cannot find Bun's socket handle classes in this process (a listener and a connection on 127.0.0.1: ${String((cause as Error)?.message ?? cause).split('\n')[0]}); ` +
        'socket options, views and policies are unavailable here; connection counts, the sysctl audit, `socktune stat` and `socktune doctor` still work',
    );
    (tcpUnavailable as Error & { cause?: unknown }).cause = cause;
    throw tcpUnavailable;
  }
}

/**
 * Whether a genuine Bun handle holds a socket that is not TCP over IPv4/IPv6 (a Unix-domain one),
 * by the kernel (SO_TYPE/SO_DOMAIN/SO_PROTOCOL); the answer for TCP is remembered with the handle,
 * as every verified call does. False where it cannot be asked (no fd yet, no addon).
 */
function bunUnixDomain(handle: object): boolean {
  let fd: number;
  try {
    fd = getFd.call(handle);
  } catch {
    return false;
  }
  if (fd < 0 || Verified.fd(handle) === fd) return false;
  slots[VERIFY] = 1;
  slots[FD] = fd;
  try {
    native.check();
  } catch {
    return false;
  }
  const rc = slots[RESULT];
  if (rc === 0) Verified.mark(handle, fd);
  return rc < 0 && isCheckErrno(rc);
}

/** Trusts the handle class of `handle`, an object socktune made: its prototype and the prototype's own fd getter. */
function trustBun(handle: unknown): void {
  const proto = typeof handle === 'object' && handle !== null ? (Object.getPrototypeOf(handle) as object | null) : null;
  const d = proto === null ? undefined : Object.getOwnPropertyDescriptor(proto, 'fd');
  if (proto === null || typeof d?.get !== 'function') throw new Error("Bun's handle has no fd accessor");
  const get = d.get as (this: object) => number;
  get.call(handle as object); // the accessor accepts the handle it was found on
  bunGetters.set(proto, get);
}

/** Bun's TLS handle class, from a TLS connection socktune makes to a listener of its own (node:tls is in use already). */
function trustBunTls(): void {
  const { listen } = (globalThis as unknown as { Bun: { listen(o: object): { port: number; stop(closeActive?: boolean): void } } }).Bun;
  const listener = listen({ hostname: '127.0.0.1', port: 0, socket: { open() {}, data() {}, close() {}, error() {} } });
  try {
    const probe = builtin<typeof tls>('node:tls').connect({ port: listener.port, host: '127.0.0.1', rejectUnauthorized: false });
    probe.on('error', () => {});
    try {
      trustBun((probe as unknown as WithHandle)._handle);
    } finally {
      probe.destroy();
    }
  } finally {
    listener.stop(true);
  }
}

type AddressOf = (this: object, out: { address?: string; port?: number }) => number;
// Node's getsockname/getpeername of its TCP handles, where its fd accessor answers -1 for every
// open handle (Windows: libuv keeps the SOCKET to itself).
let addressOf: { local: AddressOf; remote: AddressOf } | undefined;

/**
 * The SOCKET of an open Node handle on Windows, found by the addresses Node's own methods report
 * of it (a TCP connection is unique by its four; a listener by its local address and state). The
 * handle is genuine (classify, genuine) and its methods are Node's, called on it, so the addresses
 * are the kernel's for this handle, not a caller's: the socket found is this handle's. It is
 * searched once and re-checked against the addresses on every later call (2-3 Winsock calls), so
 * a SOCKET value that the system reused after a close is never taken for this handle's. -1 when
 * the handle no longer has addresses (closed), or no socket matches.
 */
function windowsSocket(handle: object): number {
  if (addressOf === undefined) return -1;
  const local: { address?: string; port?: number } = {};
  const remote: { address?: string; port?: number } = {};
  try {
    if (addressOf.local.call(handle, local) !== 0 || typeof local.address !== 'string' || typeof local.port !== 'number') return -1;
    if (addressOf.remote.call(handle, remote) !== 0) remote.address = undefined;
  } catch {
    return -1;
  }
  const found = native.locate(local.address, local.port, remote.address, remote.port, located.get(handle) ?? -1);
  if (found < 0) return -1;
  located.set(handle, found);
  return found;
}
const located = new WeakMap<object, number>();

/** Returns the object it is given, so that a subclass can stamp a private field on any object. */
class Stamp {
  constructor(target: object) {
    return target;
  }
}

/**
 * Handles whose fd passed the SO_TYPE/SO_DOMAIN/SO_PROTOCOL check, marked with the fd that passed
 * (an open handle never changes fd). The mark is a private field: invisible to the caller's code,
 * unforgeable, and read without running any (a Proxy's traps included). Reading it first also
 * gives TurboFan the handle's map, which lets the fd accessor be called through its fast path.
 */
class Verified extends Stamp {
  #fd: number;
  private constructor(handle: object, fd: number) {
    super(handle);
    this.#fd = fd;
  }
  /** The fd that passed the check on `handle`, or -1. */
  static fd(handle: object): number {
    return #fd in handle ? (handle as Verified).#fd : -1;
  }
  static mark(handle: object, fd: number): void {
    if (#fd in handle) (handle as Verified).#fd = fd;
    else new Verified(handle, fd);
  }
}

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
function classify(socket: unknown, closing: boolean): object | Why {
  const Tcp = TCP!; // looked up by the caller, outside its try: a refusal is not the socket's fault
  if (socket instanceof Socket) {
    // An object made from the prototype without the constructor (Object.create) has no stream
    // state: Node, the guard and the reset path would fail on it later, from a timer.
    if (!constructed(socket)) return Why.NotASocket;
    let handle: unknown = (socket as unknown as WithHandle)._handle;
    if (!(handle instanceof Tcp)) {
      if (handle == null) {
        if (socket.connecting === true) return Why.Pending;
        return socket.destroyed === true ? Why.Closed : Why.NeverConnected;
      }
      // A TLSSocket's handle is a TLSWrap; the TCP handle under it is its _parent. Bun's TLS
      // sockets have a handle class of their own, over the TCP fd, trusted when first met.
      if (isTlsSocket(socket)) {
        if (runtime === 'bun') {
          if (!bunTlsTrusted) {
            bunTlsTrusted = true;
            try {
              trustBunTls();
            } catch {
              // Left untrusted: such handles are refused as foreign, never read.
            }
          }
        } else handle = (handle as WithHandle['_handle'] & object)._parent;
      }
      if (!(handle instanceof Tcp)) return (handle as object | null)?.constructor?.name === 'Pipe' ? Why.Pipe : Why.Foreign;
    }
    // Bun's Unix-domain sockets have the TCP sockets' handle class: one connecting to a path has
    // no host, and a connected one is asked of the kernel (once per handle, see bunUnixDomain).
    if (socket.connecting === true) return runtime === 'bun' && typeof (socket as { _host?: unknown })._host !== 'string' ? Why.Pipe : Why.Pending;
    // A policy's destroy() keeps the handle open while it drains: the socket is closed for
    // everyone but the reset path (`closing`).
    if (!closing && socket.destroyed === true) return Why.Closed;
    if (!genuine(handle)) return Why.Foreign;
    return runtime === 'bun' && bunUnixDomain(handle) ? Why.Pipe : handle;
  }
  if (socket instanceof Server) {
    const handle: unknown = (socket as unknown as WithHandle)._handle;
    if (handle == null) return Why.ServerNotListening;
    if (!(handle instanceof Tcp)) return Why.ServerPipe;
    if (!genuine(handle)) return Why.Foreign;
    return runtime === 'bun' && bunUnixDomain(handle) ? Why.ServerPipe : handle;
  }
  if (typeof (socket as { send?: unknown } | null)?.send === 'function' && socket instanceof builtin<typeof dgram>('node:dgram').Socket) return Why.Udp;
  return Why.NotASocket;
}

/** Whether `socket` went through the stream constructors (it has the state Node keeps per stream). */
function constructed(socket: object): boolean {
  const s = socket as { _readableState?: unknown; _writableState?: unknown };
  return typeof s._readableState === 'object' && s._readableState !== null && typeof s._writableState === 'object' && s._writableState !== null;
}

/**
 * Whether Node made `handle` (an object merely made with TCP's prototype is not one). Node's fd
 * accessor answers UV_EINVAL (-22) for any object it cannot unwrap: one it did not make, and one
 * it made and has closed. A handle Node made was given its callbacks when its socket or server
 * took it (`onread`, `onconnection`); an object from the prototype has neither.
 */
function genuine(handle: object): boolean {
  let fd: number;
  try {
    fd = getFd.call(handle);
  } catch {
    return false;
  }
  return fd >= -1 || Object.hasOwn(handle, 'onread') || Object.hasOwn(handle, 'onconnection');
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
export function tcpHandle(socket: unknown, name = 'socket', closing = false): object | undefined {
  if (TCP === undefined) lookupTcp();
  let found: object | Why;
  try {
    found = classify(socket, closing);
  } catch (cause) {
    const err = invalidArgValue(name, socket, 'could not be inspected as a socket (reading it threw, see `cause`)');
    Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
    throw err;
  }
  if (typeof found === 'object') return found;
  switch (found) {
    case Why.Pending:
      return undefined;
    case Why.Closed:
      throw socktuneError(codes.SOCKET_CLOSED, 'The socket is destroyed');
    case Why.NeverConnected:
      throw socktuneError(codes.NOT_CONNECTED, 'The socket is not connected (it has no handle yet)');
    case Why.Pipe:
      throw notTcp('a Unix-domain (pipe) socket');
    case Why.Foreign:
      throw invalidHandle();
    case Why.ServerNotListening:
      throw socktuneError(codes.NOT_CONNECTED, 'The server is not listening');
    case Why.ServerPipe:
      throw notTcp('a server listening on a Unix-domain socket or pipe');
    case Why.Udp:
      throw notTcp('a UDP (dgram) socket');
    default:
      throw notASocket(socket, name);
  }
}

/**
 * Throws ERR_INVALID_ARG_VALUE for a frozen, sealed or non-extensible socket: socktune keeps a few
 * properties of its own on the sockets it tunes, tracks or resets.
 */
export function assertExtensible(socket: object, name = 'socket'): void {
  if (!Object.isExtensible(socket))
    throw invalidArgValue(name, socket, 'is frozen, sealed or not extensible: socktune keeps its state for a connection on its socket');
}

/**
 * Finds the TCP handle of `socket`, or `{ pending: true }` for a socket that is still connecting.
 * Throws for anything that is not a live TCP socket. (The result has no prototype, so `'handle' in`
 * it means what it says even when Object.prototype is polluted.)
 */
export function lookupHandle(socket: unknown, name = 'socket'): HandleLookup {
  const handle = tcpHandle(socket, name);
  return handle === undefined ? ({ __proto__: null, pending: true } as HandleLookup) : ({ __proto__: null, handle } as HandleLookup);
}

/**
 * The TCP handle of a connected socket whose `destroy()` is under way but whose handle is still
 * open (a reset policy drains the send queue between `destroy()` and closing the handle).
 */
export function closingHandle(socket: net.Socket): object {
  const handle = tcpHandle(socket, 'socket', true);
  if (handle === undefined) throw socktuneError(codes.NOT_CONNECTED, 'The socket is still connecting');
  return handle;
}

/** Like {@link tcpHandle}, but a connecting socket is an error too. */
export function connectedHandle(socket: unknown, name = 'socket'): object {
  const handle = tcpHandle(socket, name);
  if (handle === undefined) throw socktuneError(codes.NOT_CONNECTED, 'The socket is still connecting');
  return handle;
}

type NativeCall = () => void;

/**
 * Runs one native socket function on the fd of `handle` and throws the error its result stands
 * for. Returns normally on success; results are in the scratch slots. `verify: false` skips the
 * SO_TYPE/SO_DOMAIN/SO_PROTOCOL check for calls that only make socket-level requests (SO_LINGER,
 * SIOCOUTQ), which mean the same on any stream socket a Node TCP handle can hold.
 */
export function call(fn: NativeCall, handle: object, verify = true): void {
  const verified = Verified.fd(handle);
  let fd: number;
  try {
    // Node's accessor checks its receiver: an object Node did not create throws here.
    fd = getFd.call(handle);
  } catch {
    throw invalidHandle();
  }
  if (fd === -1 && addressOf !== undefined) fd = windowsSocket(handle);
  const fresh = verify && fd !== verified;
  slots[VERIFY] = fresh ? 1 : 0;
  slots[FD] = fd;
  fn();
  const rc = slots[RESULT];
  if (rc === 0) {
    if (fresh) Verified.mark(handle, fd);
    return;
  }
  throw statusError(rc);
}

function invalidHandle(): Error {
  return socktuneError(codes.INVALID_HANDLE, "The socket's _handle is not a TCP handle created by Node.js (spoofed or foreign object)", 'TypeError');
}

function statusError(rc: number): Error {
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
  let handle = (socket as unknown as WithHandle)._handle as { _parent?: unknown; writeQueueSize?: number } | null | undefined;
  let queued = 0;
  if (handle != null && isTlsSocket(socket)) {
    queued += handle.writeQueueSize ?? 0;
    handle = handle._parent as typeof handle;
  }
  // Bun's handles count no write queue: what its native buffer holds of the chunk being written
  // is not known, so that chunk is counted whole (an overstatement of the bytes at risk by what the
  // kernel already took of it, never an understatement).
  const counted = runtime !== 'bun';
  queued += handle?.writeQueueSize ?? 0;
  // The chunk being written is in writableLength until its callback runs and, for what the kernel
  // has not taken of it, in the handle's writeQueueSize too: count it once, from the handle.
  const state = (socket as unknown as { _writableState?: { writing?: boolean; writelen?: number } })._writableState;
  const inHandle = counted && state?.writing === true ? (state.writelen ?? 0) : 0;
  return socket.writableLength - inHandle + queued;
}

// ---------------------------------------------------------------- stream and HTTP internals
// Node keeps these as fields of its streams and HTTP objects (Node 20 to 26); socktune reads them
// here only, so a Node that renames one is fixed in one place.

/** Bytes Node has handed to the kernel for `socket` (`bytesWritten` also counts what still waits in Node). */
export function bytesDispatched(socket: net.Socket): number {
  return (socket as unknown as { _bytesDispatched?: number })._bytesDispatched ?? 0;
}

/** Whether the peer's end-of-stream has reached Node (in its buffer, read by the application or not). */
export function peerEnded(socket: net.Socket): boolean {
  return (socket as unknown as { _readableState: { ended: boolean } })._readableState.ended;
}

/**
 * Marks `socket`'s `'error'` as already emitted, so that destroying it with an error keeps the
 * error (`socket.errored`, `'close'` with `hadError`) without emitting an `'error'` nobody hears.
 */
export function markErrorEmitted(socket: net.Socket): void {
  const states = socket as unknown as { _readableState?: { errorEmitted: boolean }; _writableState?: { errorEmitted: boolean } };
  if (states._readableState) states._readableState.errorEmitted = true;
  if (states._writableState) states._writableState.errorEmitted = true;
}

/** Whether Node's own `resetAndDestroy()` is closing `socket` (it sets SO_LINGER 0 itself). */
export function resetAndClosing(socket: net.Socket): boolean {
  return (socket as unknown as { resetAndClosing?: boolean }).resetAndClosing === true;
}

/** The TCP socket under a TLS socket (`_parent`), or `undefined`. */
export function tlsParent(socket: net.Socket): net.Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return parent instanceof Socket ? parent : undefined;
}

/** The host name `socket.connect()` was given (`_host`), lower case, or `undefined` (an address, or accepted). */
export function connectHost(socket: net.Socket): string | undefined {
  const host = (socket as unknown as { _host?: string | null })._host;
  return typeof host === 'string' ? host.toLowerCase() : undefined;
}

/** The `Keep-Alive` header of the response last read on a client connection (`_httpMessage.res`). */
export function keepAliveHeader(socket: object): string | undefined {
  const res = (socket as { _httpMessage?: { res?: { headers?: Record<string, string | string[] | undefined> } } | null })._httpMessage?.res;
  const header = res?.headers?.['keep-alive'];
  return Array.isArray(header) ? header.join(', ') : header;
}

/** Whether a request or response is on the connection now (`_httpMessage`, set by Node's HTTP client and server). */
export function hasHttpMessage(socket: object): boolean {
  return (socket as { _httpMessage?: unknown })._httpMessage != null;
}

/**
 * Whether a finished HTTP response's body ends only where the connection ends: it has a body, no
 * chunked encoding and no Content-Length (an HTTP/1.0 peer, such as nginx's default upstream
 * protocol, or a response whose framing headers were removed). What cannot be told is judged
 * close-delimited: the price of a wrong guess that way is one TIME_WAIT, the other way a truncated body.
 */
export function responseEndsByClose(response: object): boolean {
  const r = response as { _hasBody?: boolean; chunkedEncoding?: boolean; _header?: unknown };
  if (r._hasBody === false || r.chunkedEncoding === true) return false;
  return typeof r._header !== 'string' || !/\r\ncontent-length:/i.test(r._header);
}

/**
 * Whether `socket` is an HTTP server's keep-alive connection waiting for its next request: no
 * request being read (Node's parser holds none, or a complete one) and no response being written.
 * A plain TCP socket is never one.
 */
export function idleBetweenRequests(socket: net.Socket): boolean {
  const s = socket as unknown as {
    parser?: { incoming?: { complete?: boolean } | null } | null;
    _httpMessage?: unknown;
    server?: { keepAliveTimeout?: unknown };
  };
  if (typeof s.server?.keepAliveTimeout !== 'number') return false;
  const incoming = s.parser?.incoming;
  return s._httpMessage == null && (incoming == null || incoming.complete === true);
}

/**
 * Stops libuv reading `socket`'s connection (TLS: through the TLS layer, which stops the TCP
 * handle under it). For a socket Node already counts as destroyed while its connection stays
 * open (a policy's destroy() that waits for the peer's acknowledgements before the reset): Node
 * must not be handed bytes for a stream it has destroyed, which it would take for an error code.
 * What arrives meanwhile stays in the kernel and is discarded by the reset.
 */
export function stopReading(socket: net.Socket): void {
  const handle = (socket as unknown as { _handle?: { readStop?: () => number } | null })._handle;
  try {
    if (typeof handle?.readStop === 'function') handle.readStop();
  } catch {
    // A handle being closed: nothing is read from it any more either way.
  }
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
 * Whether `socket` is a connection a server of this process accepted (Node sets `socket.server` on
 * the sockets a `net.Server` accepts and on the TLS sockets over them; a client socket has none).
 */
export function isAccepted(socket: net.Socket): boolean {
  return (socket as unknown as { server?: unknown }).server instanceof Server;
}

/** The handle a server listens on now (a new one each time it listens), or `undefined`. */
export function listenerHandle(server: net.Server): object | undefined {
  const handle = (server as unknown as WithHandle)._handle;
  return typeof handle === 'object' && handle !== null ? handle : undefined;
}

/**
 * What Node itself sets on every connection `server` accepts, before `'connection'` (net.Server's
 * `noDelay` and `keepAlive` options, kept as fields; an HTTP server's `noDelay` is on by default).
 */
export function setOnAccept(server: net.Server): { noDelay: boolean; keepAlive: boolean } {
  const s = server as unknown as { noDelay?: unknown; keepAlive?: unknown };
  return { noDelay: s.noDelay === true, keepAlive: s.keepAlive === true };
}

/**
 * Whether `socket` carries a TCP connection (Node's TCP handle, under TLS too) or is still
 * connecting; false for a Unix-domain socket, a user's stream, or a socket without a connection.
 */
export function isTcpSocket(socket: net.Socket): boolean {
  if (TCP === undefined) lookupTcp();
  try {
    const found = classify(socket, true);
    return typeof found === 'object' || found === Why.Pending;
  } catch {
    return false;
  }
}

/** An HTTP server's connections, as Node tracks them (its internal connections list). */
export interface ServerConnections {
  /** Every open connection. */
  all(): net.Socket[];
  /**
   * Connections between requests (or before the first), whose latest response (if any) is
   * finished and with no request bytes waiting, read or not.
   */
  idle(): net.Socket[];
  /** The response being written on `socket`, if any. */
  response(socket: net.Socket): import('node:http').ServerResponse | undefined;
  /** Stops accepting (net.Server's close), without Node's destroying every idle connection at once. */
  stopAccepting(): void;
  /** Stops Node's timer that checks the connections' header and request timeouts. */
  finish(): void;
}

interface HttpParserEntry {
  socket?: net.Socket;
}

interface ConnectionsList {
  all(): HttpParserEntry[];
  idle(): HttpParserEntry[];
}

/**
 * Node's own list of an HTTP or HTTPS server's connections (Node 18.2+: `server[kConnections]`,
 * what `closeIdleConnections()` reads), or undefined for any other server.
 */
export function serverConnections(server: net.Server): ServerConnections | undefined {
  const symbols = Object.getOwnPropertySymbols(server);
  const listKey = symbols.find((s) => s.description === 'http.server.connections');
  const intervalKey = symbols.find((s) => s.description === 'http.server.connectionsCheckingInterval');
  if (listKey === undefined) return undefined;
  const list = (server as unknown as Record<symbol, ConnectionsList | undefined>)[listKey];
  if (list === undefined || typeof list.all !== 'function') return undefined;
  const sockets = (entries: HttpParserEntry[]): net.Socket[] =>
    entries.map((e) => e.socket).filter((s): s is net.Socket => s instanceof Socket && !s.destroyed);
  const response = (socket: net.Socket) => (socket as unknown as { _httpMessage?: import('node:http').ServerResponse | null })._httpMessage ?? undefined;
  return {
    all: () => sockets(list.all()),
    idle: () => {
      // Node's idle list holds connections between requests; one that has not sent a byte yet (a
      // pool or a browser connecting ahead of its first request) is not in it.
      const between = new Set(sockets(list.idle()));
      return sockets(list.all()).filter((s) => {
        if (!between.has(s) && s.bytesRead !== 0) return false;
        const res = response(s);
        if (res !== undefined && !res.writableFinished) return false;
        return !requestWaiting(s);
      });
    },
    response,
    stopAccepting: () => {
      if (server.listening) Server.prototype.close.call(server);
    },
    finish: () => {
      if (intervalKey !== undefined) clearInterval((server as unknown as Record<symbol, NodeJS.Timeout | undefined>)[intervalKey]);
    },
  };
}

/** Whether request bytes wait in the kernel for Node to read (SIOCINQ); false where that cannot be read. */
function requestWaiting(socket: net.Socket): boolean {
  try {
    const handle = tcpHandle(socket);
    if (handle === undefined) return false;
    call(native.queues, handle, false);
    return slots[constants.layout.queues + 2] > 0;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- the stages before Node
// The pre-connect stage reaches a client socket between Node's DNS lookup and its connect(): Node
// makes a TCP handle with no socket under it yet (libuv creates one lazily, in bind or connect, of
// the family the address has), so a socket socktune made with its options is opened into that
// handle (`handle.open(fd)`, what `new net.Socket({ fd })` does) just before Node's own bind or
// connect runs on it. Everything else stays Node's: the lookup, happy eyeballs (each attempt's new
// handle passes here too), the connect, errors, TLS on top. The methods are Node's TCP handle's
// (`bind`, `bind6`, `connect`, `connect6`, which net.js calls for every TCP connect on Node 20 to
// 26), wrapped once, on the first use of the stage; a connect the stage does not want costs one
// WeakMap lookup.

/** A bind Node asked for on a handle of the pre-connect stage (a `localAddress` without `localPort`), made at its connect. */
export interface PendingBind {
  readonly address: string;
  readonly port: number;
  /** bind6's flags (UV_TCP_IPV6ONLY), 0 for IPv4. */
  readonly flags: number;
}

/** Where Node connects a handle of the pre-connect stage. */
export interface ConnectTarget {
  readonly ip: 4 | 6;
  readonly address: string;
  readonly port: number;
  /** The bind Node asked for first, not made yet. */
  readonly bind: PendingBind | undefined;
}

/** What the pre-connect stage does in Node's connects (src/stage/connect.ts). */
export interface ConnectHooks {
  /** Whether `socket` goes through the stage: a bind of port 0 on its handle waits for its connect. */
  wants(socket: net.Socket): boolean;
  /**
   * Runs in Node's connect of `socket`, before the connect syscall: makes the socket, opens it into
   * `handle` ({@link openSocket}) and makes the pending bind ({@link bindPending}). Returns 0 to let
   * Node connect, a negative errno Node reports as the connect's error, or {@link STAGE_DESTROYED}
   * when it destroyed the socket with an error of its own.
   */
  connect(socket: net.Socket, handle: object, target: ConnectTarget): number;
}

/** What {@link ConnectHooks.connect} returns after destroying the socket itself: Node's connect is then not called. */
export const STAGE_DESTROYED = 1;

type BindFn = (this: object, address: string, port: number, flags?: number) => number;
type ConnectFn = (this: object, req: object, address: string, port: number) => number;

let hooks: ConnectHooks | undefined;
let originalBind: BindFn | undefined;
let originalBind6: BindFn | undefined;
const pendingBinds = new WeakMap<object, PendingBind & { ip: 4 | 6 }>();
// Node's own symbol for a handle's socket (`owner_symbol`), found on the first handle that has one.
let ownerKey: symbol | undefined;

function ownerOf(handle: object): net.Socket | undefined {
  if (ownerKey === undefined) {
    ownerKey = Object.getOwnPropertySymbols(handle).find((s) => s.description === 'owner_symbol');
    if (ownerKey === undefined) return undefined;
  }
  const owner = (handle as Record<symbol, unknown>)[ownerKey];
  return owner instanceof Socket ? owner : undefined;
}

/**
 * Sends every TCP connect of this process through `h` from now on (the wrapper is installed once;
 * a later call replaces the hooks). Throws the coded reason where Node's TCP handles cannot be
 * reached.
 */
export function interceptConnects(h: ConnectHooks): void {
  if (TCP === undefined) lookupTcp();
  hooks = h;
  if (originalBind !== undefined) return;
  const proto = TCP!.prototype as unknown as { bind: BindFn; bind6: BindFn; connect: ConnectFn; connect6: ConnectFn };
  const bind = (originalBind = proto.bind);
  const bind6 = (originalBind6 = proto.bind6);
  const connect = proto.connect;
  const connect6 = proto.connect6;
  // net.js passes `localPort` as given: undefined when only `localAddress` is.
  const deferBind = (handle: object, ip: 4 | 6, address: string, port: number | undefined, flags: number): boolean => {
    if ((port !== undefined && port !== 0) || hooks === undefined || getFdOf(handle) >= 0) return false;
    const socket = ownerOf(handle);
    if (socket === undefined || !hooks.wants(socket)) return false;
    pendingBinds.set(handle, { ip, address, port: 0, flags });
    return true;
  };
  const viaStage = (handle: object, ip: 4 | 6, address: string, port: number): number => {
    const bind = pendingBinds.get(handle);
    if (bind !== undefined) pendingBinds.delete(handle);
    const socket = hooks === undefined ? undefined : ownerOf(handle);
    if (socket === undefined || (bind === undefined && !hooks!.wants(socket))) return 0;
    return hooks!.connect(socket, handle, { ip, address, port, bind: bind?.ip === ip ? bind : undefined });
  };
  proto.bind = function bind4UnderStage(this: object, address: string, port: number): number {
    return deferBind(this, 4, address, port, 0) ? 0 : bind.call(this, address, port);
  };
  proto.bind6 = function bind6UnderStage(this: object, address: string, port: number, flags?: number): number {
    return deferBind(this, 6, address, port, flags ?? 0) ? 0 : bind6.call(this, address, port, flags);
  };
  proto.connect = function connect4UnderStage(this: object, req: object, address: string, port: number): number {
    const rc = viaStage(this, 4, address, port);
    return rc === 0 ? connect.call(this, req, address, port) : rc === STAGE_DESTROYED ? 0 : rc;
  };
  proto.connect6 = function connect6UnderStage(this: object, req: object, address: string, port: number): number {
    const rc = viaStage(this, 6, address, port);
    return rc === 0 ? connect6.call(this, req, address, port) : rc === STAGE_DESTROYED ? 0 : rc;
  };
}

function getFdOf(handle: object): number {
  try {
    return getFd.call(handle);
  } catch {
    return -1;
  }
}

/** The fd under `handle` now (-1: none yet). */
export function handleFd(handle: object): number {
  return getFdOf(handle);
}

/**
 * Hands the socket `createSocket` just made to Node: opens `fd` into `handle` (the TCP handle of a
 * connecting socket, which has none yet). Returns 0, or Node's negative errno; either way the fd is
 * no longer socktune's (Node's when opened, closed when not).
 */
export function openSocket(handle: object, fd: number): number {
  let rc: number;
  try {
    rc = (handle as { open(fd: number): number }).open(fd);
  } catch {
    rc = -osConstants.errno.EBADF;
  }
  native.releaseSocket(rc === 0);
  return rc;
}

/** Makes a bind the stage held back, through Node's own bind (libuv's: SO_REUSEADDR, IPV6_V6ONLY as Node asked). 0 or a negative errno. */
export function bindPending(handle: object, bind: PendingBind, ip: 4 | 6): number {
  return ip === 4 ? originalBind!.call(handle, bind.address, bind.port) : originalBind6!.call(handle, bind.address, bind.port, bind.flags);
}

/** Whether `socket`'s connect is one attempt of Node's happy eyeballs (`autoSelectFamily` over several addresses). */
export function tryingSeveral(socket: net.Socket): boolean {
  return Array.isArray((socket as { autoSelectFamilyAttemptedAddresses?: unknown }).autoSelectFamilyAttemptedAddresses);
}

/**
 * Hands the listening socket `createSocket` made to `server`: `server.listen({ fd }, backlog)`,
 * which opens it into a TCP handle of Node's and calls listen(2). The fd is Node's from then on,
 * or closed when `listen` throws.
 */
export function listenOn(server: net.Server, fd: number, backlog: number | undefined, callback?: () => void): void {
  let handed = false;
  try {
    if (backlog === undefined) server.listen({ fd }, callback);
    else server.listen({ fd }, backlog, callback);
    handed = true;
  } finally {
    native.releaseSocket(handed);
  }
}
