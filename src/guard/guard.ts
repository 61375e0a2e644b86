/**
 * The connection guard: finds connections the application will never close (CLOSE_WAIT, FIN_WAIT2,
 * idle, silent after a heartbeat, dead in the kernel) and closes them on deadlines through the
 * policy, with statistics and events as evidence.
 *
 * One timer per guard, no timer or listener per event: every tick reads TCP_INFO (state and
 * last-activity times) of a bounded slice of the tracked connections, so each is visited once per
 * `scanInterval` whatever the connection count. The kernel scan is what sees a paused socket's
 * CLOSE_WAIT: JavaScript gets no `'end'` until it reads.
 * @module
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { tcpActivity, type TcpActivity, type TcpState } from '../options.js';
import { closeFor } from '../policy/close.js';
import { isPolicy, type Policy } from '../policy/presets.js';
import type { CloseReason, CloseReport } from '../policy/reset.js';
import { invalidArgType } from '../errors.js';
import { originOf } from './origin.js';

/** Reasons the guard closes a connection, and what each means. */
export type GuardReason =
  /** The peer ended (FIN; kernel CLOSE_WAIT) and the application did not within `halfCloseTimeout`. */
  | 'half-closed'
  /** This side ended and the peer sent no FIN within `finWaitTimeout`. */
  | 'fin-wait'
  /** No data for `idleTimeout`, `readerIdleTimeout` or `writerIdleTimeout`. */
  | 'idle'
  /** No data from the peer within `heartbeat.timeout` of a ping. */
  | 'heartbeat'
  /** The kernel already closed it (reset by the peer, or keepalive/user timeout expired): ETIMEDOUT, or CLOSE unseen by a paused socket. */
  | 'dead'
  /** Closed by `guard.close()` after its timeout. */
  | 'shutdown'
  /** A pooled connection the kernel no longer holds as ESTABLISHED, dropped before reuse. */
  | 'stale';

/** Which idle timeout fired. */
export type IdleKind = 'reader' | 'writer' | 'all';

/** Statistics of a guard. */
export interface GuardStats {
  /** Connections tracked now. */
  tracked: number;
  /** Connections tracked since the guard was created. */
  seen: number;
  /** Connections the guard closed (or saw die, for `'dead'`), by reason. */
  closed: Record<GuardReason, number>;
  /** Tracked connections by kernel state, as of each one's latest scan. */
  states: Partial<Record<TcpState, number>>;
  /** Completed scans of the whole set. */
  scans: number;
  /**
   * Connections passed through untouched because a policy cannot apply to them (a Unix-domain
   * socket, a stream a user's `createConnection` returned): they work as without socktune.
   */
  untuned: number;
}

/** Payload of the `'idle'` event, emitted before an idle connection is closed. */
export interface IdleEvent {
  socket: net.Socket;
  kind: IdleKind;
  /** Milliseconds without data in the direction(s) of `kind`. */
  idle: number;
}

/** Payload of the `'closing'` and `'closed'` events. */
export interface GuardCloseEvent {
  socket: net.Socket;
  reason: GuardReason;
  /** How it ended (`'closed'` only). */
  report?: CloseReport;
  /** Where the connection was created, when it was recorded (`socktune/register` with `SOCKTUNE_TRACE=1`). */
  origin?: string;
}

/** Options of {@link Guard.close}. */
export interface ShutdownOptions {
  /** How long to wait for connections to end on their own after idle ones are closed, in milliseconds (default 10 000). */
  timeout?: number;
}

/** What {@link Guard.close} did. */
export interface ShutdownReport {
  /** Connections that ended on their own (or as idle) during the wait. */
  ended: number;
  /** Connections closed at the timeout (reason `'shutdown'`). */
  forced: number;
  /** Milliseconds the shutdown took. */
  elapsed: number;
}

