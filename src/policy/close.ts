/**
 * How a connection under a policy ends. With RST-on-close, the socket's own `end()` and
 * `destroy()` keep their meaning for the application (the connection closes) but the policy
 * decides how: a safe reset through {@link resetWith} instead of FIN. Deadlines of the guard close
 * through {@link closeFor} with a reason.
 * @module
 */
import net from 'node:net';
import { codes, socktuneError } from '../errors.js';
import type { Policy } from './presets.js';
import { closeChannel, isResetting, resetIfDrained, resetWith, type CloseReason, type CloseReport } from './reset.js';

const kPolicy = Symbol('socktune.policy');
const kTimedOut = Symbol('socktune.timedOut');

interface Tuned {
  [kPolicy]?: Policy;
  [kTimedOut]?: boolean;
  _final?: (cb: (err?: Error | null) => void) => void;
}

const proto = net.Socket.prototype as unknown as {
  _final: (this: net.Socket, cb: (err?: Error | null) => void) => void;
  destroy: (this: net.Socket, err?: Error) => net.Socket;
};

/** The policy `tune` put on `socket`, if any. */
export function policyOf(socket: net.Socket): Policy | undefined {
  return (socket as Tuned)[kPolicy];
}

/** Typed errors for the connections a policy closes (`error.code`, `error.reason`). */
export const closeCodes = {
  idle: 'ERR_SOCKTUNE_IDLE_TIMEOUT',
  heartbeat: 'ERR_SOCKTUNE_HEARTBEAT_TIMEOUT',
  'half-closed': 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT',
  'fin-wait': 'ERR_SOCKTUNE_FIN_WAIT_TIMEOUT',
  shutdown: 'ERR_SOCKTUNE_SHUTDOWN',
} as const;

/** The error a connection closed for `reason` is destroyed with, or undefined for reasons that are not errors. */
export function closeError(reason: CloseReason, detail: string): (Error & { code: string; reason: CloseReason }) | undefined {
  const code = (closeCodes as Record<string, string>)[reason];
  if (code === undefined) return undefined;
  const err = socktuneError(code, detail) as Error & { code: string; reason: CloseReason };
  err.reason = reason;
  return err;
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
  if (policy === undefined || policy.reset === false) return false;
  // The peer closed first: this side closes passively (LAST_ACK) and keeps no TIME_WAIT anyway.
  // 'half-closed' is the kernel's word for it (CLOSE_WAIT) even where JavaScript never read the
  // EOF (a paused socket with unread bytes), so a peer that ended cleanly does not get a reset.
  if (socket.readableEnded || reason === 'half-closed') return false;
  if (policy.reset === 'always') return true;
  return reason !== 'close' || (socket as Tuned)[kTimedOut] === true;
}

function publish(socket: net.Socket, reason: CloseReason, report: CloseReport, error?: Error): void {
  if (closeChannel.hasSubscribers) closeChannel.publish({ socket, reason, report, error });
}

/**
 * Closes `socket` for `reason` the way its policy says: a safe reset, or `destroy()` (FIN). The
 * socket is destroyed with a typed error (`closeCodes`) when the reason is one and someone listens
 * for `'error'`. Resolves with how it ended; also published on the `socktune:close` channel.
 */
export function closeFor(socket: net.Socket, reason: CloseReason, detail = `closed by socktune (${reason})`): Promise<CloseReport> {
  const policy = policyOf(socket);
  const error = closeError(reason, detail);
  if (socket.destroyed) return Promise.resolve({ method: 'none', drained: false, bytesAtRisk: 0, waited: 0 });
  if (wantsReset(socket, policy, reason)) {
    const options = policy ? { drainTimeout: policy.drainTimeout, onDrainTimeout: policy.onDrainTimeout } : { drainTimeout: 0 };
    return resetWith(socket, options, error).then((report) => {
      publish(socket, reason, report, error);
      return report;
    });
  }
  // FIN, as decided here. The socket's own destroy() may be the policy's, which would decide
  // again without the reason (and reset a paused half-closed socket that never read its EOF).
  if (error && socket.listenerCount('error') > 0) proto.destroy.call(socket, error);
  else proto.destroy.call(socket);
  const report: CloseReport = { method: 'fin', drained: false, bytesAtRisk: 0, waited: 0 };
  publish(socket, reason, report, error);
  return Promise.resolve(report);
}

/**
 * Writable calls `_final` once every write has reached the kernel, where Node would shut down the
 * sending side (FIN). Under a reset policy, reset instead.
 */
function finalUnderPolicy(this: net.Socket, cb: (err?: Error | null) => void): void {
  const policy = policyOf(this);
  if (this.pending || isResetting(this) || !wantsReset(this, policy, 'close')) return proto._final.call(this, cb);
  const now = resetIfDrained(this);
  if (now !== undefined) {
    publish(this, 'close', now);
    return cb();
  }
  resetWith(this, { drainTimeout: policy!.drainTimeout, onDrainTimeout: policy!.onDrainTimeout }, undefined, () => proto._final.call(this, cb)).then(
    (report) => {
      publish(this, 'close', report);
      if (report.method !== 'fin') cb();
    },
    cb,
  );
}

function destroyUnderPolicy(this: net.Socket, err?: Error): net.Socket {
  const policy = policyOf(this);
  if (this.destroyed || this.pending || isResetting(this) || !wantsReset(this, policy, 'close')) return proto.destroy.call(this, err);
  if (err) {
    // Destroyed with an error: the stream must fail now. Reset at once, reporting what was unacknowledged.
    resetWith(this, { drainTimeout: 0, onDrainTimeout: 'reset' }, err).then((report) => publish(this, 'close', report, err));
    if (!this.destroyed) proto.destroy.call(this, err);
    return this;
  }
  const now = resetIfDrained(this);
  if (now !== undefined) publish(this, 'close', now);
  else resetWith(this, { drainTimeout: policy!.drainTimeout, onDrainTimeout: policy!.onDrainTimeout }).then((report) => publish(this, 'close', report));
  return this;
}

function markTimedOut(this: net.Socket): void {
  (this as Tuned)[kTimedOut] = true;
}

/**
 * Puts `policy` on `socket` for its closes: with `reset` set, `end()` and `destroy()` become the
 * safe reset. Installing again replaces the policy. Instance methods shadow the prototype's; the
 * functions are shared, so a socket costs one property per override.
 */
export function installClose(socket: net.Socket, policy: Policy): void {
  const tuned = socket as unknown as Tuned & { destroy: typeof destroyUnderPolicy };
  tuned[kPolicy] = policy;
  if (policy.reset === false) return;
  if (tuned._final !== finalUnderPolicy) {
    tuned._final = finalUnderPolicy;
    tuned.destroy = destroyUnderPolicy;
  }
  // Prepended: an application 'timeout' listener added earlier may destroy() at once.
  if (policy.reset === 'timeout' && !socket.listeners('timeout').includes(markTimedOut)) socket.prependListener('timeout', markTimedOut);
}

/** Throws unless `socket` is a `net.Socket`: policies are per connection. */
export function assertSocket(socket: unknown): asserts socket is net.Socket {
  if (!(socket instanceof net.Socket)) {
    throw socktuneError(codes.NOT_TCP, 'tune() takes a net.Socket or tls.TLSSocket; use tuneServer() for servers', 'TypeError');
  }
}
