/**
 * How a connection under a policy ends. With RST-on-close, the socket's own `end()` and
 * `destroy()` keep their meaning for the application (the connection closes; `destroy()` marks
 * the socket destroyed at once) but the policy decides how: RST once the peer has acknowledged
 * every byte, instead of FIN. Deadlines of the guard close through {@link closeFor} with a reason.
 *
 * One `_destroy` shadow per socket serves everything that must happen as a socket is destroyed
 * (the guard forgetting it, a reset policy draining first): an own property sharing one function,
 * not a `'close'` listener (an HTTP server adds and removes `'close'` listeners per response, and a
 * second one keeps a grown listener array, about 200 bytes a connection).
 * @module
 */
import net from 'node:net';
import diagnostics from 'node:diagnostics_channel';
import { codes, readArgument, socktuneError } from '../errors.js';
import type { Policy, ResetScope } from './presets.js';
import { assertExtensible, idleBetweenRequests, isAccepted, resetAndClosing, responseEndsByClose, stopReading, tlsParent } from '../handle.js';
import {
  clearReset,
  closeChannel,
  destroyWith,
  drainThenClose,
  drainTimeoutError,
  failSocket,
  isResetting,
  lingerIfAcknowledged,
  markResetting,
  resetNow,
  resetWith,
  type CloseReason,
  type CloseReport,
  type Drain,
} from './reset.js';

const kPolicy = Symbol('socktune.policy');
const kTimedOut = Symbol('socktune.timedOut');
const kNextEmit = Symbol('socktune.nextEmit');
const kOnDestroy = Symbol('socktune.onDestroy');
const kNextDestroy = Symbol('socktune.nextDestroy');
const kClosing = Symbol('socktune.closing');
const kNextDestroyMethod = Symbol('socktune.nextDestroyMethod');
const kEndsMessage = Symbol('socktune.endsMessage');

type DestroyCallback = (err?: Error | null) => void;
type DestroyMethod = (this: net.Socket, err: Error | null, cb: DestroyCallback) => void;

/** An `end()` under way: Node's `_final` callback once it came, and how to wake the drain. */
interface Closing {
  final?: (err?: Error | null) => void;
  poll?: () => void;
  /** The drain is over; a `_final` that comes now takes Node's path (FIN, after `onDrainTimeout: 'fin'`). */
  done?: boolean;
}

interface Tuned {
  [kPolicy]?: Policy;
  [kTimedOut]?: boolean;
  [kNextEmit]?: net.Socket['emit'];
  [kOnDestroy]?: (socket: net.Socket) => void;
  [kNextDestroy]?: DestroyMethod;
  [kClosing]?: Closing;
  [kNextDestroyMethod]?: (this: net.Socket, err?: Error | null, cb?: DestroyCallback) => net.Socket;
  [kEndsMessage]?: boolean;
  _final?: (cb: (err?: Error | null) => void) => void;
  _destroy?: DestroyMethod;
}

const proto = net.Socket.prototype as unknown as {
  _final: (this: net.Socket, cb: (err?: Error | null) => void) => void;
  _destroy: DestroyMethod;
  end: (this: net.Socket, ...args: unknown[]) => net.Socket;
};

/** The policy `tune` put on `socket`, if any. */
export function policyOf(socket: net.Socket): Policy | undefined {
  return (socket as Tuned)[kPolicy];
}

/** Typed errors for the connections a policy closes (`error.code`, `error.reason`). */
export const closeCodes = Object.freeze({
  idle: 'ERR_SOCKTUNE_IDLE_TIMEOUT',
  heartbeat: 'ERR_SOCKTUNE_HEARTBEAT_TIMEOUT',
  'half-closed': 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT',
  'fin-wait': 'ERR_SOCKTUNE_FIN_WAIT_TIMEOUT',
  shutdown: 'ERR_SOCKTUNE_SHUTDOWN',
  /** HTTP/2: streams still running when the grace after a max-age GOAWAY ran out. */
  'max-age': 'ERR_SOCKTUNE_MAX_AGE',
} as const);

