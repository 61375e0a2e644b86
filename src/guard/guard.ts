/**
 * The connection guard: finds connections the application will never close (CLOSE_WAIT, FIN_WAIT2,
 * idle, silent after a heartbeat, closed by the kernel while nobody reads) and closes them on
 * deadlines through the policy, with statistics and events as evidence.
 *
 * One timer per guard, no timer or listener per connection. Every tick visits a bounded slice of
 * the tracked connections, so each is visited once per `scanInterval` whatever the count. A visit
 * costs no system call when Node itself can see the connection's state: a socket Node is reading
 * sees the peer's FIN (and RST) as it arrives, and activity is the byte counters Node keeps. The
 * kernel (one TCP_INFO read) is asked only where Node cannot know: a socket Node is not reading
 * (paused: its CLOSE_WAIT is the kernel's secret), a connection this side has ended (which FIN
 * state), and a deadline about to pass (idle: the kernel's last-receive and last-send times; a
 * heartbeat: the kernel's count of bytes received since the ping — exact, never a 4 ms timestamp).
 *
 * Per connection the guard keeps a few numbers in typed arrays indexed by a slot, and the socket
 * carries its slot and a shared `_destroy` shadow that releases it.
 * @module
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import { types } from 'node:util';
import { configure, readOptions } from '../options.js';
import { newActivity, takeSocketError, tcpActivity, type TcpActivity } from '../views.js';
import { tcpStateNames, type TcpState } from '../tables.js';
import { assertExtensible, assertNotFdless, bytesDispatched, isReading, isTcpSocket, lookupHandle, peerEnded } from '../handle.js';
import { closeFor, onDestroyed } from '../policy/close.js';
import { isPolicy, type Policy } from '../policy/presets.js';
import { destroyWith, type CloseReason, type CloseReport } from '../policy/reset.js';
import { codes, invalidArgType, kernelError } from '../errors.js';
import { originOf } from './origin.js';
import { drainWatchEvents, onWatchEvents, watchSocket, watchable } from '../peerwatch.js';
import { drain, shutdownSettings, type ShutdownOptions, type ShutdownReport } from './shutdown.js';

export type { ShutdownOptions, ShutdownReport } from './shutdown.js';

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
  /** Keepalive or the user timeout gave up on the peer (ETIMEDOUT): the peer is gone. */
  | 'dead'
  /**
   * The peer reset the connection (RST) while the application was not reading it: the kernel had
   * closed it and Node could not know. Destroyed with the kernel's error (ECONNRESET), as a read
   * would have. A peer's reset is an ordinary end, not a dead peer.
   */
  | 'reset'
  /** Closed by `guard.close()` after its timeout. */
  | 'shutdown'
  /** A pooled connection the kernel no longer holds as ESTABLISHED, dropped before reuse. */
  | 'stale'
  /** An HTTP/2 session closed after the GOAWAY of its maximum age (`http2.maxAge`, gRFC A9). */
  | 'max-age'
  /** An HTTP/2 client sent PINGs faster than `http2.minPingInterval` allows: GOAWAY ENHANCE_YOUR_CALM `too_many_pings` (gRFC A8). */
  | 'too-many-pings';

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
  /**
   * Tracked connections by TCP state as of each one's latest visit: the kernel's state where the
   * guard read it (sockets Node is not reading, connections this side ended, `scanNow()`), and
   * where Node sees the state itself, what Node saw (`ESTABLISHED`; `CLOSE_WAIT` once the peer's
   * FIN was read and the application has not ended).
   */
  states: Partial<Record<TcpState, number>>;
  /** Completed scans of the whole set. */
  scans: number;
  /**
   * Connections passed through untouched because a policy cannot apply to them (a Unix-domain
   * socket, a stream a user's `createConnection` returned): they work as without socktune.
   */
  untuned: number;
  /** Kernel reads (TCP_INFO) the scans made: only where Node could not know the answer. */
  kernelReads: number;
}