const STATES: TcpState[] = [
  'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT',
  'LAST_ACK', 'LISTEN', 'CLOSING', 'NEW_SYN_RECV', 'UNKNOWN',
];
const stateIndex = new Map(STATES.map((s, i) => [s, i]));
// This side has sent FIN and waits for the peer's (LAST_ACK: the peer's FIN came first, ours is unacknowledged).
const FIN_STATES = new Set<TcpState>(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK']);
const REASONS: GuardReason[] = ['half-closed', 'fin-wait', 'idle', 'heartbeat', 'dead', 'shutdown', 'stale'];

/** Per-connection state: three numbers and the socket's guard. Kept in one Map, nothing on timers. */
interface Entry {
  /** When the current half-close or FIN-wait began (as first seen by a scan); see `phase`. */
  since: number;
  /** When the last heartbeat ping was sent, 0 if none is outstanding. */
  pingAt: number;
  /** Index into STATES of the last state read, -1 before the first scan. */
  state: number;
  /** Which deadline `since` times: 0 none, 1 half-close, 2 FIN-wait (a half-close can turn into a FIN-wait). */
  phase: number;
}

const kGuard = Symbol('socktune.guard');
/** Slices a full scan is split into: each tick visits about 1/TICKS of the connections. */
const TICKS = 8;

type DestroyMethod = (this: net.Socket, err: Error | null, cb: (err?: Error | null) => void) => void;

/**
 * Untracks a socket as it is destroyed (`_destroy` runs once, before `'close'`): an own method
 * that shadows the class's and then calls it. Not a `'close'` listener: an HTTP server adds and
 * removes a `'close'` listener of its own for every response, and with a second listener there
 * the socket keeps a grown listener array, about 200 bytes a connection.
 */
function destroyTracked(this: net.Socket, err: Error | null, cb: (err?: Error | null) => void): void {
  (this as unknown as { [kGuard]?: Guard })[kGuard]?.untrack(this);
  (Object.getPrototypeOf(this) as { _destroy: DestroyMethod })._destroy.call(this, err, cb);
}

/** For a socket whose `_destroy` someone else already replaced: the `'close'` event instead. */
function onSocketClose(this: net.Socket): void {
  (this as unknown as { [kGuard]?: Guard })[kGuard]?.untrack(this);
}

/**
 * Tracks connections and closes those that outlive the deadlines of `policy`.
 *
 * Events: `'idle'` ({@link IdleEvent}) before an idle close; `'closing'` and `'closed'`
 * ({@link GuardCloseEvent}) around every close the guard performs, and `'closed'` with reason
 * `'dead'` when a tracked connection fails with ETIMEDOUT.
 */
export class Guard extends EventEmitter {
  /** The policy whose deadlines this guard enforces. */
  readonly policy: Policy;
  readonly #entries = new Map<net.Socket, Entry>();
  readonly #closed = Object.fromEntries(REASONS.map((r) => [r, 0])) as Record<GuardReason, number>;
  readonly #stateCounts = new Array<number>(STATES.length).fill(0);
  readonly #servers = new Set<net.Server>();
  readonly #activity: TcpActivity = { state: 'UNKNOWN', lastDataReceived: 0, lastDataSent: 0 };
  #iterator: IterableIterator<[net.Socket, Entry]> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #seen = 0;
  #untuned = 0;
  #scans = 0;
  #visited = 0;
  /** Connections visited per tick in the current scan: 1/TICKS of the set as the scan began. */
  #slice = 0;
  #closing = false;

  constructor(policy: Policy) {
    super();
    if (!isPolicy(policy)) throw invalidArgType('policy', 'a policy built by presets or compose()', policy);
    this.policy = policy;
  }

  /** Number of connections tracked now. */
  get size(): number {
    return this.#entries.size;
  }

  /** Starts tracking `socket` until it closes. Tracking twice is a no-op. */
  track(socket: net.Socket): this {
    if (!(socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket', socket);
    if (socket.destroyed || this.#entries.has(socket)) return this;
    const tagged = socket as unknown as { [kGuard]?: Guard };
    const previous = tagged[kGuard];
    if (previous !== undefined && previous !== this) previous.untrack(socket);
    tagged[kGuard] = this;
    this.#entries.set(socket, { since: 0, pingAt: 0, state: -1, phase: 0 });
    this.#seen++;
    const hooked = socket as unknown as { _destroy: DestroyMethod };
    if (!Object.hasOwn(socket, '_destroy')) hooked._destroy = destroyTracked;
    else if (hooked._destroy !== destroyTracked) socket.on('close', onSocketClose);
    if (this.#timer === undefined) this.#start();
    return this;
  }

  /** Stops tracking `socket` (it is not closed). */
  untrack(socket: net.Socket): void {
    const entry = this.#entries.get(socket);
    if (entry === undefined) return;
    this.#entries.delete(socket);
    if (entry.state >= 0) this.#stateCounts[entry.state]--;
    const tagged = socket as unknown as { [kGuard]?: Guard };
    if (tagged[kGuard] === this) tagged[kGuard] = undefined;
    socket.off('close', onSocketClose);
    // Keepalive or the user timeout gave up on the peer: the kernel's verdict, counted as 'dead'.
    const err = (socket as net.Socket & { errored?: { code?: string } | null }).errored;
    if (err?.code === 'ETIMEDOUT') this.#count(socket, 'dead');
    if (this.#entries.size === 0) this.#stop();
  }

  /**
   * Closes `socket` for `reason` the policy's way and counts it in `stats().closed`, tracked or
   * not. Pools use it for `'stale'` connections found before reuse.
   */
  async drop(socket: net.Socket, reason: GuardReason): Promise<void> {
    if (this.#entries.has(socket)) return this.#close(socket, reason);
    this.emit('closing', { socket, reason } satisfies GuardCloseEvent);
    const report = await closeFor(socket, reason as CloseReason);
    this.#count(socket, reason, report);
  }

  /** Tracks every connection `server` accepts from now on (TLS servers: once the handshake is done). */
  attach(server: net.Server): this {
    if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
    if (this.#servers.has(server)) return this;
    this.#servers.add(server);
    const event = 'setSecureContext' in server ? 'secureConnection' : 'connection';
    server.on(event, (socket: net.Socket) => this.track(socket));
    return this;
  }

  /** Counts and the current state distribution. */
  stats(): GuardStats {
    const states: Partial<Record<TcpState, number>> = {};
    this.#stateCounts.forEach((n, i) => {
      if (n > 0) states[STATES[i]] = n;
    });
    return { tracked: this.#entries.size, seen: this.#seen, closed: { ...this.#closed }, states, scans: this.#scans, untuned: this.#untuned };
  }

  /** Counts a connection passed through untouched (not TCP); integrations call it. @internal */
  countUntuned(): void {
    this.#untuned++;
  }

  /**
   * Reads the kernel state of every tracked connection now (instead of waiting for the next
   * scan) and applies the deadlines. Returns the stats after it.
   */
  scanNow(): GuardStats {
    const now = performance.now();
    for (const [socket, entry] of this.#entries) this.#visit(socket, entry, now);
    return this.stats();
  }

  /**
   * Graceful shutdown: stops accepting on attached servers, closes idle connections (HTTP
   * keep-alive connections between requests; other connections are ended, so the peer sees EOF),
   * waits up to `timeout` for the rest to finish, then closes what is left (reason `'shutdown'`).
   */
  async close(options: ShutdownOptions = {}): Promise<ShutdownReport> {
    const timeout = options.timeout ?? 10_000;
    if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0) throw invalidArgType('options.timeout', 'a non-negative integer (milliseconds)', timeout);
    const start = performance.now();
    this.#closing = true;
    const before = this.#entries.size;
    for (const server of this.#servers) {
      server.close();
      const idle = (server as { closeIdleConnections?: () => void }).closeIdleConnections;
      if (typeof idle === 'function') idle.call(server);
    }
    const http = [...this.#servers].some((s) => 'closeIdleConnections' in s);
    if (!http) for (const socket of this.#entries.keys()) if (!socket.writableEnded) socket.end();
    const deadline = start + timeout;
    while (this.#entries.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - performance.now()))));
      // A connection that finished its request since is an idle keep-alive connection now: Node
      // answers it with 'Connection: keep-alive' even after close() and keeps it for
      // keepAliveTimeout, so close it here instead of forcing it at the timeout.
      for (const server of this.#servers) (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    }
    const left = [...this.#entries.keys()];
    await Promise.all(left.map((socket) => this.#close(socket, 'shutdown')));
    this.#stop();
    return { ended: before - left.length, forced: left.length, elapsed: performance.now() - start };
  }

  #start(): void {
    const tick = Math.max(10, Math.floor(this.policy.scanInterval / TICKS));
    this.#timer = setInterval(() => this.#tick(), tick);
    this.#timer.unref();
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#iterator = undefined;
  }

  /** Visits the next slice: ceil(size / TICKS) connections, round-robin. */
  #tick(): void {
    const now = performance.now();
    if (this.#iterator === undefined) this.#begin();
    // The slice is sized when a scan begins. Closes during a scan shrink the set, and a slice of
    // what is left would slow the rest of the scan geometrically (1000 connections: ~50 ticks, not
    // TICKS); a set that grew since is covered by the second term.
    let budget = Math.max(this.#slice, Math.ceil(this.#entries.size / TICKS));
    while (budget-- > 0) {
      // A visit that closed the last connection stopped the guard.
      if (this.#iterator === undefined) return;
      const next = this.#iterator.next();
      if (next.done) {
        if (this.#visited > 0) this.#scans++;
        this.#visited = 0;
        if (this.#entries.size === 0) {
          this.#iterator = undefined;
          return;
        }
        // The wrap does not consume budget, but a new scan's slice bounds it.
        this.#begin();
        budget = Math.min(budget + 1, this.#slice);
        continue;
      }
      this.#visited++;
      const [socket, entry] = next.value;
      this.#visit(socket, entry, now);
    }
  }

  #begin(): void {
    this.#iterator = this.#entries.entries();
    this.#slice = Math.ceil(this.#entries.size / TICKS);
  }

  #visit(socket: net.Socket, entry: Entry, now: number): void {
    if (socket.destroyed) return this.untrack(socket);
    if (socket.connecting) return;
    const a = this.#activity;
    try {
      tcpActivity(socket, a);
    } catch {
      return; // No fd (closing) or not connected yet: the 'close' listener untracks it.
    }
    const index = stateIndex.get(a.state) ?? STATES.length - 1;
    if (index !== entry.state) {
      if (entry.state >= 0) this.#stateCounts[entry.state]--;
      this.#stateCounts[index]++;
      entry.state = index;
    }
    const p = this.policy;
    const state = a.state;
    if (state === 'CLOSE_WAIT') {
      if (p.halfCloseTimeout === false) return;
      if (entry.phase !== 1) {
        entry.phase = 1;
        entry.since = now;
      } else if (now - entry.since >= p.halfCloseTimeout) void this.#close(socket, 'half-closed');
      return;
    }
    if (FIN_STATES.has(state)) {
      if (p.finWaitTimeout === false) return;
      if (entry.phase !== 2) {
        entry.phase = 2;
        entry.since = now;
      } else if (now - entry.since >= p.finWaitTimeout) void this.#close(socket, 'fin-wait');
      return;
    }
    if (state === 'CLOSE') {
      // The kernel has finished with it; JavaScript has not noticed (a paused socket reads no error).
      void this.#close(socket, 'dead');
      return;
    }
    entry.phase = 0;
    if (state !== 'ESTABLISHED') return;
    const received = a.lastDataReceived;
    const sent = a.lastDataSent;
    if (p.readerIdleTimeout !== false && received >= p.readerIdleTimeout) return this.#idle(socket, 'reader', received);
    if (p.writerIdleTimeout !== false && sent >= p.writerIdleTimeout) return this.#idle(socket, 'writer', sent);
    if (p.idleTimeout !== false && Math.min(received, sent) >= p.idleTimeout) return this.#idle(socket, 'all', Math.min(received, sent));
    const hb = p.heartbeat;
    if (hb === false) return;
    if (entry.pingAt !== 0) {
      const sincePing = now - entry.pingAt;
      // Data arrived after the ping (the kernel's last-receive time is younger than the ping).
      if (received < sincePing) entry.pingAt = 0;
      else if (sincePing >= hb.timeout) return void this.#close(socket, 'heartbeat');
      else return;
    }
    if (sent >= hb.interval && !socket.writableEnded) {
      entry.pingAt = now;
      hb.ping(socket);
    }
  }

  #idle(socket: net.Socket, kind: IdleKind, idle: number): void {
    this.emit('idle', { socket, kind, idle } satisfies IdleEvent);
    if (!socket.destroyed) void this.#close(socket, 'idle');
  }

  #count(socket: net.Socket, reason: GuardReason, report?: CloseReport): void {
    this.#closed[reason]++;
    this.emit('closed', { socket, reason, report, origin: originOf(socket) } satisfies GuardCloseEvent);
  }

  async #close(socket: net.Socket, reason: GuardReason): Promise<void> {
    const entry = this.#entries.get(socket);
    if (entry === undefined) return;
    // Untrack first: the close is this guard's, not a later 'dead' observation.
    this.#entries.delete(socket);
    if (entry.state >= 0) this.#stateCounts[entry.state]--;
    socket.off('close', onSocketClose);
    (socket as unknown as { [kGuard]?: Guard })[kGuard] = undefined;
    if (this.#entries.size === 0 && !this.#closing) this.#stop();
    this.emit('closing', { socket, reason, origin: originOf(socket) } satisfies GuardCloseEvent);
    const report = await closeFor(socket, reason as CloseReason);
    this.#count(socket, reason, report);
  }
}
