/**
 * The one reset path: end a connection with RST (no TIME_WAIT on this side) only once the peer has
 * acknowledged every byte written, give up when the peer stops acknowledging (a no-progress
 * timeout, with an optional cap on the whole wait), and say how many bytes were at risk when it
 * gave up. Every RST socktune sends goes through the drain here.
 * @module
 */
import net from 'node:net';
import diagnostics from 'node:diagnostics_channel';
import { checkInteger } from '../options.js';
import { requirePlatform } from '../views.js';
import { PEER_CLOSED, handleLingerIfDrained, handlePeerClosed, handleLingerZero, handleSendQueue } from './linger.js';
import { assertExtensible, closingHandle, lookupHandle, markErrorEmitted, pendingWriteBytes } from '../handle.js';
import { codes, invalidArgType, invalidArgValue, readArgument, socktuneError } from '../errors.js';
import type { DrainTimeoutAction } from './presets.js';

/** Options of {@link resetClose}. */
export interface ResetCloseOptions {
  /**
   * How long the reset waits while the peer acknowledges nothing new, in milliseconds (default
   * 5000; 0 = do not wait). It restarts whenever the peer acknowledges more, so a slow reader that
   * keeps reading is never cut off; one that stopped is.
   */
  drainTimeout?: number;
  /** A cap on the whole wait, in milliseconds, however the peer progresses (default `false`: none). */
  drainDeadline?: number | false;
  /** What to do when the peer stopped acknowledging (or the deadline passed) with bytes unacknowledged (default `'reset'`). */
  onDrainTimeout?: DrainTimeoutAction;
}

/** How a connection was ended by {@link resetClose} or a policy. */
export interface CloseReport {
  /**
   * `'rst'`: reset (SO_LINGER 0, then close). `'fin'`: ended normally, because the peer had closed
   * first (its FIN had arrived, even unread: kernel state CLOSE_WAIT; this side then keeps no
   * TIME_WAIT anyway, and a reset would turn the peer's clean end into an error) or because the
   * drain timed out under `onDrainTimeout: 'fin'`. `'none'`: there was no connection left to reset
   * (still connecting, or the kernel or the peer closed it first).
   */
  method: 'rst' | 'fin' | 'none';
  /** Whether the peer had acknowledged every byte written when the connection was closed. */
  drained: boolean;
  /**
   * Bytes written but not acknowledged by the peer when the connection was closed: with `'rst'`,
   * bytes the peer may never receive; with `'fin'`, bytes the kernel is still delivering. 0 when drained.
   */
  bytesAtRisk: number;
  /** Milliseconds spent waiting for the send queue to drain. */
  waited: number;
}

/** Why socktune closed a connection (`'close'`: the application's own `end()`/`destroy()`). */
export type CloseReason =
  'close' | 'timeout' | 'idle' | 'heartbeat' | 'half-closed' | 'fin-wait' | 'dead' | 'shutdown' | 'stale' | 'max-age' | 'too-many-pings';

/** A message of {@link closeChannel}: one close socktune performed. */
export interface CloseMessage {
  /** The connection. */
  socket: net.Socket;
  /** Why it was closed. */
  reason: CloseReason;
  /** How it was closed. */
  report: CloseReport;
  /** The error the socket was destroyed with, if any: a deadline's (its `code` one of `closeCodes`), a drain timeout's, the kernel's. */
  error: (Error & { code?: string }) | undefined;
}

/**
 * Who closed a connection first: the peer's FIN or RST, or this side's FIN (`end()`; `destroy()` of
 * a connection still open both ways) or RST (SO_LINGER 0: a reset by socktune or
 * `resetAndDestroy()`; bytes left unread at close; the kernel giving up on a vanished peer).
 */
export type ConnectionInitiator = 'peer-fin' | 'peer-rst' | 'local-end' | 'local-destroy' | 'local-rst';

/** How one TCP connection of the process ended (`socktune/register`). */
export interface ConnectionEnd {
  /** Who closed first, and how. */
  initiator: ConnectionInitiator;
  /**
   * Why: socktune's reason when it closed it (`'idle'`, `'half-closed'`, ...), the error code it
   * ended with (`'ECONNRESET'`, `'ETIMEDOUT'`, ...), `'timeout'` (the socket's own timeout),
   * `'unread-data'` (destroyed with bytes unread: the kernel resets), else `'application'` or `'peer'`.
   */
  cause: string;
  /** `'opened'` by this process or `'accepted'` by one of its servers. */
  direction: 'opened' | 'accepted';
  /** Milliseconds from connected (or accepted) to closed. */
  lifetime: number;
  /** Bytes read and written by Node on it. */
  bytesRead: number;
  bytesWritten: number;
  /** The kernel's TCP state when the fd closed, where it was read (`undefined` when Node already knew). */
  state: string | undefined;
  /** Where the connection was created (`SOCKTUNE_TRACE=1`). */
  origin?: string;
}