/** Payload of the `'idle'` event, emitted before an idle connection is closed. */
export interface IdleEvent {
  socket: net.Socket;
  kind: IdleKind;
  /** Milliseconds without data in the direction(s) of `kind`, as the kernel counts them. */
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

/** The events of a {@link Guard} and their payloads. */
export interface GuardEvents {
  /** Before an idle connection is closed. */
  idle: [event: IdleEvent];
  /** As the guard starts closing a connection. */
  closing: [event: GuardCloseEvent];
  /** Once a connection is closed (or seen to die: `'dead'`), with how it ended. */
  closed: [event: GuardCloseEvent];
}

/** State names by kernel number: the guard keeps each connection's as that number. */
const STATES: readonly TcpState[] = tcpStateNames;
const stateIndex = new Map(STATES.map((s, i) => [s, i]));
const S_ESTABLISHED = stateIndex.get('ESTABLISHED')!;
const S_CLOSE_WAIT = stateIndex.get('CLOSE_WAIT')!;
const S_CLOSE = stateIndex.get('CLOSE')!;
const S_UNKNOWN = stateIndex.get('UNKNOWN')!;
const S_FIN_WAIT1 = stateIndex.get('FIN_WAIT1')!;
// This side has sent FIN and waits for the peer's (LAST_ACK: the peer's FIN came first, ours is unacknowledged).
const FIN_STATES = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK'].map((s) => stateIndex.get(s as TcpState)!));
const REASONS: GuardReason[] = ['half-closed', 'fin-wait', 'idle', 'heartbeat', 'dead', 'reset', 'shutdown', 'stale', 'max-age', 'too-many-pings'];

/**
 * Sockets that carry an HTTP/2 session: the session layer (src/http2/) owns their activity rules
 * (idle is a session without streams, the heartbeat is PING), so the guard's byte-counting idle and
 * heartbeat rules, which would write into the session's stream, skip them. Every other rule (the
 * half-close and FIN-wait deadlines, the user timeout) still applies.
 */
const sessionSockets = new WeakSet<net.Socket>();

/** Marks `socket` as carrying an HTTP/2 session (see `sessionSockets`). @internal */
export function carriesSession(socket: net.Socket): void {
  sessionSockets.add(socket);
}
const { ETIMEDOUT } = osConstants.errno;

/**
 * Whether the peer answers: no retransmission and no window or keepalive probe has gone unanswered
 * twice in a row (the kernel zeroes both counters on any acknowledgement). Counters, not the
 * kernel's 4 ms timestamps, decide.
 */
function answering(a: TcpActivity): boolean {
  return a.retransmits < 2 && a.probes < 2;
}

/** Slices a full scan is split into: each tick visits about 1/TICKS of the slots. */
const TICKS = 8;
/** Byte counters are compared modulo 2^30: a small integer, never a heap number. */
const MASK = 0x3fffffff;
const PHASE_NONE = 0;
const PHASE_HALF_CLOSE = 1;
const PHASE_FIN_WAIT = 2;
const WATCH_NONE = 0;
const WATCH_QUIET = 1;
const WATCH_EVENT = 2;
let guards = 0;

/**
 * One whole scan as the timer's ticks make it, at once (the benchmark times it).
 * @internal
 */
export let scanPass: (guard: Guard) => void;

const kSlot = Symbol('socktune.guard.slot');
const kOwner = Symbol('socktune.guard.owner');

/**
 * The guard tracking `socket` now (its deadlines, idle limits and heartbeat), whichever made it:
 * `tuneServer`, an agent, a connector, `tune`, `socktune/register` or `guard.track`. `undefined`
 * when no guard tracks it (never tracked, untracked, or closed).
 */
export function guardOf(socket: object): Guard | undefined {
  // A Proxy's traps are not run (the caller's code, which may throw).
  if (typeof socket !== 'object' || socket === null || types.isProxy(socket)) return undefined;
  return (socket as Slotted)[kOwner];
}

interface Slotted {
  [kSlot]?: number;
  [kOwner]?: Guard;
  errored?: { code?: string } | null;
}

/** The per-connection columns, one entry per slot. */
class Slots {
  sockets: Array<net.Socket | undefined> = [];
  /** Bytes read by Node (mod 2^30) at the last visit. */
  rx = new Int32Array(0);
  /** Bytes written by Node (mod 2^30) at the last visit. */
  tx = new Int32Array(0);
  /** When the read counter last moved (or the kernel's last receive, when it was read). */
  rxAt = new Float64Array(0);
  /** When the write counter last moved (or the kernel's last send). */
  txAt = new Float64Array(0);
  /** When the current half-close or FIN-wait began (first seen). */
  since = new Float64Array(0);
  /** When the outstanding heartbeat ping was sent; 0: none. */
  pingAt = new Float64Array(0);
  /** The kernel's count of bytes received when the ping was sent. */
  pingBytes = new Float64Array(0);
  /** Index into STATES of the state last seen; -1 before the first visit. */
  state = new Int8Array(0);
  /** Which deadline `since` times (PHASE_*). */
  phase = new Uint8Array(0);
  /**
   * The user timeout lifted while the peer's window is closed (see Guard's zero-window rule), to
   * be put back when it opens; -1: none lifted.
   */
  lifted = new Int32Array(0);
  /** When the connection was last seen healthy: its peer's window open, nothing unacknowledged for long. */
  openAt = new Float64Array(0);
  /** Bytes written by Node (mod 2^30) at the last visit, for the send rules. */
  sent = new Int32Array(0);
  /** A socket Node is not reading, in the watch set: WATCH_NONE, WATCH_QUIET (no FIN or RST since), WATCH_EVENT. */
  watch = new Uint8Array(0);
  /** Counts the slot's occupants (mod 256): an event for an earlier one is not the current one's. */
  gen = new Uint8Array(0);

  get capacity(): number {
    return this.rx.length;
  }

