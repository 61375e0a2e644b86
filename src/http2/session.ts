/**
 * Policies on HTTP/2 sessions (`node:http2`, and so gRPC and undici over it). TCP keepalive cannot
 * notice what HTTP/2 sessions suffer most: a peer whose process hangs or is frozen while its kernel
 * keeps answering ACKs and keepalive probes, a proxy that keeps the connection and forwards no
 * frames. This layer watches the session itself, with the policy's keepalive budget:
 *
 * - the PING heartbeat: no frame received for `keepAlive.idle` sends PING; a PING unanswered for
 *   `keepAlive.interval` is repeated up to `keepAlive.count`; then the session is closed (reason
 *   `'heartbeat'`). Whether anything arrived is the count of bytes Node has read from the
 *   connection (every byte is part of a frame) and the PING ACK itself, never a timestamp;
 * - the server's limit on a client's PINGs (gRFC A8): GOAWAY ENHANCE_YOUR_CALM `too_many_pings`;
 *   and on the client side, the time between PINGs doubles for a peer that sent it (as grpc-js);
 * - maximum age (gRFC A9) on sessions a server accepted: GOAWAY, a grace for streams in flight;
 * - idle: a session without streams for `idleTimeout` is sent GOAWAY and closed;
 * - the CLOSE_WAIT of HTTP/2: a peer sent GOAWAY and the application keeps the session (a stream
 *   it never ends): closed at `halfCloseTimeout`.
 *
 * The session's socket gets the policy's kernel options from `tune` (the caller), and the guard
 * that tracks it keeps its socket-level deadlines (FIN received: the half-close deadline; the user
 * timeout). Every close is the guard's: counted in its stats and announced by its events.
 *
 * One timer per policy and guard, not one per session: every tick visits every session, reading a
 * counter. The tick is an eighth of the shortest time it times (1 s at most).
 * @module
 */
import type http2 from 'node:http2';
import net from 'node:net';
import { types } from 'node:util';
import { constants as osConstants } from 'node:os';
import { codes, kernelError, readArgument, socktuneError } from '../errors.js';
import { carriesSession, type Guard, type GuardReason } from '../guard/guard.js';
import { closeError, closeFor } from '../policy/close.js';
import type { Policy } from '../policy/presets.js';
import type { CloseReport } from '../policy/reset.js';
import { tcpInfo } from '../views.js';
import { builtin } from '../handle.js';

/** Node's HTTP/2 constants, read once a session exists (node:http2 is loaded then; socktune never loads it). */
let h2constants: typeof http2.constants | undefined;
const h2 = (): typeof http2.constants => (h2constants ??= builtin<typeof http2>('node:http2').constants);
const { ETIMEDOUT } = osConstants.errno;

/** A PING ACK on the wire (9-byte frame header, 8-byte payload): what answering a PING alone writes. */
const PING_ACK_BYTES = 17;
/** The debug data of gRPC's GOAWAY to a client that pings too often (gRFC A8). */
const TOO_MANY_PINGS = Buffer.from('too_many_pings');
/** The debug data of the GOAWAY of a session's maximum age (what grpc-js's server sends). */
const MAX_AGE = Buffer.from('max_age');
/** The largest stream ID: the first GOAWAY of a graceful close names it, so no stream in flight is refused (RFC 9113 §6.8). */
const LAST_STREAM_ID = 2 ** 31 - 1;
/** Peers whose PING limit this process learnt, at most: a bound on what a stream of distinct peers can cost. */
const BACKOFF_PEERS = 4096;
const MAX_TIMEOUT = 2 ** 31 - 1;

/**
 * Peers (address and port) that sent GOAWAY `too_many_pings`, and by how much the time between
 * this process's PINGs to them was multiplied since (gRFC A8: a client doubles its keepalive time).
 */
const backoff = new Map<string, number>();

/** The multiplier of the PING idle time for sessions to `peer` (1 unless it complained). */
export function pingBackoff(peer: string): number {
  return backoff.get(peer) ?? 1;
}