/** A message of {@link closeChannel} for every connection that ends under `socktune/register`. */
export interface ConnectionEndMessage {
  socket: net.Socket;
  end: ConnectionEnd;
  /** The error the socket was destroyed with, if any. */
  error: Error | undefined;
}

/**
 * A `diagnostics_channel` channel whose messages are of type `M`: Node's `Channel`, typed for
 * subscribers.
 */
export interface TypedChannel<M> {
  /** The channel's name (`'socktune:close'`). */
  readonly name: string | symbol;
  /** Whether anything is subscribed. */
  readonly hasSubscribers: boolean;
  /** Calls `onMessage` with every message published from now on. */
  subscribe(onMessage: (message: M, name: string | symbol) => void): void;
  /** Stops calling `onMessage`; `false` when it was not subscribed. */
  unsubscribe(onMessage: (message: M, name: string | symbol) => void): boolean;
  /** Sends `message` to every subscriber. */
  publish(message: M): void;
}

/**
 * The `socktune:close` diagnostics channel: a {@link CloseMessage} `{ socket, reason, report, error }`
 * for every close a policy or a guard performs (not for a `resetClose` called by hand, whose report
 * is its promise's), and under `socktune/register` a {@link ConnectionEndMessage}
 * `{ socket, end, error }` for every TCP connection of the process as it ends, whoever closed it
 * (`'end' in message` tells them apart). Node's own channel object:
 * `diagnostics_channel.subscribe('socktune:close', ...)` reaches the same messages.
 */
export const closeChannel = diagnostics.channel('socktune:close') as unknown as TypedChannel<CloseMessage | ConnectionEndMessage>;

/** The drain settings every reset path takes, validated. */
export interface Drain {
  drainTimeout: number;
  drainDeadline: number | false;
  onDrainTimeout: DrainTimeoutAction;
}

const kPending = Symbol('socktune.reset');
const kResetting = Symbol('socktune.resetting');
const POLL_MIN = 1;
const POLL_MAX = 25;
const NEVER = Number.POSITIVE_INFINITY;

interface Resetting {
  [kPending]?: Promise<CloseReport>;
  [kResetting]?: boolean;
}

/** Whether a reset of `socket` has started (its own `end()` and `destroy()` then take Node's path). */
export function isResetting(socket: net.Socket): boolean {
  return (socket as Resetting)[kResetting] === true;
}

/** Forgets the reset of a previous connection of `socket` (it connects again). @internal */
export function clearReset(socket: net.Socket): void {
  const s = socket as Resetting;
  if (s[kResetting] !== undefined) s[kResetting] = undefined;
  if (s[kPending] !== undefined) s[kPending] = undefined;
}

/** Marks `socket` as being reset by the caller. @internal */
export function markResetting(socket: net.Socket): void {
  (socket as Resetting)[kResetting] = true;
}

/** Destroys with `error` only if someone listens for it; an unheard `'error'` would crash the process. */
export function destroyWith(socket: net.Socket, error?: Error): void {
  if (error && socket.listenerCount('error') > 0) socket.destroy(error);
  else socket.destroy();
}

/**
 * Destroys `socket` with `error` so the application sees it on the socket itself — `socket.errored`,
 * `'close'` with `hadError` true, the callback of `end()` — but emits `'error'` only when someone
 * listens for it: an unheard `'error'` would crash a process whose code never expected one.
 */
export function failSocket(socket: net.Socket, error: Error, destroy: (err: Error) => void = (err) => socket.destroy(err)): void {
  // Node emits 'error' once per stream; marked as emitted, it keeps the error and stays quiet.
  if (socket.listenerCount('error') === 0) markErrorEmitted(socket);
  destroy(error);
}

/** The error a connection is failed with when a reset had to give up on unacknowledged bytes. */
export function drainTimeoutError(report: CloseReport): Error & { code: string; bytesAtRisk: number; report: CloseReport } {
  const err = socktuneError(
    codes.DRAIN_TIMEOUT,
    `The peer stopped acknowledging: ${report.bytesAtRisk} bytes written were not acknowledged when the connection was reset after ${Math.round(report.waited)} ms`,
  ) as Error & { code: string; bytesAtRisk: number; report: CloseReport };
  err.bytesAtRisk = report.bytesAtRisk;
  err.report = report;
  return err;
}