/** The error a connection closed for `reason` is destroyed with, or undefined for reasons that are not errors. */
export function closeError(reason: CloseReason, detail: string): (Error & { code: string; reason: CloseReason }) | undefined {
  const code = (closeCodes as Record<string, string>)[reason];
  if (code === undefined) return undefined;
  const err = socktuneError(code, detail) as Error & { code: string; reason: CloseReason };
  err.reason = reason;
  return err;
}

/** The drain bounds of `policy`. */
function drainOf(policy: Policy): Drain {
  return { drainTimeout: policy.drainTimeout, drainDeadline: policy.drainDeadline, onDrainTimeout: policy.onDrainTimeout };
}

/**
 * Which closes of `socket` `policy` resets: `policy.reset`, capped by `policy.resetAccepted` on a
 * connection this process accepted.
 */
export function resetScope(socket: net.Socket, policy: Policy): ResetScope {
  const scope = policy.reset;
  if (scope === false || !isAccepted(socket)) return scope;
  const cap = policy.resetAccepted;
  return cap === false ? false : cap === 'timeout' ? 'timeout' : scope;
}

/** Whether closing `socket` for `reason` under `policy` should reset rather than FIN. */
function wantsReset(socket: net.Socket, policy: Policy | undefined, reason: CloseReason): boolean {
  // FIN_WAIT2: the peer has acknowledged our FIN and so every byte; a reset loses nothing and
  // frees the connection now instead of after tcp_fin_timeout.
  if (reason === 'fin-wait') return true;
  // The same for a shutdown that already ended the connection (guard.close() ends every plain
  // connection first): what is left waits in FIN_WAIT for a peer that never answered, and a FIN
  // now would leave it orphaned for tcp_fin_timeout. The reset path drains first, as ever.
  if (reason === 'shutdown' && socket.writableFinished) return true;
  const scope = policy === undefined ? false : resetScope(socket, policy);
  if (scope === false) return false;
  // The peer closed first: this side closes passively (LAST_ACK) and keeps no TIME_WAIT anyway.
  // 'half-closed' is the kernel's word for it (CLOSE_WAIT) even where JavaScript never read the
  // EOF (a paused socket with unread bytes), so a peer that ended cleanly does not get a reset.
  if (socket.readableEnded || reason === 'half-closed') return false;
  // This side's close is the end of an HTTP response body that has no other framing (below): the
  // peer needs the end-of-stream to know the body is complete, and a reset would turn it into an error.
  if (reason === 'close' && (socket as Tuned)[kEndsMessage] === true) return false;
  if (scope === 'always') return true;
  return reason !== 'close' || (socket as Tuned)[kTimedOut] === true;
}

function publish(socket: net.Socket, reason: CloseReason, report: CloseReport, error?: Error): void {
  if (closeChannel.hasSubscribers) closeChannel.publish({ socket, reason, report, error });
}

/**
 * Closes `socket` for `reason` the way its policy says: a safe reset, or `destroy()` (FIN). The
 * socket is destroyed with a typed error (`closeCodes`) when the reason is one and someone listens
 * for `'error'` (`detail` its message, or the error itself when it is one). Resolves with how it
 * ended; also published on the `socktune:close` channel.
 */
export function closeFor(socket: net.Socket, reason: CloseReason, detail: string | Error = `closed by socktune (${reason})`): Promise<CloseReport> {
  const policy = policyOf(socket);
  const error = typeof detail === 'string' ? closeError(reason, detail) : detail;
  if (socket.destroyed) return Promise.resolve({ method: 'none', drained: false, bytesAtRisk: 0, waited: 0 });
  if (wantsReset(socket, policy, reason)) {
    const drain = policy ? drainOf(policy) : { drainTimeout: 0, drainDeadline: false as const, onDrainTimeout: 'reset' as const };
    return resetWith(socket, drain, error).then((report) => {
      publish(socket, reason, report, error);
      return report;
    });
  }
  // FIN, as decided here: the policy's own end()/destroy() would decide again without the reason
  // (and reset a paused half-closed socket that never read its EOF).
  markResetting(socket);
  destroyWith(socket, error);
  const report: CloseReport = { method: 'fin', drained: false, bytesAtRisk: 0, waited: 0 };
  publish(socket, reason, report, error);
  return Promise.resolve(report);
}

/**
 * `end()` under a reset policy: Node's own end (its buffer keeps flushing), and the drain starts
 * now, so a peer that stops acknowledging is given up on `drainTimeout` after it stopped — not
 * after Node's buffer finally reached the kernel, which a stalled reader never lets happen.
 */