  grow(to: number): void {
    const copy = <T extends Int32Array | Float64Array | Int8Array | Uint8Array>(a: T, make: new (n: number) => T): T => {
      const b = new make(to);
      b.set(a);
      return b;
    };
    this.rx = copy(this.rx, Int32Array);
    this.tx = copy(this.tx, Int32Array);
    this.rxAt = copy(this.rxAt, Float64Array);
    this.txAt = copy(this.txAt, Float64Array);
    this.since = copy(this.since, Float64Array);
    this.pingAt = copy(this.pingAt, Float64Array);
    this.pingBytes = copy(this.pingBytes, Float64Array);
    this.state = copy(this.state, Int8Array);
    this.phase = copy(this.phase, Uint8Array);
    this.lifted = copy(this.lifted, Int32Array);
    this.openAt = copy(this.openAt, Float64Array);
    this.sent = copy(this.sent, Int32Array);
    this.watch = copy(this.watch, Uint8Array);
    this.gen = copy(this.gen, Uint8Array);
  }

  /** Moves slot `from` to the free slot `to` (compaction). */
  move(from: number, to: number): void {
    this.sockets[to] = this.sockets[from];
    this.sockets[from] = undefined;
    for (const a of [
      this.rx,
      this.tx,
      this.rxAt,
      this.txAt,
      this.since,
      this.pingAt,
      this.pingBytes,
      this.state,
      this.phase,
      this.lifted,
      this.openAt,
      this.sent,
      this.gen,
    ])
      a[to] = a[from];
    // Its watch key names the old slot: it joins again under the new one at its next visit.
    this.watch[to] = WATCH_NONE;
    this.gen[to]++;
  }
}

/**
 * Tracks connections and closes those that outlive the deadlines of `policy`.
 *
 * Events ({@link GuardEvents}): `'idle'` ({@link IdleEvent}) before an idle close; `'closing'`
 * and `'closed'` ({@link GuardCloseEvent}) around every close the guard performs, and `'closed'`
 * with reason `'dead'` when a tracked connection fails with ETIMEDOUT.
 */
export class Guard extends EventEmitter<GuardEvents> {
  /** The policy whose deadlines this guard enforces. */
  readonly policy: Policy;
  readonly #slots = new Slots();
  /** Free slots below `#high`, reused last-in first-out. */
  readonly #free: number[] = [];
  /** One past the highest slot in use (or free); scans cover [0, #high). */
  #high = 0;
  #tracked = 0;
  readonly #closed = Object.fromEntries(REASONS.map((r) => [r, 0])) as Record<GuardReason, number>;
  readonly #stateCounts = new Array<number>(STATES.length).fill(0);
  readonly #servers = new Set<net.Server>();
  readonly #activity: TcpActivity = newActivity();
  /** Connections whose peer's window is closed while data waits: visited on every tick. */
  readonly #stalled = new Set<net.Socket>();
  /** The policy's user timeout (0: none), which the guard enforces itself while a window is closed. */
  readonly #userTimeout: number;
  /** Milliseconds between two visits of a connection (a whole scan). */
  readonly #period: number;
  /** Whether the policy needs activity (idle timeouts or a heartbeat): byte counters are read then. */
  readonly #watchActivity: boolean;
  /** Called by the socket's `_destroy` shadow: the guard forgets it (and counts a dead peer). */
  readonly #release = (socket: net.Socket): void => this.#forget(socket, true);
  #timer: NodeJS.Timeout | undefined;
  /** Next slot a tick visits; -1: no scan under way. */
  #cursor = -1;
  /** Slots visited per tick in the current scan: 1/TICKS of #high as the scan began. */
  #slice = 0;
  #seen = 0;
  #untuned = 0;
  #scans = 0;
  #kernelReads = 0;
  #closing = false;
  #pingWarned = false;
  /** This guard's number in the watch set's keys, and whether it has sockets there. */
  readonly #id = ++guards;
  #watching = false;

  /** @param policy a policy built by `presets` or `compose()` */
  constructor(policy: Policy) {
    super();
    if (!isPolicy(policy)) throw invalidArgType('policy', 'a policy built by presets or compose()', policy);
    this.policy = policy;
    this.#watchActivity =
      policy.idleTimeout !== false || policy.readerIdleTimeout !== false || policy.writerIdleTimeout !== false || policy.heartbeat !== false;
    this.#userTimeout = policy.userTimeout ?? 0;
    // With a user timeout, a closed window must be seen well before the kernel's timer gives up on
    // it (the user timeout, counted from the first window probe): a scan at least every quarter of it.
    this.#period = this.#userTimeout > 0 ? Math.max(40, Math.min(policy.scanInterval, Math.floor(this.#userTimeout / 4))) : policy.scanInterval;
  }

  /** Number of connections tracked now. */
  get size(): number {
    return this.#tracked;
  }