/** Validates reset options into the drain settings. */
export function drainOptions(options: unknown, name = 'options'): Drain {
  if (typeof options !== 'object' || options === null || readArgument(name, options, () => Array.isArray(options)))
    throw invalidArgType(name, 'of type object', options);
  const { drainTimeout, drainDeadline, onDrainTimeout } = readArgument(name, options, () => ownOptions(options, name));
  const drain: Drain = {
    drainTimeout: drainTimeout === undefined ? 5000 : checkInteger(`${name}.drainTimeout`, drainTimeout, { min: 0, max: 2 ** 31 - 1 }),
    drainDeadline:
      drainDeadline === undefined || drainDeadline === false ? false : checkInteger(`${name}.drainDeadline`, drainDeadline, { min: 0, max: 2 ** 31 - 1 }),
    onDrainTimeout: (onDrainTimeout ?? 'reset') as DrainTimeoutAction,
  };
  if (drain.onDrainTimeout !== 'reset' && drain.onDrainTimeout !== 'fin') {
    throw invalidArgValue(`${name}.onDrainTimeout`, onDrainTimeout, "must be 'reset' or 'fin'");
  }
  return drain;
}

const resetKeys = ['drainTimeout', 'drainDeadline', 'onDrainTimeout'];

/** The own fields of reset options, each read once; unknown ones are errors. */
function ownOptions(options: object, name: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(options)) {
    if (!resetKeys.includes(key)) throw invalidArgValue(name, key, `has no option '${key}'; known: ${resetKeys.join(', ')}`);
    out[key] = (options as Record<string, unknown>)[key];
  }
  return out;
}

/** Bytes written and not acknowledged yet (Node's buffer, libuv's queue, the kernel send queue); -1 if the handle is gone. */
function unacknowledged(socket: net.Socket, handle: object): number {
  try {
    return pendingWriteBytes(socket) + handleSendQueue(handle);
  } catch {
    return -1;
  }
}

/** The live handle of `socket`, or undefined when it has none left to reset. */
function handleOf(socket: net.Socket): object | undefined {
  try {
    return closingHandle(socket);
  } catch {
    return undefined;
  }
}

/** What a drain came to. */
interface DrainEnd {
  /**
   * `'drained'`: every byte acknowledged and SO_LINGER 0 set (close now); `'peer-closed'`: every
   * byte acknowledged, but the peer's FIN has arrived, so nothing was set (close with FIN);
   * `'timeout'`: gave up; `'gone'`: the handle closed under it.
   */
  outcome: 'drained' | 'peer-closed' | 'timeout' | 'gone';
  /** Bytes unacknowledged at the end (at the last reading, for `'gone'`). */
  left: number;
  waited: number;
}

/**
 * Waits until the peer has acknowledged every byte written — then sets SO_LINGER 0 in the same
 * native call that saw the queue empty, so the caller's close sends RST — or until no byte has
 * been newly acknowledged for `drainTimeout` (or `drainDeadline` passed). `ready()` says whether
 * the caller can close yet (a policy's `end()` must wait for Node's `_final` even when drained).
 * Polls with backoff from 1 to 25 ms; one ioctl per poll.
 */
function drain(socket: net.Socket, handle: object, d: Drain, ready: () => boolean, wake?: (poll: () => void) => void): Promise<DrainEnd> {
  const start = performance.now();
  const deadline = d.drainDeadline === false ? NEVER : start + d.drainDeadline;
  return new Promise<DrainEnd>((resolve) => {
    let least = NEVER;
    let progressAt = start;
    let delay = POLL_MIN;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (end: DrainEnd): void => {
      done = true;
      clearTimeout(timer);
      socket.off('close', onClose);
      resolve(end);
    };
    // The peer reset, or the kernel gave up, first: whatever was unacknowledged is lost.
    const onClose = (): void => finish({ outcome: 'gone', left: least === NEVER ? 0 : least, waited: performance.now() - start });
    socket.once('close', onClose);
    const poll = (): void => {
      if (done) return;
      clearTimeout(timer);
      const now = performance.now();
      let left: number;
      let pending: number;
      try {
        pending = pendingWriteBytes(socket);
      } catch {
        pending = -1; // a socket whose write state cannot be read: unacknowledged() says it is gone
      }
      if (pending === 0 && ready()) {
        // Nothing left in Node or libuv: one native call reads the kernel's send queue and, when it
        // is empty, sets SO_LINGER 0 (the common case: one ioctl and one setsockopt in all).
        try {
          left = handleLingerIfDrained(handle);
        } catch {
          return finish({ outcome: 'gone', left: least === NEVER ? 0 : least, waited: now - start });
        }
        if (left === 0) return finish({ outcome: 'drained', left: 0, waited: now - start });
        if (left === PEER_CLOSED) return finish({ outcome: 'peer-closed', left: 0, waited: now - start });
      } else {
        left = unacknowledged(socket, handle);
        if (left < 0) return finish({ outcome: 'gone', left: least === NEVER ? 0 : least, waited: now - start });
      }
      if (left < least) {
        // The peer acknowledged more (or libuv moved bytes on): progress restarts the timeout.
        least = left;
        progressAt = now;
        delay = POLL_MIN;
      }
      if (left > 0 && (now - progressAt >= d.drainTimeout || now >= deadline)) return finish({ outcome: 'timeout', left, waited: now - start });
      delay = Math.min(delay * 2, POLL_MAX);
      const until = Math.min(progressAt + d.drainTimeout, deadline) - now;
      timer = setTimeout(poll, Math.max(1, Math.min(delay, until)));
    };
    wake?.(poll);
    if (d.drainTimeout === 0) poll();
    else timer = setTimeout(poll, 0);
  });
}