function endUnderPolicy(this: net.Socket, ...args: unknown[]): net.Socket {
  const wasEnding = this.writableEnded;
  proto.end.apply(this, args);
  const policy = (this as Tuned)[kPolicy];
  if (wasEnding || (this as Tuned)[kClosing] !== undefined || this.destroyed || this.pending || this.connecting || isResetting(this)) return this;
  if (policy !== undefined && wantsReset(this, policy, 'close')) startClosing(this, policy);
  return this;
}

/** Starts the drain of an `end()` under a reset policy. */
function startClosing(socket: net.Socket, policy: Policy): Closing {
  const closing: Closing = {};
  (socket as Tuned)[kClosing] = closing;
  void drainThenClose(
    socket,
    drainOf(policy),
    () => closing.final !== undefined,
    (report, reset) => {
      closing.done = true;
      finishEnd(socket, closing, report, reset);
    },
    (poll) => (closing.poll = poll),
  );
  return closing;
}

/** How an `end()` under a reset policy finishes, once its drain is over. */
function finishEnd(socket: net.Socket, closing: Closing, report: CloseReport, reset: boolean): void {
  const final = closing.final;
  if (report.method === 'fin') {
    // onDrainTimeout 'fin': Node's own shutdown, now or when its buffer reaches the kernel.
    if (final) proto._final.call(socket, final);
    publish(socket, 'close', report);
    return;
  }
  if (reset && report.drained) {
    // 'finish' first (end()'s callback, then), then the close with SO_LINGER 0: RST. Writable
    // emits 'finish' on the next tick; the destroy follows it, so 'finish' sees a live socket.
    closing.final = undefined;
    final?.();
    process.nextTick(() => {
      if (!socket.destroyed) socket.destroy();
    });
    publish(socket, 'close', report);
    return;
  }
  if (reset) {
    // Gave up with bytes unacknowledged: the application sees it on the socket.
    const error = drainTimeoutError(report);
    publish(socket, 'close', report, error);
    failSocket(socket, error);
    return;
  }
  // The connection went away under the drain (the peer reset, or the kernel gave up).
  closing.final = undefined;
  final?.();
  publish(socket, 'close', report);
  if (!socket.destroyed) socket.destroy();
}

/**
 * `destroy()` under a reset policy while an `end()` waits for its drain with every write in the
 * kernel (Writable's `_final` held): as without a policy, where the FIN would have gone and
 * `'finish'` been emitted by then, `'finish'` comes first, then the destroy (`'error'`, `'close'`).
 * This is the path of a peer that resets during the drain (Node destroys with ECONNRESET).
 */
function destroyUnderPolicy(this: net.Socket, err?: Error | null, cb?: DestroyCallback): net.Socket {
  const self = this as net.Socket & Tuned;
  const closing = self[kClosing];
  const final = closing?.final;
  if (closing !== undefined && final !== undefined && !closing.done && !this.destroyed) {
    closing.final = undefined;
    final();
  }
  const next = self[kNextDestroyMethod] ?? (net.Socket.prototype.destroy as unknown as NonNullable<Tuned[typeof kNextDestroyMethod]>);
  return next.call(this, err, cb);
}

/**
 * Writable calls `_final` once every write has reached the kernel, where Node would shut down the
 * sending side (FIN). Under a reset policy the drain `end()` started decides instead.
 */
function finalUnderPolicy(this: net.Socket, cb: (err?: Error | null) => void): void {
  let closing = (this as Tuned)[kClosing];
  if (closing === undefined) {
    // end() reached Writable without the policy's end() (called on the prototype): drain from here.
    const policy = (this as Tuned)[kPolicy];
    if (policy === undefined || this.pending || isResetting(this) || !wantsReset(this, policy, 'close')) return proto._final.call(this, cb);
    closing = startClosing(this, policy);
  }
  if (closing.done) return proto._final.call(this, cb);
  closing.final = cb;
  closing.poll?.();
}

/**
 * The one `_destroy` shadow: tells the guard the socket is going, then — under a reset policy, for
 * a `destroy()` the application made — resets the connection instead of closing it with FIN:
 * `destroy(err)` resets at once (the stream fails now); a plain `destroy()` first lets the peer
 * acknowledge what is in the kernel's send queue (the socket is destroyed meanwhile, as Node
 * promises; `'close'` follows the reset).
 */