  /**
   * Starts enforcing this guard's deadlines on `socket` until it closes. Tracking twice is a no-op;
   * a socket another guard tracked moves here. It does not apply the policy's kernel options or
   * close behaviour: `tune(socket, policy, guard)` does both.
   */
  track(socket: net.Socket): this {
    if (!(socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket', socket);
    const s = socket as net.Socket & Slotted;
    if (socket.destroyed || this.#slotOf(socket) >= 0) return this;
    // Deadlines are read from TCP: anything else passes through untouched. A spoofed or
    // unconnected socket is the caller's error.
    try {
      lookupHandle(socket);
      assertExtensible(socket);
    } catch (err) {
      if ((err as { code?: string }).code !== codes.NOT_TCP) throw err;
      this.#untuned++;
      return this;
    }
    // Tracked by another guard: that one lets go.
    s[kOwner]?.untrack(socket);
    const slot = this.#allocate();
    const t = this.#slots;
    t.sockets[slot] = socket;
    const now = performance.now();
    t.rx[slot] = this.#watchActivity ? socket.bytesRead & MASK : 0;
    t.tx[slot] = this.#watchActivity ? bytesDispatched(socket) & MASK : 0;
    t.rxAt[slot] = now;
    t.txAt[slot] = now;
    t.since[slot] = 0;
    t.pingAt[slot] = 0;
    t.pingBytes[slot] = 0;
    t.state[slot] = -1;
    t.phase[slot] = PHASE_NONE;
    t.lifted[slot] = -1;
    t.openAt[slot] = now;
    t.sent[slot] = bytesDispatched(socket) & MASK;
    t.watch[slot] = WATCH_NONE;
    t.gen[slot]++;
    s[kSlot] = slot;
    s[kOwner] = this;
    onDestroyed(socket, this.#release);
    this.#tracked++;
    this.#seen++;
    if (this.#timer === undefined) this.#start();
    return this;
  }

  /** Stops tracking `socket` (it is not closed). */
  untrack(socket: net.Socket): void {
    if (!(socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket', socket);
    this.#forget(socket, false);
  }

  /**
   * Closes `socket` for `reason` the policy's way and counts it in `stats().closed`, tracked or
   * not. Pools use it for `'stale'` connections found before reuse.
   */
  async drop(socket: net.Socket, reason: GuardReason): Promise<void> {
    if (!(socket instanceof net.Socket)) throw invalidArgType('socket', 'an instance of net.Socket', socket);
    if (!REASONS.includes(reason)) throw invalidArgType('reason', `one of ${REASONS.join(', ')}`, reason);
    return this.#close(socket, reason);
  }

  /** Tracks every connection `server` accepts from now on (TLS servers: once the handshake is done). */
  attach(server: net.Server): this {
    assertNotFdless(server);
    if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
    if (this.#servers.has(server)) return this;
    this.#servers.add(server);
    const event = 'setSecureContext' in server ? 'secureConnection' : 'connection';
    server.on(event, (socket: net.Socket) => this.#attached(socket));
    return this;
  }

  /** A connection an attached server accepted; tuneServer already counted the ones it passed through. */
  #attached(socket: net.Socket): void {
    if (isTcpSocket(socket)) this.track(socket);
  }

  /** Counts and the current state distribution. */
  stats(): GuardStats {
    const states: Partial<Record<TcpState, number>> = {};
    this.#stateCounts.forEach((n, i) => {
      if (n > 0) states[STATES[i]] = n;
    });
    return {
      tracked: this.#tracked,
      seen: this.#seen,
      closed: { ...this.#closed },
      states,
      scans: this.#scans,
      untuned: this.#untuned,
      kernelReads: this.#kernelReads,
    };
  }

  /** Counts a connection passed through untouched (not TCP); integrations call it. @internal */
  countUntuned(): void {
    this.#untuned++;
  }

  /**
   * Reads the kernel state of every tracked connection now (one TCP_INFO read each, instead of
   * waiting for the next scan) and applies the deadlines. Returns the stats after it.
   */
  scanNow(): GuardStats {
    const now = performance.now();
    for (let slot = 0; slot < this.#high; slot++) if (this.#slots.sockets[slot] !== undefined) this.#visit(slot, now, true);
    return this.stats();
  }

  /**
   * Graceful shutdown (a deploy's drain): marks every response of attached HTTP servers
   * `Connection: close` from now on, keeps answering for `delay` (a load balancer's time to take
   * the instance out), stops accepting, closes idle keep-alive connections spread over `spread`,
   * ends the connections of plain servers and tracked sockets (the peer sees EOF), lets requests in
   * flight finish, and at `timeout` after accepting stopped closes what is left (reason
   * `'shutdown'`). Resolves with the numbers.
   */
  async close(options: ShutdownOptions = {}): Promise<ShutdownReport> {
    const settings = shutdownSettings(options);
    this.#closing = true;
    const report = await drain(
      [...this.#servers],
      settings,
      () => this.#live(),
      (socket) => this.#shutdown(socket),
    );
    this.#stop();
    return report;
  }

  /** The connections tracked now (a drain over several guards ends them). @internal */
  trackedSockets(): net.Socket[] {
    return this.#live();
  }

  /** Closes `socket` at a drain's timeout: the guard's close if it tracks it, else a destroy. */
  async #shutdown(socket: net.Socket): Promise<void> {
    if (this.#slotOf(socket) >= 0) return this.#close(socket, 'shutdown');
    socket.destroy();
  }

  #live(): net.Socket[] {
    return this.#slots.sockets.filter((s): s is net.Socket => s !== undefined);
  }

  #slotOf(socket: net.Socket): number {
    const slot = (socket as net.Socket & Slotted)[kSlot];
    return slot !== undefined && this.#slots.sockets[slot] === socket ? slot : -1;
  }

  #allocate(): number {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    if (this.#high === this.#slots.capacity) this.#slots.grow(Math.max(64, this.#high * 2));
    return this.#high++;
  }

  /** Forgets `socket` (its slot is free again); `destroyed`: it is being destroyed (a dead peer counts then). */
  #forget(socket: net.Socket, destroyed: boolean): void {
    const slot = this.#slotOf(socket);
    if (slot < 0) return;
    const t = this.#slots;
    if (t.state[slot] >= 0) this.#stateCounts[t.state[slot]]--;
    if (t.lifted[slot] >= 0) this.#restoreUserTimeout(socket, slot);
    this.#stalled.delete(socket);
    t.sockets[slot] = undefined;
    this.#free.push(slot);
    this.#tracked--;
    const s = socket as net.Socket & Slotted;
    s[kSlot] = undefined;
    s[kOwner] = undefined;
    onDestroyed(socket, undefined);
    // Keepalive or the user timeout gave up on the peer: the kernel's verdict, counted as 'dead'.
    if (destroyed && s.errored?.code === 'ETIMEDOUT') this.#count(socket, 'dead');
    if (this.#tracked === 0 && !this.#closing) this.#stop();
  }

  #start(): void {
    const tick = Math.max(10, Math.floor(this.#period / TICKS));
    this.#timer = setInterval(() => this.#tick(), tick);
    this.#timer.unref();
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#cursor = -1;
    if (this.#watching) {
      this.#watching = false;
      onWatchEvents(this.#id, undefined);
    }
    if (this.#tracked === 0) {
      this.#free.length = 0;
      this.#high = 0;
      this.#slots.sockets.length = 0;
    }
  }

  static {
    scanPass = (guard) => {
      if (guard.#watching) drainWatchEvents();
      const now = performance.now();
      for (let slot = 0; slot < guard.#high; slot++) if (guard.#slots.sockets[slot] !== undefined) guard.#visit(slot, now, false);
    };
  }

  /** Visits the next slice of slots; a scan is complete when the cursor passes the last slot. */
  #tick(): void {
    if (this.#watching) drainWatchEvents();
    const now = performance.now();
    if (this.#cursor < 0) this.#begin();
    // The slice is sized when a scan begins; slots added since are covered by the second term.
    const end = Math.min(this.#high, this.#cursor + Math.max(this.#slice, Math.ceil(this.#high / TICKS)));
    const sockets = this.#slots.sockets;
    for (let slot = this.#cursor; slot < end; slot++) {
      if (sockets[slot] !== undefined) this.#visit(slot, now, false);
    }
    this.#cursor = end;
    if (end >= this.#high) {
      this.#scans++;
      this.#cursor = -1;
    }
    for (const socket of this.#stalled) {
      const slot = this.#slotOf(socket);
      if (slot < 0) this.#stalled.delete(socket);
      else this.#visit(slot, now, false);
    }
  }

  #begin(): void {
    this.#compact();
    this.#cursor = 0;
    this.#slice = Math.max(1, Math.ceil(this.#high / TICKS));
  }

  /** After a peak, moves connections down so a scan covers about what is tracked, not the peak. */
  #compact(): void {
    if (this.#high < 1024 || this.#tracked * 4 > this.#high) return;
    const t = this.#slots;
    let to = 0;
    for (let from = 0; from < this.#high; from++) {
      const socket = t.sockets[from];
      if (socket === undefined) continue;
      if (from !== to) {
        t.move(from, to);
        (socket as net.Socket & Slotted)[kSlot] = to;
      }
      to++;
    }
    t.sockets.length = to;
    this.#high = to;
    this.#free.length = 0;
  }

  /** Reads TCP_INFO into #activity; false when the socket has no fd left (closing). */
  #readKernel(socket: net.Socket): boolean {
    this.#kernelReads++;
    try {
      tcpActivity(socket, this.#activity);
      return true;
    } catch {
      return false;
    }
  }

  #setState(slot: number, index: number): void {
    const t = this.#slots;
    const was = t.state[slot];
    if (was === index) return;
    if (was >= 0) this.#stateCounts[was]--;
    this.#stateCounts[index]++;
    t.state[slot] = index;
  }

  /**
   * One visit of a tracked connection: its state (from Node where Node knows it, else from the
   * kernel), then each rule in turn. A connection whose object cannot be read as a socket (built
   * around a handle without being constructed) is let go instead of failing the guard's timer.
   */
  #visit(slot: number, now: number, full: boolean): void {
    const socket = this.#slots.sockets[slot]!;
    try {
      this.#apply(slot, socket, now, full);
    } catch {
      this.#forget(socket, false);
    }
  }

  #apply(slot: number, socket: net.Socket, now: number, full: boolean): void {
    const t = this.#slots;
    if (socket.destroyed) return this.#forget(socket, true);
    if (socket.connecting || socket.pending) return;
    const peerHasEnded = peerEnded(socket);
    const selfEnded = socket.writableFinished;
    // Node's buffer holds bytes the kernel would not take (the peer's window may be closed), or a
    // closed window is being watched: the window rule needs the kernel's send-side counters.
    let sending = false;
    if (this.#userTimeout > 0) {
      // Writing since the last visit, bytes waiting in Node, or a stall being watched: the send
      // rules need the kernel's send-side counters.
      const tx = bytesDispatched(socket) & MASK;
      const wrote = tx !== t.sent[slot];
      t.sent[slot] = tx;
      sending = wrote || socket.writableLength > 0 || this.#stalled.has(socket);
      // Nothing written since, nothing waiting in Node: its window was open, and nothing can be in
      // flight that the peer has not had a period to acknowledge.
      if (!sending) t.openAt[slot] = now;
    }
    // Node sees the state itself while it reads and this side has not ended; otherwise ask the kernel.
    let kernel = false;
    let index: number;
    if (full || selfEnded || sending || (!peerHasEnded && !isReading(socket) && !this.#quiet(slot, socket))) {
      if (!this.#readKernel(socket)) return;
      kernel = true;
      index = stateIndex.get(this.#activity.state) ?? S_UNKNOWN;
    } else {
      index = peerHasEnded ? S_CLOSE_WAIT : S_ESTABLISHED;
    }
    this.#setState(slot, index);
    if (kernel && this.#userTimeout > 0 && this.#window(slot, socket, index, now)) return;
    if (index === S_CLOSE_WAIT) return this.#halfClose(slot, socket, now);
    if (FIN_STATES.has(index)) return this.#finWait(slot, socket, index, kernel, now);
    t.phase[slot] = PHASE_NONE;
    if (index === S_CLOSE) return this.#closedByKernel(socket);
    if (index !== S_ESTABLISHED || !this.#watchActivity || sessionSockets.has(socket)) return;
    kernel = this.#idleRule(slot, socket, kernel, now);
    if (!socket.destroyed) this.#heartbeat(slot, socket, kernel, now);
  }

  /**
   * Whether a socket Node is not reading is known to have had no FIN or RST from its peer since it
   * was last seen ESTABLISHED, from the kernel's events (the watch set) instead of a TCP_INFO read.
   * The first time, it joins the set and the kernel is asked this once; after an event the kernel
   * is asked at every visit, as before.
   */
  #quiet(slot: number, socket: net.Socket): boolean {
    const t = this.#slots;
    const w = t.watch[slot];
    if (w === WATCH_QUIET) return t.state[slot] === S_ESTABLISHED;
    if (w === WATCH_EVENT || !watchable) return false;
    if (!this.#watching) {
      this.#watching = true;
      onWatchEvents(this.#id, (key) => {
        const at = key >>> 8;
        if (at < this.#high && t.sockets[at] !== undefined && t.gen[at] === (key & 0xff) && t.watch[at] === WATCH_QUIET) t.watch[at] = WATCH_EVENT;
      });
    }
    if (watchSocket(socket, this.#id, slot * 256 + t.gen[slot])) t.watch[slot] = WATCH_QUIET;
    return false;
  }

  /**
   * The half-close deadline: the peer ended (CLOSE_WAIT) and the application did not, for
   * `halfCloseTimeout`.
   */
  #halfClose(slot: number, socket: net.Socket, now: number): void {
    const t = this.#slots;
    const p = this.policy;
    if (p.halfCloseTimeout === false) return;
    if (t.phase[slot] !== PHASE_HALF_CLOSE) {
      t.phase[slot] = PHASE_HALF_CLOSE;
      t.since[slot] = now;
    } else if (now - t.since[slot] >= p.halfCloseTimeout) void this.#close(socket, 'half-closed');
  }

  /**
   * The FIN-wait deadline: this side ended and the peer sent no FIN for `finWaitTimeout`. While
   * bytes before our FIN are still being delivered (FIN_WAIT1 with data unacknowledged) to a peer
   * that answers (no retransmission or window probe has gone unanswered twice), the peer is slow,
   * not gone: the deadline starts again.
   */
  #finWait(slot: number, socket: net.Socket, index: number, kernel: boolean, now: number): void {
    const t = this.#slots;
    const p = this.policy;
    if (p.finWaitTimeout === false) return;
    if (t.phase[slot] !== PHASE_FIN_WAIT) {
      t.phase[slot] = PHASE_FIN_WAIT;
      t.since[slot] = now;
      return;
    }
    const a = this.#activity;
    if (kernel && index === S_FIN_WAIT1 && (a.unacked > 0 || a.notsent > 0) && answering(a)) {
      t.since[slot] = now;
      return;
    }
    if (now - t.since[slot] >= p.finWaitTimeout) void this.#close(socket, 'fin-wait');
  }

  /**
   * The zero-window rule. Linux applies TCP_USER_TIMEOUT to a closed receive window too, counted
   * from the first window probe even while the peer answers every probe: a live peer that stops
   * reading for longer than the user timeout (a paused download, a slow consumer, a proxy waiting
   * on its own client) would be cut off as if it were dead. While the peer's window is closed with
   * bytes waiting, the guard keeps the kernel's deadline ahead of the probes (the kernel probes no
   * later than that deadline, so probes keep coming at least every few scan periods) and judges the
   * peer itself: dead once a probe is out and it has answered nothing for the user timeout. When
   * the window opens, the user timeout is put back. Returns whether the connection was closed.
   */
  #window(slot: number, socket: net.Socket, index: number, now: number): boolean {
    const t = this.#slots;
    const a = this.#activity;
    const open = index === S_ESTABLISHED || index === S_CLOSE_WAIT || index === S_FIN_WAIT1;
    const closedWindow = open && a.sndWnd === 0 && a.notsent > 0 && a.unacked === 0;
    // Data in flight that a retransmission has not got acknowledged.
    const retransmitting = open && a.unacked > 0 && a.retransmits >= 1;
    if (!closedWindow && !retransmitting) {
      if (t.lifted[slot] >= 0) this.#restoreUserTimeout(socket, slot);
      this.#stalled.delete(socket);
      t.openAt[slot] = now;
      return false;
    }
    this.#stalled.add(socket);
    if (retransmitting) {
      if (t.lifted[slot] >= 0) this.#restoreUserTimeout(socket, slot);
      // The user timeout, enforced from TCP_INFO where the kernel's own timer runs late behind the
      // retransmission backoff: nothing acknowledged for it, and the connection was last seen
      // healthy (openAt) at least that long ago, less one retransmission timeout (the stall may
      // have begun that much before a visit still saw none).
      if (a.lastAckReceived >= this.#userTimeout && now - t.openAt[slot] >= this.#userTimeout - a.rto) {
        this.#dead(socket);
        return true;
      }
      return false;
    }
    if (a.probes >= 1 && a.lastAckReceived >= this.#userTimeout) {
      this.#dead(socket);
      return true;
    }
    // The kernel's clock started after the window was last seen open (openAt): a timeout of the
    // time since then plus two scan periods puts its deadline at least that far ahead.
    this.#holdUserTimeout(socket, slot, Math.ceil(now - t.openAt[slot]) + 2 * this.#period);
    return false;
  }

  /** Sets the user timeout to `value` while a window is closed, remembering the policy's to put back. */
  #holdUserTimeout(socket: net.Socket, slot: number, value: number): void {
    const t = this.#slots;
    try {
      if (t.lifted[slot] < 0) {
        const own = readOptions(socket).userTimeout ?? 0;
        // A socket without a user timeout has nothing to hold off.
        if (own === 0) return;
        t.lifted[slot] = own;
      }
      configure(socket, { userTimeout: Math.min(value, 2 ** 31 - 1) });
    } catch {
      // No fd left: it is closing anyway.
    }
  }

  #restoreUserTimeout(socket: net.Socket, slot: number): void {
    const value = this.#slots.lifted[slot];
    this.#slots.lifted[slot] = -1;
    if (socket.destroyed) return;
    try {
      configure(socket, { userTimeout: value });
    } catch {
      // No fd left: it is closing anyway.
    }
  }

  /** The peer stopped answering: the connection fails with ETIMEDOUT, as the kernel's own timers would. */
  #dead(socket: net.Socket): void {
    this.#forget(socket, false);
    this.#count(socket, 'dead');
    destroyWith(socket, kernelError(-ETIMEDOUT, 'read'));
  }

  /**
   * The idle timeouts: from Node's byte counters while the connection is busy (no system call),
   * and from the kernel's last-receive and last-send times once one may have passed (a paused
   * socket receives what Node does not read). Returns whether the kernel was read.
   */
  #idleRule(slot: number, socket: net.Socket, kernel: boolean, now: number): boolean {
    const t = this.#slots;
    const p = this.policy;
    const rx = socket.bytesRead & MASK;
    const tx = bytesDispatched(socket) & MASK;
    if (rx !== t.rx[slot]) {
      t.rx[slot] = rx;
      t.rxAt[slot] = now;
      t.pingAt[slot] = 0; // data arrived after the ping (counted in bytes, not timed)
    }
    if (tx !== t.tx[slot]) {
      t.tx[slot] = tx;
      t.txAt[slot] = now;
    }
    if (p.readerIdleTimeout === false && p.idleTimeout === false && p.writerIdleTimeout === false) return kernel;
    const readIdle = now - t.rxAt[slot];
    const writeIdle = now - t.txAt[slot];
    const candidate =
      (p.readerIdleTimeout !== false && readIdle >= p.readerIdleTimeout) ||
      (p.writerIdleTimeout !== false && writeIdle >= p.writerIdleTimeout) ||
      (p.idleTimeout !== false && Math.min(readIdle, writeIdle) >= p.idleTimeout);
    if (!candidate || !(kernel || (kernel = this.#readKernel(socket)))) return kernel;
    // The kernel's times decide (a paused socket receives what Node does not read).
    const a = this.#activity;
    const received = a.lastDataReceived;
    const sent = a.lastDataSent;
    if (p.readerIdleTimeout !== false && received >= p.readerIdleTimeout) this.#idle(socket, 'reader', received);
    else if (p.writerIdleTimeout !== false && sent >= p.writerIdleTimeout) this.#idle(socket, 'writer', sent);
    else if (p.idleTimeout !== false && Math.min(received, sent) >= p.idleTimeout) this.#idle(socket, 'all', Math.min(received, sent));
    else {
      t.rxAt[slot] = Math.max(t.rxAt[slot], now - received);
      t.txAt[slot] = Math.max(t.txAt[slot], now - sent);
    }
    return kernel;
  }

  /**
   * The application heartbeat: a ping after `heartbeat.interval` without sending, and a close when
   * the kernel's count of bytes received has not moved `heartbeat.timeout` after it (exact, never
   * a 4 ms timestamp).
   */
  #heartbeat(slot: number, socket: net.Socket, kernel: boolean, now: number): void {
    const hb = this.policy.heartbeat;
    if (hb === false) return;
    const t = this.#slots;
    const a = this.#activity;
    if (t.pingAt[slot] !== 0) {
      if (now - t.pingAt[slot] < hb.timeout) return;
      // Node read nothing since the ping; the kernel's byte count says whether anything arrived.
      if (!kernel && !this.#readKernel(socket)) return;
      if (a.bytesReceived > t.pingBytes[slot]) {
        t.pingAt[slot] = 0;
        t.rxAt[slot] = now;
        return;
      }
      return void this.#close(socket, 'heartbeat');
    }
    if (now - t.txAt[slot] >= hb.interval && !socket.writableEnded) {
      if (!kernel && !this.#readKernel(socket)) return;
      t.pingBytes[slot] = a.bytesReceived;
      t.pingAt[slot] = now;
      this.#ping(socket);
      // The ping's own bytes are not the application's: the next interval starts now.
      t.tx[slot] = bytesDispatched(socket) & MASK;
      t.txAt[slot] = now;
    }
  }

  #ping(socket: net.Socket): void {
    const hb = this.policy.heartbeat;
    if (hb === false) return;
    try {
      hb.ping(socket);
    } catch (err) {
      // A ping that throws cannot crash the process from a timer; the heartbeat still times out.
      if (!this.#pingWarned) {
        this.#pingWarned = true;
        process.emitWarning(`heartbeat.ping threw: ${(err as Error)?.message ?? String(err)}`, { code: 'SOCKTUNE_PING_FAILED' });
      }
    }
  }

  /**
   * The kernel closed the connection (its state is CLOSE). Node, reading, learns why on its next
   * read; a socket Node is not reading never would, so the guard ends it with the kernel's own
   * error: ETIMEDOUT (keepalive or the user timeout gave up: `'dead'`), ECONNRESET or EPIPE (the
   * peer reset it: `'reset'`).
   */
  #closedByKernel(socket: net.Socket): void {
    if (isReading(socket)) return;
    let errno = 0;
    try {
      errno = takeSocketError(socket);
    } catch {
      // no fd left: it is closing anyway
    }
    this.#forget(socket, false);
    const error = errno !== 0 ? kernelError(-errno, 'read') : undefined;
    if (errno === ETIMEDOUT) this.#count(socket, 'dead');
    else if (errno !== 0) this.#count(socket, 'reset');
    destroyWith(socket, error);
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
    return this.closeWith(socket, reason, () => closeFor(socket, reason as CloseReason));
  }

  /**
   * A close of `socket` for `reason` that `close` performs (the HTTP/2 layer closes a session, not
   * its socket), forgotten, evented and counted like the guard's own. @internal
   */
  async closeWith(socket: net.Socket, reason: GuardReason, close: () => Promise<CloseReport | undefined>): Promise<void> {
    // Forget first: the close is this guard's, not a later 'dead' observation.
    this.#forget(socket, false);
    this.emit('closing', { socket, reason, origin: originOf(socket) } satisfies GuardCloseEvent);
    const report = await close();
    this.#count(socket, reason, report);
  }
}