/**
 * Ends `socket` with RST instead of FIN, so this side keeps no TIME_WAIT — after the peer has
 * acknowledged every byte written (Node's buffer, libuv's queue and the kernel send queue are
 * empty). If the peer stops acknowledging for `drainTimeout` (or `drainDeadline` passes), follows
 * `onDrainTimeout` and reports the bytes at risk. Works on `net.Socket` and `tls.TLSSocket` (where
 * Node's `resetAndDestroy` throws).
 *
 * The local side sees no error: the socket emits `'close'` without one. The peer sees every
 * acknowledged byte, then ECONNRESET. "Acknowledged" is the peer's kernel: an application that had
 * not read those bytes yet when the RST landed may lose them (Node.js 24+ does for a paused
 * socket; RFC 793 allows it) or see a plain end-of-stream (libuv); use it where the protocol shows
 * the peer consumed the data (it answered). With `onDrainTimeout: 'reset'` the report is the one
 * reliable signal of bytes not delivered. A connection the peer closed first (its FIN has arrived,
 * read or not: kernel state CLOSE_WAIT) ends with FIN once drained (`method: 'fin'`): this side
 * keeps no TIME_WAIT after a passive close, and a reset would only turn the peer's clean end into
 * an error. Calling it again on the same socket returns the same promise.
 *
 * @param socket a connected TCP or TLS socket
 * @param options drain bounds and the action past them
 * @returns how the connection ended
 */