function destroyHook(this: net.Socket, err: Error | null, cb: DestroyCallback): void {
  const self = this as net.Socket & Tuned;
  self[kOnDestroy]?.(this);
  resettable.delete(this);
  const next = self[kNextDestroy] ?? proto._destroy;
  const policy = self[kPolicy];
  if (
    policy === undefined ||
    policy.reset === false ||
    isResetting(this) ||
    this.pending ||
    this.connecting ||
    resetAndClosing(this) ||
    !wantsReset(this, policy, 'close')
  ) {
    return next.call(this, err, cb);
  }
  if (err) {
    // Destroyed with an error: the stream fails now. Reset at once, reporting what was unacknowledged.
    publish(this, 'close', resetNow(this), err);
    return next.call(this, err, cb);
  }
  const now = lingerIfAcknowledged(this);
  if (now !== undefined) {
    markResetting(this);
    publish(this, 'close', now);
    return next.call(this, null, cb);
  }
  // Destroyed for Node from here on, while the connection drains: nothing more is read.
  stopReading(this);
  void drainThenClose(
    this,
    drainOf(policy),
    () => true,
    (report) => {
      if (report.method === 'rst' && !report.drained) {
        const error = drainTimeoutError(report);
        publish(this, 'close', report, error);
        failSocket(this, error, (e) => next.call(this, e, cb));
        return;
      }
      publish(this, 'close', report);
      next.call(this, null, cb);
    },
  );
}

/** Installs the `_destroy` shadow once; a `_destroy` someone else put on the socket runs after it. */
function hookDestroy(socket: net.Socket): void {
  const self = socket as net.Socket & Tuned;
  if (Object.hasOwn(socket, '_destroy')) {
    if (self._destroy === destroyHook) return;
    self[kNextDestroy] = self._destroy;
  }
  self._destroy = destroyHook;
}

/**
 * Calls `onDestroy(socket)` as `socket` is destroyed (before its handle closes), once per destroy;
 * the guard forgets its connections through it. One callback per socket: a later one replaces it.
 */
export function onDestroyed(socket: net.Socket, onDestroy: ((socket: net.Socket) => void) | undefined): void {
  (socket as Tuned)[kOnDestroy] = onDestroy;
  if (onDestroy !== undefined) hookDestroy(socket);
}

/** What `http.server.response.finish` carries (Node's `ServerResponse` fields read here). */
interface ResponseFinish {
  response?: object;
  socket?: net.Socket;
}

/** Marks a tuned connection whose latest response is delimited by the close (kept as FIN then). */
function onResponseFinish(message: unknown): void {
  // The channel is public: anything may be published on it, and a throw here would be uncaught.
  if (typeof message !== 'object' || message === null) return;
  const { response, socket } = message as ResponseFinish;
  if (typeof response !== 'object' || response === null || !(socket instanceof net.Socket)) return;
  // An HTTPS connection may be tuned on its TCP socket or on its TLS socket. Runs for every
  // response of the process: no allocation, and nothing judged for an untuned connection.
  const parent = tlsParent(socket);
  const tunedParent = parent !== undefined && (parent as Tuned)[kPolicy] !== undefined;
  if ((socket as Tuned)[kPolicy] === undefined && !tunedParent) return;
  const ends = responseEndsByClose(response);
  if ((socket as Tuned)[kPolicy] !== undefined) (socket as Tuned)[kEndsMessage] = ends;
  if (tunedParent) (parent as Tuned)[kEndsMessage] = ends;
}

let watchingResponses = false;

/** Subscribes to Node's HTTP server response channel once a reset policy is in use. */
function watchResponses(): void {
  if (watchingResponses) return;
  watchingResponses = true;
  diagnostics.subscribe('http.server.response.finish', onResponseFinish);
}

/**
 * A tuned socket's own `emit`, which notes a `'timeout'` before any listener acts on it (one may
 * destroy() at once), without being a listener: applications and Node's tests count a socket's
 * `'timeout'` listeners. An HTTP server's idle keep-alive connection reaching `keepAliveTimeout`
 * is an ordinary close, not a timed-out connection (no request is waiting on either side).
 */