function peerOf(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

function learnBackoff(peer: string): void {
  const next = Math.min(pingBackoff(peer) * 2, 2 ** 20);
  backoff.delete(peer);
  if (backoff.size >= BACKOFF_PEERS) backoff.delete(backoff.keys().next().value as string);
  backoff.set(peer, next);
}

/**
 * Whether `value`'s prototype chain has a class of one of these names, read without running the
 * value's code. Node exports none of its HTTP/2 classes to test against, and making one of each to
 * learn them would load node:http2 into processes that never use it.
 */
function hasClass(value: unknown, names: readonly string[]): boolean {
  if (typeof value !== 'object' || value === null || types.isProxy(value)) return false;
  for (
    let proto = Object.getPrototypeOf(value) as object | null;
    proto !== null && !types.isProxy(proto);
    proto = Object.getPrototypeOf(proto) as object | null
  ) {
    const ctor: unknown = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value;
    if (typeof ctor === 'function' && names.includes(Object.getOwnPropertyDescriptor(ctor, 'name')?.value as string)) return true;
    if (ctor === Object) return false;
  }
  return false;
}

/** Whether `server` is an HTTP/2 server (`http2.createServer`, `http2.createSecureServer`, their subclasses). */
export function isHttp2Server(server: net.Server): boolean {
  return hasClass(server, ['Http2Server', 'Http2SecureServer']);
}

/** Whether `value` is an `Http2Session` (client or server). */
export function isHttp2Session(value: unknown): value is http2.Http2Session {
  return hasClass(value, ['Http2Session']);
}

const noop = (): void => {};

/**
 * The socket under `session`. Node hands a session's users a Proxy for it (`session.socket`),
 * which refuses `setKeepAlive` and the like and forwards everything else to the socket, methods
 * bound to it (documented: "All other interactions will be routed directly to the socket"). So an
 * EventEmitter method that returns its receiver returns the socket itself: `off()` of a listener
 * that was never added does nothing else.
 */
export function sessionSocket(session: http2.Http2Session): net.Socket {
  let socket: unknown;
  try {
    const proxy = session.socket as net.Socket | undefined | null;
    socket = proxy == null ? undefined : proxy.off('socktune.none', noop);
  } catch (cause) {
    // ERR_HTTP2_SOCKET_UNBOUND: the session is destroyed and has let go of its socket.
    if (session.destroyed) throw socktuneError(codes.SOCKET_CLOSED, 'The HTTP/2 session is destroyed');
    return readArgument('session', session, () => {
      throw cause;
    });
  }
  if (socket === undefined) throw socktuneError(codes.SOCKET_CLOSED, 'The HTTP/2 session is destroyed');
  if (!(socket instanceof net.Socket) || types.isProxy(socket)) {
    throw socktuneError(codes.NOT_TCP, 'socktune works on TCP sockets only; this HTTP/2 session runs over a stream that is not a net.Socket', 'TypeError');
  }
  return socket;
}

/** A session the watch follows, and where each of its rules stands. */
interface Tracked {
  readonly session: http2.Http2Session;
  readonly socket: net.Socket;
  /** A session a server of this process accepted (max age and the PING limit are a server's). */
  readonly accepted: boolean;
  /** `socket.bytesRead` at the last visit. */
  bytes: number;
  /** A PING was acknowledged since the last visit. */
  acked: boolean;
  /** No frame received since then (the visit before the one that saw the count move: a lower bound). */
  quietSince: number;
  /** This idle period's wait before the first PING: the idle time, less its jitter. */
  idleWait: number;
  /** PINGs sent and unanswered in this run of probes; 0: none out. */
  probes: number;
  /** When the latest of them was sent. */
  probeAt: number;
  /** Streams open now (client: made by `request()`, server: the `'stream'` events). */
  streams: number;
  /** Since when the session has had no stream. */
  idleSince: number;
  /** When the peer's GOAWAY arrived; 0: none. */
  goawayAt: number;
  /** Server: when the client's latest PING arrived (-Infinity: none yet). */
  pingAt: number;
  /** Server: `socket.bytesWritten` then. */
  pingWritten: number;
  /** Server: PINGs faster than the limit in a row, with no data sent between them. */
  strikes: number;
  /** The maximum-age timer, then the grace timer. */
  timer?: NodeJS.Timeout;
  /** This session is being closed (by a rule, or by the application): no rule acts on it again. */
  closing: boolean;
  /** Called when its last open stream ends (a graceful close waiting for that). */
  onIdle?: () => void;
  /** The watch whose rules it is under now (`tune` again moves it). */
  watch: SessionWatch;
}

/**
 * The sessions of one policy tracked by one guard, and the one timer that visits them.
 */
class SessionWatch {
  readonly #policy: Policy;
  readonly #guard: Guard;
  readonly #sessions = new Set<Tracked>();
  /** Milliseconds between two visits of every session. */
  readonly #period: number;
  readonly #idle: number;
  readonly #interval: number;
  readonly #count: number;
  readonly #ping: boolean;
  #timer: NodeJS.Timeout | undefined;
  #lastTick = 0;

  constructor(policy: Policy, guard: Guard) {
    this.#policy = policy;
    this.#guard = guard;
    const ka = policy.keepAlive;
    this.#ping = policy.http2.ping && typeof ka === 'object';
    this.#idle = typeof ka === 'object' ? ka.idle : 0;
    this.#interval = typeof ka === 'object' ? ka.interval : 0;
    this.#count = typeof ka === 'object' ? ka.count : 0;
    // Each rule is met within an eighth of the shortest time it times, a second at most.
    const times = [policy.idleTimeout, policy.halfCloseTimeout].filter((t): t is number => t !== false);
    if (this.#ping) times.push(this.#idle * (1 - policy.http2.pingJitter), this.#interval);
    this.#period = Math.max(10, Math.min(1000, Math.floor(Math.min(...times, 8000) / 8)));
  }

  /** Whether this watch has anything to do on a session of its policy. */
  static needed(policy: Policy): boolean {
    const h = policy.http2;
    return (
      (h.ping && typeof policy.keepAlive === 'object') ||
      h.minPingInterval !== false ||
      h.maxAge !== false ||
      policy.idleTimeout !== false ||
      policy.halfCloseTimeout !== false
    );
  }

  /** Starts following `session` (connected) over `socket`. */
  add(session: http2.Http2Session, socket: net.Socket): Tracked {
    const now = performance.now();
    const accepted = session.type === h2().NGHTTP2_SESSION_SERVER;
    const r: Tracked = {
      session,
      socket,
      accepted,
      bytes: socket.bytesRead,
      acked: false,
      quietSince: now,
      idleWait: 0,
      probes: 0,
      probeAt: 0,
      streams: 0,
      idleSince: now,
      goawayAt: 0,
      pingAt: -Infinity,
      pingWritten: socket.bytesWritten,
      strikes: 0,
      closing: false,
      watch: this,
    };
    listen(r);
    this.adopt(r);
    return r;
  }

  /** Puts `r` under this watch's rules (a new session, or one tuned again with another policy). */
  adopt(r: Tracked): void {
    // A session being closed (by a rule, or ending) finishes that way.
    if (r.closing) return;
    const previous = r.watch;
    if (previous !== this) {
      previous.#forget(r);
      r.closing = false;
      r.watch = this;
    }
    if (r.timer !== undefined) clearTimeout(r.timer);
    r.timer = undefined;
    r.probes = 0;
    r.idleWait = this.#idleWait(r);
    this.#sessions.add(r);
    if (r.accepted && this.#policy.http2.maxAge !== false) this.#ageTimer(r, this.#policy.http2.maxAge);
    if (this.#timer === undefined) {
      this.#lastTick = performance.now();
      this.#timer = setInterval(() => this.#tick(), this.#period);
      this.#timer.unref();
    }
  }

  /** The session closed. */
  closed(r: Tracked): void {
    this.#forget(r);
  }

  onStream(r: Tracked, stream: http2.Http2Stream): void {
    r.streams++;
    stream.once('close', () => {
      if (--r.streams !== 0) return;
      r.idleSince = performance.now();
      r.onIdle?.();
    });
  }

  /** The wait before the first PING of an idle period: the idle time (doubled per complaint of the peer), less the jitter. */
  #idleWait(r: Tracked): number {
    const idle = Math.min(this.#idle * (r.accepted ? 1 : pingBackoff(peerOf(r.socket))), MAX_TIMEOUT);
    return idle * (1 - this.#policy.http2.pingJitter * Math.random());
  }

  #forget(r: Tracked): void {
    r.closing = true;
    if (r.timer !== undefined) clearTimeout(r.timer);
    this.#sessions.delete(r);
    if (this.#sessions.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #tick(): void {
    const now = performance.now();
    const previous = this.#lastTick;
    this.#lastTick = now;
    for (const r of this.#sessions) {
      if (r.closing) continue;
      if (r.session.destroyed) {
        this.#forget(r);
        continue;
      }
      this.#visit(r, now, previous);
    }
  }

  #visit(r: Tracked, now: number, previous: number): void {
    const p = this.#policy;
    // The CLOSE_WAIT of HTTP/2: the peer said it is done and the application keeps the session.
    if (r.goawayAt !== 0 && p.halfCloseTimeout !== false && now - r.goawayAt >= p.halfCloseTimeout) return this.#fail(r, 'half-closed');
    if (p.idleTimeout !== false && r.streams === 0 && !r.session.closed && now - r.idleSince >= p.idleTimeout) return this.#goaway(r, 'idle');
    // Sessions are followed from their connect on: no need to ask again.
    if (this.#ping) this.#heartbeat(r, now, previous);
  }

  /**
   * The PING heartbeat. A frame arrived since the last visit when Node has read more bytes, or a
   * PING was acknowledged: the peer is there, and the idle wait starts again from the visit before
   * (no later than the frame). Otherwise, once the idle wait has passed, a PING; once
   * `interval` has passed after a PING, another, up to `count`; after the last, the close.
   */
  #heartbeat(r: Tracked, now: number, previous: number): void {
    const bytes = r.socket.bytesRead;
    if (bytes !== r.bytes || r.acked) {
      r.bytes = bytes;
      r.acked = false;
      r.quietSince = previous;
      if (r.probes !== 0) {
        r.probes = 0;
        r.idleWait = this.#idleWait(r);
      }
      return;
    }
    if (r.probes === 0) {
      if (now - r.quietSince >= r.idleWait) this.#probe(r, now);
      return;
    }
    if (now - r.probeAt < this.#interval) return;
    if (r.probes >= this.#count) return this.#fail(r, 'heartbeat');
    this.#probe(r, now);
  }

  #probe(r: Tracked, now: number): void {
    r.probes++;
    r.probeAt = now;
    try {
      // The answer is a frame like any: the next visit sees it (the ACK's bytes are read too).
      r.session.ping((err) => {
        if (err === null) r.acked = true;
      });
    } catch {
      // Destroyed meanwhile (the next visit forgets it); a PING that cannot be sent is one unanswered.
    }
  }

  onGoaway(r: Tracked, code: number, data: Buffer | undefined): void {
    if (r.goawayAt === 0) r.goawayAt = performance.now();
    // gRFC A8: a server that finds this client's PINGs too frequent says so; the time between
    // PINGs to it doubles for the sessions that follow (this one is closing).
    if (!r.accepted && code === h2().NGHTTP2_ENHANCE_YOUR_CALM && data !== undefined && TOO_MANY_PINGS.equals(data)) learnBackoff(peerOf(r.socket));
  }

  /**
   * Server: a client's PING (gRFC A8). One sent sooner than `minPingInterval` after the previous
   * one, with no data sent by this side between them, is a strike; data sent resets the strikes;
   * more than `maxPingStrikes` in a row is GOAWAY ENHANCE_YOUR_CALM `too_many_pings`. "Data sent"
   * is this side having written more than the previous PING's ACK (a lenient reading: any frame
   * but a PING ACK counts), so a strike is never given to a client that a server wrote to.
   */
  onPing(r: Tracked): void {
    const min = this.#policy.http2.minPingInterval;
    if (min === false || r.closing) return;
    const now = performance.now();
    const written = r.socket.bytesWritten;
    if (written - r.pingWritten > PING_ACK_BYTES) r.strikes = 0;
    else if (now - r.pingAt < min) r.strikes++;
    r.pingAt = now;
    r.pingWritten = written;
    if (r.strikes > this.#policy.http2.maxPingStrikes) this.#tooManyPings(r);
  }

  #tooManyPings(r: Tracked): void {
    r.closing = true;
    void this.#guard.closeWith(r.socket, 'too-many-pings', () => {
      const { session } = r;
      try {
        session.goaway(h2().NGHTTP2_ENHANCE_YOUR_CALM, session.state.lastProcStreamID ?? 0, TOO_MANY_PINGS);
      } catch {
        // Already destroyed.
      }
      session.destroy(undefined, h2().NGHTTP2_ENHANCE_YOUR_CALM);
      return closed(session);
    });
  }

  /**
   * Closes a session whose peer failed a rule (heartbeat, a GOAWAY kept past the half-close
   * deadline) the way the guard closes a connection: its socket, the policy's way (FIN or RST),
   * with an error the session is destroyed with and the application sees on it, when it listens
   * for the session's `'error'` (an unheard one would crash it). A peer that answered no PING is
   * declared dead as the kernel's keepalive would declare it, on the same budget: ETIMEDOUT (with
   * `reason: 'heartbeat'`), which gRPC reports as UNAVAILABLE, as for its own keepalive; a GOAWAY
   * kept too long is `ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT`.
   */
  #fail(r: Tracked, reason: 'heartbeat' | 'half-closed'): void {
    r.closing = true;
    let detail: string | Error;
    if (reason === 'heartbeat') {
      const err = kernelError(-ETIMEDOUT, 'read') as Error & { reason?: string };
      err.message = `read ETIMEDOUT: the HTTP/2 peer answered none of ${this.#count} PINGs ${this.#interval} ms apart after ${Math.round(r.idleWait)} ms without a frame (socktune, reason heartbeat)`;
      err.reason = 'heartbeat';
      detail = err;
    } else {
      detail = `closed by socktune: the HTTP/2 peer sent GOAWAY and the session was still open ${this.#policy.halfCloseTimeout} ms later (reason half-closed)`;
    }
    void this.#guard.closeWith(r.socket, reason, () => {
      if (r.session.listenerCount('error') > 0) return closeFor(r.socket, reason, detail);
      r.session.destroy();
      return closed(r.session);
    });
  }

  /**
   * A graceful end (RFC 9113 §6.8): GOAWAY naming the largest stream ID, so every stream the peer
   * has sent is still served; while streams are open, a PING, whose ACK the peer sends after every
   * stream it sent before the GOAWAY reached it; then Node's `close()`, a GOAWAY naming the last
   * stream processed (the session ends when its streams do).
   *
   * Once a GOAWAY is sent and no stream is open, nghttp2 stops reading the connection (its
   * `want_read` is false): what the peer sends then, its ACK included, stays unread. So the final
   * GOAWAY goes at once when no stream is open, or when the last one ends. A stream the peer sent
   * that the final GOAWAY does not name, and one it had queued but not sent when a GOAWAY arrived,
   * are refused (REFUSED_STREAM: not processed, safe to send again; gRPC does, transparently). A
   * peer that answers no PING while streams are open is closed once it has sent nothing for four
   * round trips (the kernel's smoothed RTT, 250 ms at least; the kernel's count of bytes received
   * decides, so a server too busy to read the ACK in time does not close early). `'max-age'` gives
   * streams in flight `maxAgeGrace`, then destroys the session.
   */
  #goaway(r: Tracked, reason: Extract<GuardReason, 'idle' | 'max-age'>): void {
    r.closing = true;
    if (r.timer !== undefined) clearTimeout(r.timer);
    const { session } = r;
    void this.#guard.closeWith(r.socket, reason, () => {
      const done = closed(session);
      let shut = false;
      let fallback: NodeJS.Timeout | undefined;
      const close = (): void => {
        if (shut) return;
        shut = true;
        if (fallback !== undefined) clearTimeout(fallback);
        if (!session.destroyed) session.close();
      };
      try {
        session.goaway(h2().NGHTTP2_NO_ERROR, LAST_STREAM_ID, reason === 'max-age' ? MAX_AGE : undefined);
      } catch {
        close();
      }
      if (r.streams === 0) close();
      else {
        r.onIdle = close;
        const view = kernelView(r.socket);
        const wait = Math.max(250, 4 * view.rtt);
        let received = view.bytesReceived;
        const silent = (): void => {
          // The peer sent something since the last look (its ACK may be behind it): look again.
          const now = kernelView(r.socket).bytesReceived;
          if (now === received) return close();
          received = now;
          fallback = setTimeout(silent, wait).unref();
        };
        fallback = setTimeout(silent, wait);
        fallback.unref();
        try {
          if (!session.ping(() => close())) close();
        } catch {
          close();
        }
      }
      const grace = this.#policy.http2.maxAgeGrace;
      if (reason === 'max-age' && grace !== false) {
        r.timer = setTimeout(() => {
          close();
          if (!session.destroyed)
            session.destroy(closeError('max-age', `closed by socktune: streams still open ${grace} ms after the session's max-age GOAWAY (reason max-age)`));
        }, grace);
        r.timer.unref();
      }
      return done;
    });
  }

  #ageTimer(r: Tracked, maxAge: number): void {
    // gRPC spreads ages ±10 % so sessions opened together do not all end together.
    const jitter = this.#policy.http2.maxAgeJitter;
    const age = Math.min(MAX_TIMEOUT, Math.max(0, Math.round(maxAge * (1 + jitter * (2 * Math.random() - 1)))));
    r.timer = setTimeout(() => {
      r.timer = undefined;
      if (!r.closing && !r.session.destroyed && !r.session.closed) this.#goaway(r, 'max-age');
    }, age);
    r.timer.unref();
  }
}

