/**
 * The one reset path: end a connection with RST (no TIME_WAIT on this side) only once the peer has
 * acknowledged every byte written, bounded by a drain timeout, and say how many bytes were at risk
 * when the bound was hit. Every RST socktune sends goes through `resetClose`.
 * @module
 */
import net from 'node:net';
import diagnostics from 'node:diagnostics_channel';
import { checkInteger, configure, lingerIfDrained, requirePlatform, sendQueueBytes } from '../options.js';
import { pendingWriteBytes } from '../handle.js';
import { codes, invalidArgType, invalidArgValue, socktuneError } from '../errors.js';
import type { DrainTimeoutAction } from './presets.js';

/** Options of {@link resetClose}. */
export interface ResetCloseOptions {
  /** How long to wait for the peer to acknowledge everything written, in milliseconds (default 5000; 0 = do not wait). */
  drainTimeout?: number;
  /** What to do when `drainTimeout` passes with bytes unacknowledged (default `'reset'`). */
  onDrainTimeout?: DrainTimeoutAction;
}

/** How a connection was ended by {@link resetClose}. */
export interface CloseReport {
  /**
   * `'rst'`: reset (SO_LINGER 0, then close). `'fin'`: the drain timeout passed and
   * `onDrainTimeout: 'fin'` ended it normally. `'none'`: there was no connection left to reset (still
   * connecting, or the kernel or the peer closed it first).
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

/** Messages published for every close socktune performs: `{ socket, reason, report }`. */
export const closeChannel = diagnostics.channel('socktune:close');

/** Why socktune closed a connection (`'close'`: the application's own `end()`/`destroy()`). */
export type CloseReason = 'close' | 'timeout' | 'idle' | 'heartbeat' | 'half-closed' | 'fin-wait' | 'dead' | 'shutdown' | 'stale';

const kPending = Symbol('socktune.reset');
const kResetting = Symbol('socktune.resetting');
const POLL_MIN = 1;
const POLL_MAX = 25;

interface Resetting {
  [kPending]?: Promise<CloseReport>;
  [kResetting]?: boolean;
}

/** Whether a reset of `socket` has started (its own `end()` then means FIN, from `onDrainTimeout: 'fin'`). */
export function isResetting(socket: net.Socket): boolean {
  return (socket as Resetting)[kResetting] === true;
}

/** Sets SO_LINGER 0 and destroys: close() then sends RST and frees the socket at once. */
function rst(socket: net.Socket, error?: Error): boolean {
  try {
    configure(socket, { linger: 0 });
  } catch {
    // The handle is gone or the kernel closed the connection: nothing left to reset.
    destroyWith(socket, error);
    return false;
  }
  destroyWith(socket, error);
  return true;
}

/** Destroys with `error` only if someone listens for it; an unheard `'error'` would crash the process. */
export function destroyWith(socket: net.Socket, error?: Error): void {
  if (error && socket.listenerCount('error') > 0) socket.destroy(error);
  else socket.destroy();
}

/**
 * Bytes not yet acknowledged: still in Node or libuv, plus the kernel send queue. 0 means none, and
 * then SO_LINGER 0 is already set (one native call), so the caller must close now. -1 if the
 * socket is gone.
 */
function unacknowledged(socket: net.Socket): number {
  if (socket.destroyed) return -1;
  const pending = pendingWriteBytes(socket);
  try {
    return pending > 0 ? pending + sendQueueBytes(socket) : lingerIfDrained(socket);
  } catch {
    return -1;
  }
}

/**
 * Ends `socket` with RST instead of FIN, so this side keeps no TIME_WAIT — after the peer has
 * acknowledged every byte written (Node's buffer, libuv's queue and the kernel send queue are
 * empty). If that takes longer than `drainTimeout`, follows `onDrainTimeout` and reports the bytes
 * at risk. Works on `net.Socket` and `tls.TLSSocket` (where Node's `resetAndDestroy` throws).
 *
 * The local side sees no error: the socket emits `'close'` without one. The peer sees every
 * acknowledged byte, then ECONNRESET. "Acknowledged" is the peer's kernel: an application that had
 * not read those bytes yet when the RST landed may lose them (Node.js 24+ does for a paused
 * socket; RFC 793 allows it) or see a plain end-of-stream (libuv); use it where the protocol shows
 * the peer consumed the data (it answered). With `onDrainTimeout: 'reset'` the report is the one
 * reliable signal of bytes not delivered. Calling it again on the same socket returns the same promise.
 *
 * @param socket a connected TCP or TLS socket
 * @param options drain bound and the action past it
 * @returns how the connection ended
 */
export function resetClose(socket: net.Socket, options: ResetCloseOptions = {}): Promise<CloseReport> {
  return resetWith(socket, options);
}

/**
 * {@link resetClose}, destroying with `error` (when the socket has an `'error'` listener to take it;
 * an unheard `'error'` would crash the process); `endWithFin` is the normal close used when the
 * drain timeout passes under `onDrainTimeout: 'fin'`.
 * @internal
 */
export function resetWith(socket: net.Socket, options: ResetCloseOptions, error?: Error, endWithFin: () => void = () => socket.end()): Promise<CloseReport> {
  if (!(socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket or tls.TLSSocket', socket);
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'of type object', options);
  const drainTimeout = options.drainTimeout === undefined ? 5000 : checkInteger('options.drainTimeout', options.drainTimeout, { min: 0, max: 2 ** 31 - 1 });
  const onDrainTimeout = options.onDrainTimeout ?? 'reset';
  if (onDrainTimeout !== 'reset' && onDrainTimeout !== 'fin') {
    throw invalidArgValue('options.onDrainTimeout', onDrainTimeout, "must be 'reset' or 'fin'");
  }
  // Without the send-queue size there is no way to know the peer has everything: refuse, rather
  // than reset blind or fall back silently.
  requirePlatform('queues', 'resetClose (it waits for SIOCOUTQ to drain)');
  const pending = (socket as Resetting)[kPending];
  if (pending) return pending;
  if (socket.destroyed) throw socktuneError(codes.SOCKET_CLOSED, 'The socket is destroyed');
  // Marked before run(): its fast path destroys synchronously, and a policy's destroy() must see the reset under way.
  (socket as Resetting)[kResetting] = true;
  const promise = run(socket, drainTimeout, onDrainTimeout, error, endWithFin);
  (socket as Resetting)[kPending] = promise;
  return promise;
}

const DRAINED: CloseReport = Object.freeze({ method: 'rst', drained: true, bytesAtRisk: 0, waited: 0 }) as CloseReport;

/**
 * The reset's common case without a promise: if the peer has acknowledged everything written,
 * resets `socket` now and returns the report; otherwise touches nothing and returns undefined.
 * @internal
 */
export function resetIfDrained(socket: net.Socket, error?: Error): CloseReport | undefined {
  if (socket.destroyed || socket.connecting || (socket as Resetting)[kResetting] === true) return undefined;
  if (pendingWriteBytes(socket) !== 0) return undefined;
  let left: number;
  try {
    left = lingerIfDrained(socket);
  } catch {
    return undefined;
  }
  if (left !== 0) return undefined;
  (socket as Resetting)[kResetting] = true;
  destroyWith(socket, error);
  return DRAINED;
}

function run(socket: net.Socket, drainTimeout: number, onDrainTimeout: DrainTimeoutAction, error: Error | undefined, endWithFin: () => void): Promise<CloseReport> {
  const rstNow = (s: net.Socket): boolean => rst(s, error);
  if (socket.connecting) {
    destroyWith(socket, error);
    return Promise.resolve({ method: 'none', drained: true, bytesAtRisk: 0, waited: 0 });
  }
  const first = unacknowledged(socket);
  // The common case (a request-response connection): everything is acknowledged already, and the
  // same native call set the zero linger; close() now sends RST.
  if (first === 0) {
    destroyWith(socket, error);
    return Promise.resolve({ method: 'rst', drained: true, bytesAtRisk: 0, waited: 0 });
  }
  if (first < 0) {
    destroyWith(socket, error);
    return Promise.resolve({ method: 'none', drained: false, bytesAtRisk: 0, waited: 0 });
  }
  const start = performance.now();
  return new Promise<CloseReport>((resolve) => {
    let last = first;
    let delay = POLL_MIN;
    let timer: NodeJS.Timeout | undefined;
    const finish = (report: CloseReport): void => {
      clearTimeout(timer);
      socket.off('close', onClose);
      resolve(report);
    };
    // The peer reset or the kernel gave up first: whatever was unacknowledged is lost.
    const onClose = (): void => finish({ method: 'none', drained: false, bytesAtRisk: last, waited: performance.now() - start });
    socket.once('close', onClose);
    const poll = (): void => {
      const left = unacknowledged(socket);
      const waited = performance.now() - start;
      if (left < 0) return finish({ method: 'none', drained: false, bytesAtRisk: last, waited });
      last = left;
      if (left === 0) {
        socket.off('close', onClose);
        destroyWith(socket, error);
        return finish({ method: 'rst', drained: true, bytesAtRisk: 0, waited });
      }
      if (waited >= drainTimeout) {
        socket.off('close', onClose);
        if (onDrainTimeout === 'fin') {
          // A normal close: Node flushes its buffer, then FIN; the kernel keeps delivering.
          endWithFin();
          return finish({ method: 'fin', drained: false, bytesAtRisk: left, waited });
        }
        return finish({ method: rstNow(socket) ? 'rst' : 'none', drained: false, bytesAtRisk: left, waited });
      }
      delay = Math.min(delay * 2, POLL_MAX);
      timer = setTimeout(poll, Math.min(delay, Math.max(1, drainTimeout - waited)));
    };
    timer = setTimeout(poll, drainTimeout === 0 ? 0 : POLL_MIN);
  });
}