function emitUnderPolicy(this: net.Socket & Tuned, event: string | symbol, ...args: unknown[]): boolean {
  if (event === 'timeout' && !idleBetweenRequests(this)) this[kTimedOut] = true;
  return (this[kNextEmit] as (...a: unknown[]) => boolean).call(this, event, ...args);
}

function hookEmit(socket: net.Socket): void {
  const self = socket as net.Socket & Tuned;
  if (self[kNextEmit] !== undefined) return;
  self[kNextEmit] = self.emit;
  self.emit = emitUnderPolicy as net.Socket['emit'];
}

/**
 * Open connections whose policy may reset them, so that the ones still open when the process
 * exits are closed the policy's way too (see {@link resetAtExit}). A connection leaves the set as
 * it is destroyed.
 */
const resettable = new Set<net.Socket>();
let exitHooked = false;

/**
 * At `'exit'` the kernel closes every connection still open, each with FIN, so this side keeps a
 * TIME_WAIT per connection (a short job, `process.exit()`, fetch's pool, a gRPC channel). Node
 * gives one synchronous chance: the safe-reset check fits in it. Every connection the policy
 * would reset on an ordinary close (`reset: 'always'`, accepted ones within `resetAccepted`),
 * whose written bytes the peer has all acknowledged and whose peer has not closed first, gets
 * SO_LINGER 0, so the kernel's close sends RST. Anything else keeps FIN: bytes still queued keep
 * being delivered by the kernel.
 */
function resetAtExit(): void {
  for (const socket of resettable) {
    try {
      if (socket.destroyed || socket.connecting) continue;
      const policy = (socket as Tuned)[kPolicy];
      if (policy !== undefined && wantsReset(socket, policy, 'close')) lingerIfAcknowledged(socket);
    } catch {
      // Exiting: a socket whose state cannot be read keeps the kernel's FIN.
    }
  }
  resettable.clear();
}

/** How many connections would be closed the policy's way at exit (tests). @internal */
export function resettableCount(): number {
  return resettable.size;
}

/**
 * Puts `policy` on `socket` for its closes: with `reset` set, `end()` and `destroy()` become the
 * safe reset. Installing again replaces the policy. Instance methods shadow the prototype's; the
 * functions are shared, so a socket costs one property per override.
 */
export function installClose(socket: net.Socket, policy: Policy): void {
  const tuned = socket as unknown as Tuned & { end: typeof endUnderPolicy };
  tuned[kPolicy] = policy;
  const scope = resetScope(socket, policy);
  if (scope === false) {
    resettable.delete(socket);
    return;
  }
  watchResponses();
  if (tuned._final !== finalUnderPolicy) {
    tuned._final = finalUnderPolicy;
    tuned.end = endUnderPolicy;
    const destroy = (socket as unknown as Tuned & { destroy: typeof destroyUnderPolicy }).destroy;
    if (destroy !== destroyUnderPolicy) {
      tuned[kNextDestroyMethod] = destroy;
      (socket as unknown as { destroy: typeof destroyUnderPolicy }).destroy = destroyUnderPolicy;
    }
  }
  hookDestroy(socket);
  if (scope !== 'always') resettable.delete(socket);
  else {
    resettable.add(socket);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', resetAtExit);
    }
  }
  if (scope === 'timeout') hookEmit(socket);
}

/**
 * Forgets how the previous connection of `socket` ended (a drain, a reset, a timeout, the framing
 * of its last response): the socket connects again, and its policy starts afresh on the new
 * connection.
 */
export function renewClose(socket: net.Socket): void {
  const tuned = socket as Tuned;
  for (const key of [kClosing, kTimedOut, kEndsMessage] as const) if (tuned[key] !== undefined) tuned[key] = undefined;
  clearReset(socket);
}

/** Throws unless `socket` is a `net.Socket`: policies are per connection. */
export function assertSocket(socket: unknown): asserts socket is net.Socket {
  if (!readArgument('socket', socket, () => socket instanceof net.Socket)) {
    throw socktuneError(codes.NOT_TCP, 'tune() takes a net.Socket or tls.TLSSocket; use tuneServer() for servers', 'TypeError');
  }
  assertExtensible(socket as object);
}