/** The record of each session a watch follows, for the listeners (shared by every session). */
const records = new WeakMap<http2.Http2Session, Tracked>();

function onClose(this: http2.Http2Session): void {
  const r = records.get(this);
  if (r !== undefined) r.watch.closed(r);
}

function onGoawayFrame(this: http2.Http2Session, code: number, _lastStreamID: number, data?: Buffer): void {
  const r = records.get(this);
  if (r !== undefined) r.watch.onGoaway(r, code, data);
}

function onServerStream(this: http2.Http2Session, stream: http2.Http2Stream): void {
  const r = records.get(this);
  if (r !== undefined) r.watch.onStream(r, stream);
}

function onPingFrame(this: http2.Http2Session): void {
  const r = records.get(this);
  if (r !== undefined) r.watch.onPing(r);
}

/**
 * Listens to the session's events: its end, the peer's GOAWAY, its streams, the client's PINGs,
 * for whichever watch it is under when they come. grpc-js removes every listener of its client
 * sessions once their first SETTINGS arrive (transport.ts, `session.removeAllListeners()` on
 * `'remoteSettings'`): a `'remoteSettings'` listener of ours, which runs after its own (an emit
 * calls the listeners it had when it began), puts them back. The end is also seen by the watch's
 * visits (`session.destroyed`) whatever becomes of the listeners.
 */