export function resetClose(socket: net.Socket, options: ResetCloseOptions = {}): Promise<CloseReport> {
  if (!readArgument('socket', socket, () => socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket or tls.TLSSocket', socket);
  return resetWith(socket, drainOptions(options));
}

/**
 * {@link resetClose} with validated settings, destroying with `error` (when the socket has an
 * `'error'` listener to take it); `endWithFin` is the normal close used when the drain times out
 * under `onDrainTimeout: 'fin'`.
 * @internal
 */
export function resetWith(socket: net.Socket, d: Drain, error?: Error, endWithFin: () => void = () => socket.end()): Promise<CloseReport> {
  // Without the send-queue size there is no way to know the peer has everything: refuse, rather
  // than reset blind or fall back silently.
  requirePlatform('queues', 'resetClose (it waits for SIOCOUTQ to drain)');
  const pending = (socket as Resetting)[kPending];
  if (pending) return pending;
  // A destroyed, spoofed, non-TCP or never-connected socket is a coded error, before anything is touched.
  lookupHandle(socket);
  assertExtensible(socket);
  markResetting(socket);
  const promise = run(socket, d, error, endWithFin);
  (socket as Resetting)[kPending] = promise;
  return promise;
}

const DRAINED: CloseReport = Object.freeze({ method: 'rst', drained: true, bytesAtRisk: 0, waited: 0 }) as CloseReport;
/** Every byte acknowledged, and the peer had closed first: a FIN ends it. */
const PEER_FIRST: CloseReport = Object.freeze({ method: 'fin', drained: true, bytesAtRisk: 0, waited: 0 }) as CloseReport;
const NONE: CloseReport = Object.freeze({ method: 'none', drained: false, bytesAtRisk: 0, waited: 0 }) as CloseReport;

/**
 * The reset's common case without a promise: if the peer has acknowledged everything written,
 * sets SO_LINGER 0 (the next close sends RST) and returns the report — or, when the peer had
 * closed first, sets nothing and returns a `'fin'` report; otherwise touches nothing and returns
 * undefined. The caller closes.
 * @internal
 */
export function lingerIfAcknowledged(socket: net.Socket): CloseReport | undefined {
  if (socket.connecting || isResetting(socket) || pendingWriteBytes(socket) !== 0) return undefined;
  const handle = handleOf(socket);
  if (handle === undefined) return undefined;
  try {
    const left = handleLingerIfDrained(handle);
    return left === 0 ? DRAINED : left === PEER_CLOSED ? PEER_FIRST : undefined;
  } catch {
    return undefined;
  }
}

function run(socket: net.Socket, d: Drain, error: Error | undefined, endWithFin: () => void): Promise<CloseReport> {
  const handle = socket.connecting ? undefined : handleOf(socket);
  if (handle === undefined) {
    destroyWith(socket, error);
    return Promise.resolve(socket.connecting ? { ...NONE, drained: true } : NONE);
  }
  return drain(socket, handle, d, () => true).then(({ outcome, left, waited }) => {
    if (outcome === 'gone') return { method: 'none', drained: false, bytesAtRisk: left, waited } satisfies CloseReport;
    if (outcome === 'drained' || outcome === 'peer-closed') {
      destroyWith(socket, error);
      return { method: outcome === 'drained' ? 'rst' : 'fin', drained: true, bytesAtRisk: 0, waited } satisfies CloseReport;
    }
    if (d.onDrainTimeout === 'fin') {
      // A normal close: Node flushes its buffer, then FIN; the kernel keeps delivering.
      endWithFin();
      return { method: 'fin', drained: false, bytesAtRisk: left, waited } satisfies CloseReport;
    }
    const reset = lingerZero(handle);
    destroyWith(socket, error);
    return { method: reset ? 'rst' : 'none', drained: false, bytesAtRisk: left, waited } satisfies CloseReport;
  });
}

/** Whether the peer's FIN has arrived on `handle` (false when that cannot be read). */
function peerClosed(handle: object): boolean {
  try {
    return handlePeerClosed(handle);
  } catch {
    return false;
  }
}

function lingerZero(handle: object): boolean {
  try {
    handleLingerZero(handle);
    return true;
  } catch {
    return false; // the handle is gone or the kernel closed the connection: nothing left to reset
  }
}

/**
 * A policy's close that has begun (`end()` or `destroy()`): drains with the policy's bounds, then
 * `close(report, reset)` runs once — `reset` says SO_LINGER 0 is set (the close sends RST).
 * `ready()` says whether the close may happen yet (for `end()`: Node has called `_final`, so every
 * write is in the kernel); `wake` lets the caller poll at once when that changes.
 * @internal
 */
export function drainThenClose(
  socket: net.Socket,
  d: Drain,
  ready: () => boolean,
  close: (report: CloseReport, reset: boolean) => void,
  wake?: (poll: () => void) => void,
): Promise<CloseReport> {
  markResetting(socket);
  const handle = handleOf(socket);
  if (handle === undefined) {
    close(NONE, false);
    return Promise.resolve(NONE);
  }
  const promise = drain(socket, handle, d, ready, wake).then(({ outcome, left, waited }) => {
    let report: CloseReport;
    if (outcome === 'drained') {
      report = { method: 'rst', drained: true, bytesAtRisk: 0, waited };
      close(report, true);
    } else if (outcome === 'peer-closed') {
      report = { method: 'fin', drained: true, bytesAtRisk: 0, waited };
      close(report, false);
    } else if (outcome === 'gone') {
      report = { method: 'none', drained: false, bytesAtRisk: left, waited };
      close(report, false);
    } else if (d.onDrainTimeout === 'fin') {
      report = { method: 'fin', drained: false, bytesAtRisk: left, waited };
      close(report, false);
    } else {
      const reset = lingerZero(handle);
      report = { method: reset ? 'rst' : 'none', drained: false, bytesAtRisk: left, waited };
      close(report, reset);
    }
    return report;
  });
  (socket as Resetting)[kPending] = promise;
  return promise;
}

/**
 * Sets SO_LINGER 0 now, whatever is still queued (`destroy(err)` under a reset policy: the stream
 * fails now). Returns the report: the bytes written and not acknowledged are the ones at risk.
 * @internal
 */
export function resetNow(socket: net.Socket): CloseReport {
  markResetting(socket);
  const handle = handleOf(socket);
  if (handle === undefined) return NONE;
  const left = unacknowledged(socket, handle);
  if (left === 0 && peerClosed(handle)) return PEER_FIRST;
  if (left < 0 || !lingerZero(handle)) return NONE;
  return { method: 'rst', drained: left === 0, bytesAtRisk: left, waited: 0 };
}