function ensureListeners(this: http2.Http2Session): void {
  const r = records.get(this);
  if (r === undefined || this.destroyed) return;
  const add = (event: string, fn: Parameters<http2.Http2Session['on']>[1]): void => {
    if (!this.listeners(event).includes(fn)) this.on(event, fn);
  };
  add('close', onClose);
  add('goaway', onGoawayFrame);
  add('remoteSettings', ensureListeners);
  if (r.accepted) {
    add('stream', onServerStream);
    add('ping', onPingFrame);
  }
}

function listen(r: Tracked): void {
  const { session } = r;
  records.set(session, r);
  ensureListeners.call(session);
  if (!r.accepted) {
    // A client's streams are made by request(), which announces nothing: the instance's own
    // request() counts them (the method is looked up on the prototype at each call).
    const client = session as http2.ClientHttp2Session;
    client.request = function request(this: http2.ClientHttp2Session, ...args: Parameters<http2.ClientHttp2Session['request']>) {
      const proto = Object.getPrototypeOf(client) as { request: http2.ClientHttp2Session['request'] };
      const stream = proto.request.apply(this, args);
      r.watch.onStream(r, stream);
      return stream;
    } as http2.ClientHttp2Session['request'];
  }
}

/**
 * The kernel's smoothed round-trip time of `socket` (milliseconds) and count of bytes received;
 * zeros where they cannot be read (the socket is closing).
 */
function kernelView(socket: net.Socket): { rtt: number; bytesReceived: number } {
  try {
    const info = tcpInfo(socket);
    return { rtt: info.rtt / 1000, bytesReceived: info.bytesReceived };
  } catch {
    return { rtt: 0, bytesReceived: 0 };
  }
}

/** Resolves when `session` has closed. */
function closed(session: http2.Http2Session): Promise<CloseReport | undefined> {
  if (session.destroyed) return Promise.resolve(undefined);
  return new Promise((resolve) => session.once('close', () => resolve(undefined)));
}

const watches = new WeakMap<Guard, Map<Policy, SessionWatch>>();
/** Sessions under a policy's HTTP/2 rules: their record, or `null` until connected. */
const watched = new WeakMap<http2.Http2Session, Tracked | null>();

/**
 * Puts `session` under `policy`'s HTTP/2 rules, its closes counted by `guard`. Its socket must be
 * tuned already (its kernel options and socket-level deadlines are the socket's). A session still
 * connecting is watched from its `'connect'`; a session watched already moves to these rules.
 *
 * @returns whether the policy has HTTP/2 rules to apply
 */
export function watchSession(session: http2.Http2Session, socket: net.Socket, policy: Policy, guard: Guard): boolean {
  // Whatever the policy, the guard's byte-counting rules must not write into a session's stream.
  carriesSession(socket);
  if (!SessionWatch.needed(policy)) return false;
  if (session.destroyed) return true;
  let byPolicy = watches.get(guard);
  if (byPolicy === undefined) watches.set(guard, (byPolicy = new Map()));
  let watch = byPolicy.get(policy);
  if (watch === undefined) byPolicy.set(policy, (watch = new SessionWatch(policy, guard)));
  const w = watch;
  const known = watched.get(session);
  if (known !== undefined && known !== null) {
    w.adopt(known);
  } else if (known === null || session.connecting) {
    // The latest call decides which rules the session gets once connected.
    pending.set(session, w);
    if (known === undefined) {
      watched.set(session, null);
      session.once('connect', () => {
        if (!session.destroyed) watched.set(session, pending.get(session)!.add(session, socket));
      });
    }
  } else {
    watched.set(session, w.add(session, socket));
  }
  return true;
}

/** The watch a connecting session goes to once connected. */
const pending = new WeakMap<http2.Http2Session, SessionWatch>();

/** Whether `session` is under a policy's HTTP/2 rules. */
export function isWatched(session: http2.Http2Session): boolean {
  return watched.has(session);
}
