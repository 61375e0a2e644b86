/**
 * Policies: plain, frozen data saying which kernel options a connection gets and how its life ends
 * (deadlines, heartbeats, FIN or RST). `tune`, `tuneServer`, the agents and the undici connector
 * read this data; nothing here touches a socket.
 * @module
 */
import type net from 'node:net';
import { Stage, checkInteger, checkOptions, encodeFor, limits, type KeepAliveOptions, type PortRange } from '../options.js';
import { requirePlatform } from '../views.js';
import { didYouMean, invalidArgType, invalidArgValue, outOfRange, readArgument } from '../errors.js';

/** How connections this side closes end. */
export type ResetScope =
  /** Always with FIN (Node's behaviour). */
  | false
  /** Every close this side starts (`end()`, `destroy()`, deadlines) ends with a safe RST. */
  | 'always'
  /**
   * nginx's `reset_timedout_connection`: RST only for connections closed because they timed out
   * or were abandoned (a `'timeout'` event, an idle, heartbeat, half-close or FIN-wait deadline);
   * ordinary closes keep FIN.
   */
  | 'timeout';

/** What the reset path does when the send queue is still not acknowledged at `drainTimeout`. */
export type DrainTimeoutAction =
  /** Reset anyway; the bytes that may not arrive are reported. */
  | 'reset'
  /** End with FIN instead, so the kernel keeps delivering; the connection may then pass TIME_WAIT. */
  | 'fin';

/** Which requests a pool sends once more when their pooled connection closed under them. */
export type PoolRetry =
  /** None: the failure reaches the caller (Node's behaviour). */
  | false
  /**
   * Requests with an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) or an
   * `Idempotency-Key` header, whose body was given whole (none, a string or a buffer).
   */
  | 'idempotent'
  /** Any request whose bytes were all written when the connection closed (the caller knows its server). */
  | 'any';

/** An application heartbeat: ping after the connection has sent nothing for `interval`. */
export interface HeartbeatOptions {
  /** Writer-idle time before a ping is sent, in milliseconds. */
  interval: number;
  /** Time to wait for any data from the peer after a ping, in milliseconds; then the connection is closed (reason `'heartbeat'`). */
  timeout: number;
  /** Writes the protocol's ping on `socket` (for example a WebSocket ping frame or a newline). */
  ping: (socket: net.Socket) => void;
}

/**
 * What a policy does on an HTTP/2 session (`node:http2`, and so gRPC and undici over it), on top of
 * its socket's kernel options: a PING heartbeat on the policy's keepalive budget, the server's
 * limit on the client's PINGs (gRFC A8), and the maximum age of a server's sessions (gRFC A9).
 * An idle session (no stream for the policy's `idleTimeout`) is sent GOAWAY and closed.
 */
export interface Http2Options {
  /**
   * The PING heartbeat, on the same budget as TCP keepalive: a session that has received no frame
   * for `keepAlive.idle` sends PING; a PING unanswered for `keepAlive.interval` is repeated, up to
   * `keepAlive.count`, and then the session is destroyed with `ERR_SOCKTUNE_HEARTBEAT_TIMEOUT`
   * (reason `'heartbeat'`). It finds what TCP keepalive cannot: a peer whose process is frozen
   * while its kernel answers, a proxy that keeps the connection and forwards nothing. Needs
   * `keepAlive`. Default `false`; `gracefulHeartbeat`: `true` (when it has keepalive).
   */
  readonly ping: boolean;
  /**
   * How much shorter than `keepAlive.idle` the wait before each first PING may be, drawn at random,
   * as a fraction of it (0 to 0.5): sessions opened together do not ping together. Never longer
   * than the budget. Default 0.
   */
  readonly pingJitter: number;
  /**
   * Servers (sessions this process accepted): the shortest time between two PINGs of a client, in
   * milliseconds, when this side sent no data in between (gRFC A8's
   * `min_recv_ping_interval_without_data`; gRPC servers: 300 000). A client that pings faster more
   * than `maxPingStrikes` times is sent GOAWAY ENHANCE_YOUR_CALM with `too_many_pings` and closed
   * (reason `'too-many-pings'`). `false` (the default): any rate.
   */
  readonly minPingInterval: number | false;
  /** Servers: PINGs faster than `minPingInterval` tolerated before the GOAWAY (gRPC's default 2). */
  readonly maxPingStrikes: number;
  /**
   * Servers: a session this process accepted is sent GOAWAY after this long, in milliseconds
   * (gRFC A9's `max_connection_age`): its streams in flight finish, new streams go to a new
   * session, and the session closes once they are done (reason `'max-age'`). Spreads reconnects
   * over a pool's backends. `false` (the default): never.
   */
  readonly maxAge: number | false;
  /** The random spread of `maxAge`, as a fraction of it either way (0 to 0.5; default 0.1, gRPC's ±10 %). */
  readonly maxAgeJitter: number;
  /**
   * How long streams in flight may take after the max-age GOAWAY, in milliseconds
   * (`max_connection_age_grace`); then the session is destroyed. `false` (the default): as long as
   * they take.
   */
  readonly maxAgeGrace: number | false;
}

/** A policy: kernel options (the names of `configure`) plus lifecycle behaviour. */
export interface Policy {
  /** Names of the presets this policy was built from, joined with `+`. */
  readonly name: string;
  /**
   * Keepalive timings in milliseconds (`count`: probes), or `false` to turn keepalive off. Unset
   * (every preset but `gracefulHeartbeat`, whose default is 30 000 / 10 000 / 3): left to the socket.
   */
  readonly keepAlive?: false | Readonly<Required<KeepAliveOptions>>;
  /**
   * TCP_USER_TIMEOUT in milliseconds: how long written data may stay unacknowledged. Unset (every
   * preset but `gracefulHeartbeat`, whose default is the keepalive budget, 60 000): left to the socket.
   */
  readonly userTimeout?: number;
  /** TCP_NODELAY. Unset (every preset): left to the socket. */
  readonly noDelay?: boolean;
  /** Close a connection with no data in either direction for this long, in milliseconds (reason `'idle'`). `false` (the default): never. */
  readonly idleTimeout: number | false;
  /** Close a connection that has received nothing for this long, in milliseconds (reason `'idle'`). `false` (the default): never. */
  readonly readerIdleTimeout: number | false;
  /** Close a connection that has sent nothing for this long, in milliseconds (reason `'idle'`). `false` (the default): never. */
  readonly writerIdleTimeout: number | false;
  /** Application heartbeat (its durations in milliseconds), or `false` (the default): none. */
  readonly heartbeat: Readonly<HeartbeatOptions> | false;
  /** The peer has ended (FIN received; kernel CLOSE_WAIT) and this side has not, for this long, in milliseconds: close (reason `'half-closed'`). `false`: never (the default; `gracefulHeartbeat`: 30 000). */
  readonly halfCloseTimeout: number | false;
  /** This side has ended and the peer has sent no FIN for this long, in milliseconds: close (reason `'fin-wait'`). `false`: never (the default; `gracefulHeartbeat`: 30 000). */
  readonly finWaitTimeout: number | false;
  /** How often the guard visits each tracked connection, in milliseconds (default 5 000): a deadline is met within one interval after it passes. */
  readonly scanInterval: number;
  /**
   * Which closes end with RST instead of FIN (on connections this process accepted, at most
   * {@link Policy.resetAccepted}): `false` (the default) none, `'always'` (`rstOnClose`'s default)
   * every close this side starts, `'timeout'` closes on a timeout or deadline.
   */
  readonly reset: ResetScope;
  /**
   * The most `reset` does on connections this process accepted (a server's side), default
   * `'timeout'`: they are reset only when they timed out or were abandoned (nginx's
   * `reset_timedout_connection`), never on an ordinary close, because a reset that follows a
   * complete response can reach a well-behaved client before it has read that response, which
   * then fails with ECONNRESET. `'always'` lets `reset: 'always'` reset them too (for clients known
   * to read before the server closes); `false` never resets them. Connections this process opened
   * follow `reset` alone.
   */
  readonly resetAccepted: ResetScope;
  /**
   * How long a reset waits while the peer acknowledges nothing new, in milliseconds: it restarts
   * whenever the peer acknowledges more, so a slow reader that keeps reading is never cut off.
   * Counted from `end()`/`destroy()`, even while Node's own buffer is still flushing. Default 5 000.
   */
  readonly drainTimeout: number;
  /** A cap on a reset's whole wait, in milliseconds, however the peer progresses; `false` (the default): none. */
  readonly drainDeadline: number | false;
  /** What a reset does when the peer stopped acknowledging (or `drainDeadline` passed) with bytes unacknowledged (default `'reset'`). */
  readonly onDrainTimeout: DrainTimeoutAction;
  /**
   * Pools (agents, undici): how long an idle pooled connection may wait for reuse when the server
   * sent no `Keep-Alive: timeout=` hint, in milliseconds (default 3 000).
   */
  readonly poolIdleTimeout: number;
  /** Pools: how much sooner than the server's announced `Keep-Alive: timeout=` an idle connection is evicted, in milliseconds (default 2 000). */
  readonly poolIdleMargin: number;
  /**
   * Pools: a request whose pooled (reused) connection the server closed or reset before any byte
   * of a response is sent once more on a new connection, when it is one of these (default
   * `'idempotent'`). Once: a second failure reaches the caller.
   */
  readonly poolRetry: PoolRetry;
  /**
   * Servers: the idle timeout of the proxy or load balancer in front, in milliseconds (AWS ALB
   * 60 000 by default, nginx's upstream `keepalive_timeout` 60 000), or `false` when there is none.
   * An HTTP server under the policy keeps idle keep-alive connections longer than that
   * (`keepAliveTimeout` one second above it, `headersTimeout` one second above that), so the
   * proxy, not the server, closes an idle connection, and never sends a request on one the server
   * is closing (a 502). A `keepAliveTimeout` the application set itself stays. Unset (the default,
   * `false` not given) under `socktune/register`: a server that keeps idle connections less than
   * 60 s gets one warning.
   */
  readonly upstreamIdleTimeout: number | false;
  /** HTTP/2 sessions: the PING heartbeat, the server's PING limit, maximum age (see {@link Http2Options}). */
  readonly http2: Readonly<Http2Options>;
  /**
   * Connections this side opens from a pinned source address (`localAddress` without
   * `localPort`): IP_BIND_ADDRESS_NO_PORT at the pre-connect stage (Linux), so the port is chosen
   * at connect, per destination, instead of reserved at bind for every destination alike (a
   * 1,000-port range then holds 1,000 connections to each destination, not 1,000 in all). Default
   * `true`; it changes nothing for a connection without `localAddress`.
   */
  readonly bindAddressNoPort: boolean;
  /**
   * Connections this side opens: IP_LOCAL_PORT_RANGE at the pre-connect stage (Linux 6.3+), the
   * slice `{ min, max }` of `net.ipv4.ip_local_port_range` their ports come from (several processes
   * or hosts sharing one source address each take their own), or `false` (the default) for the
   * whole range.
   */
  readonly localPortRange: false | Readonly<PortRange>;
}

/** What presets and {@link compose} accept: any subset of a policy's fields (a policy is one too). */
export type PolicyOverrides = Partial<Omit<Policy, 'name' | 'keepAlive' | 'http2'>> & {
  /** Keepalive timings; fields left out keep the preset's. `false` turns keepalive off. */
  keepAlive?: false | KeepAliveOptions;
  /** HTTP/2 session fields; fields left out keep the preset's. */
  http2?: Partial<Http2Options>;
  name?: string;
};

const MINUTE = 60_000;
const never = { min: 1, max: 2 ** 31 - 1 };

/** The neutral policy every preset starts from: nothing changed, Node's behaviour. */
const base: Omit<Policy, 'name'> = {
  idleTimeout: false,
  readerIdleTimeout: false,
  writerIdleTimeout: false,
  heartbeat: false,
  halfCloseTimeout: false,
  finWaitTimeout: false,
  scanInterval: 5000,
  reset: false,
  resetAccepted: 'timeout',
  drainTimeout: 5000,
  drainDeadline: false,
  onDrainTimeout: 'reset',
  poolIdleTimeout: 3000,
  poolIdleMargin: 2000,
  poolRetry: 'idempotent',
  upstreamIdleTimeout: false,
  http2: Object.freeze({ ping: false, pingJitter: 0, minPingInterval: false, maxPingStrikes: 2, maxAge: false, maxAgeJitter: 0.1, maxAgeGrace: false }),
  bindAddressNoPort: true,
  localPortRange: false,
};

const lifecycleKeys = Object.keys(base);
const keepAliveFields = ['idle', 'interval', 'count'];
const heartbeatFields = ['interval', 'timeout', 'ping'];
/** The fields of {@link Http2Options}. */
export const http2Fields: readonly string[] = Object.freeze(Object.keys(base.http2));

/** The message of an unknown field `key` of `name`: the known ones, and the one meant when it is a near miss. */
function unknownField(name: string, key: string, known: readonly string[]): TypeError {
  const near = didYouMean(key, known);
  return invalidArgValue(name, key, `has no field '${key}'; known: ${known.join(', ')}${near === undefined ? '' : `; did you mean '${near}'?`}`);
}

/** A copy of the own fields of `value` (each read once), refusing any not in `known`. */
function ownFields(name: string, value: object, known: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw unknownField(name, key, known);
    const v = (value as Record<string, unknown>)[key];
    if (v !== undefined) out[key] = v;
  }
  return out;
}
const kernelKeys = ['keepAlive', 'userTimeout', 'noDelay'];
const knownKeys = ['name', ...kernelKeys, ...lifecycleKeys];
/** The field names a policy (and overrides) may have. */
export const policyFields: readonly string[] = Object.freeze([...knownKeys]);

function timeoutOrFalse(name: string, value: unknown): number | false {
  if (value === false) return false;
  return checkInteger(name, value, never);
}

/** A fraction from 0 to `max`: a finite number, nothing coerced. */
function checkFraction(name: string, value: unknown, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!(value >= 0 && value <= max)) throw outOfRange(name, `>= 0 and <= ${max}`, value);
  return value;
}

/** The HTTP/2 fields of a policy, each checked. */
function checkHttp2(policy: Policy): void {
  const h = policy.http2;
  if (typeof h !== 'object' || h === null) throw invalidArgType('policy.http2', 'an object of HTTP/2 fields', h);
  if (typeof h.ping !== 'boolean') throw invalidArgType('policy.http2.ping', 'of type boolean', h.ping);
  checkFraction('policy.http2.pingJitter', h.pingJitter, 0.5);
  timeoutOrFalse('policy.http2.minPingInterval', h.minPingInterval);
  checkInteger('policy.http2.maxPingStrikes', h.maxPingStrikes, { min: 0, max: 1000 });
  timeoutOrFalse('policy.http2.maxAge', h.maxAge);
  checkFraction('policy.http2.maxAgeJitter', h.maxAgeJitter, 0.5);
  if (h.maxAgeGrace !== false) checkInteger('policy.http2.maxAgeGrace', h.maxAgeGrace, { min: 0, max: 2 ** 31 - 1 });
  // One budget across layers: the PING heartbeat runs on the keepalive timings, and has none without them.
  if (h.ping && (typeof policy.keepAlive !== 'object' || policy.keepAlive === null)) {
    throw invalidArgValue(
      'policy.http2.ping',
      h.ping,
      'needs keepAlive { idle, interval, count } (the PING heartbeat runs on the keepalive budget); set http2: { ping: false } with keepAlive off',
    );
  }
}

/** Validates `policy` completely; throws the errors `configure` would, before any socket is touched. */
function check(policy: Policy): Policy {
  const { keepAlive, userTimeout, noDelay } = policy;
  checkOptions({ keepAlive, userTimeout, noDelay });
  for (const key of ['idleTimeout', 'readerIdleTimeout', 'writerIdleTimeout', 'halfCloseTimeout', 'finWaitTimeout', 'upstreamIdleTimeout'] as const) {
    timeoutOrFalse(`policy.${key}`, policy[key]);
  }
  checkInteger('policy.scanInterval', policy.scanInterval, { min: 10, max: 2 ** 31 - 1 });
  checkInteger('policy.drainTimeout', policy.drainTimeout, { min: 0, max: 2 ** 31 - 1 });
  if (policy.drainDeadline !== false) checkInteger('policy.drainDeadline', policy.drainDeadline, { min: 0, max: 2 ** 31 - 1 });
  checkInteger('policy.poolIdleTimeout', policy.poolIdleTimeout, never);
  // bindAddressNoPort is on by default and means "where the platform has it" (Linux): only its type
  // is checked. A port range is asked for by name, so a platform without one refuses it here.
  if (typeof policy.bindAddressNoPort !== 'boolean') throw invalidArgType('policy.bindAddressNoPort', 'of type boolean', policy.bindAddressNoPort);
  if (policy.localPortRange !== false) encodeFor(Stage.Connect, { localPortRange: policy.localPortRange }, 'policy');
  checkInteger('policy.poolIdleMargin', policy.poolIdleMargin, { min: 0, max: 2 ** 31 - 1 });
  for (const key of ['reset', 'resetAccepted'] as const) {
    const v = policy[key];
    if (v !== false && v !== 'always' && v !== 'timeout') throw invalidArgValue(`policy.${key}`, v, "must be false, 'always' or 'timeout'");
  }
  if (policy.poolRetry !== false && policy.poolRetry !== 'idempotent' && policy.poolRetry !== 'any') {
    throw invalidArgValue('policy.poolRetry', policy.poolRetry, "must be false, 'idempotent' or 'any'");
  }
  if (policy.onDrainTimeout !== 'reset' && policy.onDrainTimeout !== 'fin') {
    throw invalidArgValue('policy.onDrainTimeout', policy.onDrainTimeout, "must be 'reset' or 'fin'");
  }
  const hb = policy.heartbeat;
  if (hb !== false) {
    if (typeof hb !== 'object' || hb === null) throw invalidArgType('policy.heartbeat', 'false or an object { interval, timeout, ping }', hb);
    checkInteger('policy.heartbeat.interval', hb.interval, never);
    checkInteger('policy.heartbeat.timeout', hb.timeout, never);
    if (typeof hb.ping !== 'function') throw invalidArgType('policy.heartbeat.ping', 'of type function', hb.ping);
  }
  checkHttp2(policy);
  // Every value is valid. A reset waits on SIOCOUTQ and the deadlines read TCP_INFO: where the
  // platform has neither, the policy is refused where it is built instead of doing nothing later.
  if (policy.reset !== false) requirePlatform('queues', `policy.reset '${policy.reset}' (the safe reset waits for SIOCOUTQ to drain)`);
  if (needsTracking(policy)) requirePlatform('tcpInfo', 'the deadlines of this policy (the guard reads TCP_INFO)');
  return policy;
}

/**
 * The fields a policy was built with, as opposed to the neutral defaults it inherits: composing a
 * policy over another overrides only these (so `gracefulHeartbeat(rstOnClose())` keeps both).
 */
const kExplicit = Symbol('socktune.policy.explicit');

/** Every policy {@link compose} built (and so every preset): the brand that tells a policy from look-alikes. */
const built = new WeakSet<object>();

/**
 * Whether `field` of `policy` was given when it was built (by the caller, or by a preset it was
 * composed from), rather than inherited from the neutral defaults. Pools use it to tell a limit the
 * user set (which caps) from a default (which gives way to the server's hint).
 */
export function isExplicit(policy: Policy, field: keyof Policy): boolean {
  const explicit = (policy as unknown as Record<symbol, object | undefined>)[kExplicit];
  return explicit !== undefined && Object.hasOwn(explicit, field);
}

/** Whether `value` is a policy built by `presets` or {@link compose} (not merely an object shaped like one). */
export function isPolicy(value: unknown): value is Policy {
  return typeof value === 'object' && value !== null && built.has(value);
}

/**
 * A policy as the API takes it: a policy built by `presets`/{@link compose} as it is, or plain
 * overrides, composed (and so validated) into one. Anything else is ERR_INVALID_ARG_TYPE.
 */
export function toPolicy(value: unknown, name = 'policy'): Policy {
  if (isPolicy(value)) return value;
  if (typeof value !== 'object' || value === null || readArgument(name, value, () => Array.isArray(value))) {
    throw invalidArgType(name, 'a policy (from presets or compose) or an object of policy fields', value);
  }
  return compose(value as PolicyOverrides);
}

/** Adds the own fields of one part of {@link compose} to `explicit` (names to `names`). */
function addPart(given: object, names: string[], explicit: Record<string, unknown>): void {
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw invalidArgType('policy', 'of type object', given);
  const own = isPolicy(given) ? (given as unknown as Record<symbol, PolicyOverrides>)[kExplicit] : given;
  // Own fields only, each read once: an inherited `idleTimeout` (a polluted Object.prototype)
  // is not a field of this policy, and a getter does not get to answer twice.
  for (const key of Object.keys(own)) {
    if (!knownKeys.includes(key)) throw unknownField('policy', key, knownKeys);
    const value = (own as Record<string, unknown>)[key];
    if (value === undefined) continue;
    if (key === 'name') {
      if (typeof value !== 'string') throw invalidArgType('policy.name', 'of type string', value);
      for (const n of value.split('+')) if (n && !names.includes(n)) names.push(n);
    } else if (key === 'keepAlive' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const prev = explicit.keepAlive;
      explicit.keepAlive = { ...(typeof prev === 'object' && prev !== null ? prev : {}), ...ownFields('policy.keepAlive', value, keepAliveFields) };
    } else if (key === 'localPortRange' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      explicit.localPortRange = ownFields('policy.localPortRange', value, ['min', 'max']);
    } else if (key === 'heartbeat' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      explicit.heartbeat = ownFields('policy.heartbeat', value, heartbeatFields);
    } else if (key === 'http2' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const prev = explicit.http2;
      explicit.http2 = { ...(typeof prev === 'object' && prev !== null ? prev : {}), ...ownFields('policy.http2', value, http2Fields) };
    } else {
      explicit[key] = value;
    }
  }
}

/**
 * Merges policies and overrides left to right into one validated, frozen policy. Keepalive
 * timings merge field by field; every other field is replaced. A policy passed as a part
 * contributes only the fields it was built with. Unknown fields are errors.
 */
export function compose(...parts: Array<PolicyOverrides | undefined>): Policy {
  const names: string[] = [];
  const explicit: Record<string, unknown> = {};
  for (const given of parts) {
    if (given === undefined) continue;
    // Reading the caller's object may run the caller's code (getters, Proxy traps): what it throws
    // is ERR_INVALID_ARG_VALUE with it as `cause`.
    readArgument('policy', given, () => addPart(given, names, explicit));
  }
  const out: Record<string, unknown> = { ...base, ...explicit };
  const ka = out.keepAlive;
  if (typeof ka === 'object' && ka !== null) {
    const { idle, interval, count } = ka as KeepAliveOptions;
    if (idle === undefined || interval === undefined || count === undefined) {
      throw invalidArgValue('policy.keepAlive', ka, 'needs idle, interval and count (a policy sets all three so every socket ends up the same)');
    }
    out.keepAlive = Object.freeze({ idle, interval, count });
  } else if (ka === true) {
    throw invalidArgValue('policy.keepAlive', ka, 'must be false or { idle, interval, count }');
  }
  if (typeof out.heartbeat === 'object' && out.heartbeat !== null) out.heartbeat = Object.freeze(out.heartbeat);
  // HTTP/2 fields merge field by field over the neutral ones, like keepalive timings.
  if (typeof out.http2 === 'object' && out.http2 !== null && out.http2 !== base.http2) out.http2 = Object.freeze({ ...base.http2, ...out.http2 });
  if (typeof out.localPortRange === 'object' && out.localPortRange !== null) out.localPortRange = Object.freeze(out.localPortRange);
  out.name = names.join('+') || 'custom';
  Object.defineProperty(out, kExplicit, { value: Object.freeze({ ...explicit, name: out.name }) });
  const policy = Object.freeze(check(out as unknown as Policy));
  built.add(policy);
  return policy;
}

/**
 * The keepalive budget: how long after the last packet keepalive alone declares the peer dead, in
 * milliseconds (idle + interval × count). Takes a policy's `keepAlive` as it is: `false` or unset
 * (keepalive off, or left to the socket, whose keepalive Node leaves off) is `Infinity`.
 */
export function keepAliveBudget(keepAlive: Required<KeepAliveOptions> | Policy['keepAlive']): number {
  if (keepAlive === false || keepAlive === undefined) return Infinity;
  if (typeof keepAlive !== 'object' || keepAlive === null) throw invalidArgType('keepAlive', 'an object { idle, interval, count }', keepAlive);
  const { idle, interval, count } = readArgument('keepAlive', keepAlive, () => ownFields('keepAlive', keepAlive, keepAliveFields));
  checkOptions({ keepAlive: { idle, interval, count } as KeepAliveOptions });
  if (idle === undefined || interval === undefined || count === undefined) {
    throw invalidArgValue('keepAlive', keepAlive, 'needs idle, interval and count');
  }
  return (idle as number) + (interval as number) * (count as number);
}

/**
 * Graceful heartbeat: find a peer that vanished in about a minute, keep idle connections alive
 * through middleboxes, and close connections the peer has half-closed or abandoned.
 *
 * Defaults and why:
 * - `keepAlive: { idle: 30 s, interval: 10 s, count: 3 }`: the first probe after 30 s of silence
 *   refreshes NAT and load-balancer state well inside the shortest common middlebox idle timeout
 *   (Azure LB 4 min; AWS NLB 350 s; GCP firewall 10 min); three probes 10 s apart survive a lost
 *   probe, so a vanished peer is declared dead (ETIMEDOUT) 60 s after its last packet.
 * - `userTimeout`: the same 60 s budget (idle + interval × count) unless given, because keepalive
 *   never fires while written data is unacknowledged; with it, data in flight to a vanished peer
 *   fails in 60 s instead of ~15 minutes of retransmissions (tcp_retries2).
 * - `halfCloseTimeout: 30 s` and `finWaitTimeout: 30 s`: a peer that sent FIN and an application
 *   that never ended (CLOSE_WAIT), or a peer that never answers our FIN, is closed within a minute.
 * - `scanInterval: 5 s`: each connection is visited once per interval, so a deadline is met within
 *   5 s after it passes; a visit asks the kernel nothing for a connection Node is reading (~50 ns),
 *   so 100,000 connections cost ~0.1% of a core.
 * - `idleTimeout`, `readerIdleTimeout`, `writerIdleTimeout`, `heartbeat`: off. An idle connection
 *   to a live peer is what keepalive keeps; closing it is the application's call.
 * - `http2.ping`: on (with keepalive). An HTTP/2 session (gRPC, undici) that has received no frame
 *   for the keepalive idle time sends PING, on the same budget: a peer whose process is frozen, or
 *   a proxy that keeps the connection and forwards nothing, answers keepalive probes from its
 *   kernel, but no PING.
 *
 * What the peer sees: a keepalive probe (an empty ACK) after each 30 s of silence; nothing else.
 *
 * @param overrides fields to change (the names of `configure` plus the lifecycle fields); may be
 *   another policy, such as `presets.rstOnClose()`
 */
function gracefulHeartbeat(overrides?: PolicyOverrides): Policy {
  const keepAlive = { idle: 30_000, interval: 10_000, count: 3 };
  const merged = compose({ name: 'graceful-heartbeat', keepAlive, halfCloseTimeout: MINUTE / 2, finWaitTimeout: MINUTE / 2 }, overrides);
  if (merged.keepAlive === false || merged.keepAlive === undefined) return merged;
  // One budget across layers: the user timeout (gRFC A18) and the PING heartbeat of HTTP/2 sessions
  // follow the keepalive budget, unless they were given.
  const follow: { userTimeout?: number; http2?: Partial<Http2Options> } = {};
  if (!isExplicit(merged, 'userTimeout')) follow.userTimeout = Math.min(keepAliveBudget(merged.keepAlive), limits.userTimeout.max);
  if (!isExplicitHttp2(merged, 'ping')) follow.http2 = { ping: true };
  return follow.userTimeout === undefined && follow.http2 === undefined ? merged : compose(merged, follow);
}

/** Whether the HTTP/2 field `field` of `policy` was given when it was built (see {@link isExplicit}). */
function isExplicitHttp2(policy: Policy, field: keyof Http2Options): boolean {
  const explicit = (policy as unknown as Record<symbol, { http2?: object } | undefined>)[kExplicit];
  return explicit?.http2 !== undefined && Object.hasOwn(explicit.http2, field);
}

/**
 * RST-on-close: connections this side closes end with RST instead of FIN, so this side keeps no
 * TIME_WAIT (no ephemeral-port exhaustion, no EADDRNOTAVAIL) — but only after the peer has
 * acknowledged every byte written.
 *
 * Defaults and why:
 * - `reset: 'always'` for connections this process opens (clients: where TIME_WAIT exhausts
 *   ephemeral ports); use `'timeout'` for nginx's narrower `reset_timedout_connection` (RST only
 *   for connections closed on a timeout or deadline).
 * - `resetAccepted: 'timeout'`: connections a server of this process accepted are reset only when
 *   they timed out or were abandoned. A server that resets right after a complete response makes a
 *   client that reads it a little later fail with ECONNRESET (181 of 200 responses read 20 ms after
 *   `'response'`), so ordinary closes of accepted connections keep FIN unless you set
 *   `resetAccepted: 'always'`.
 * - A connection the peer closed first (its FIN arrived, read or not) ends with FIN: this side
 *   keeps no TIME_WAIT after a passive close.
 * - `drainTimeout: 5 s` without progress: a peer that keeps acknowledging, however slowly, gets
 *   everything; one that acknowledged nothing new for 5 s has stopped reading (or vanished) and
 *   cannot hold the connection. The wait starts at `end()`/`destroy()`, even while Node's own
 *   buffer is still flushing. `drainDeadline` (off) caps the whole wait when that matters more.
 * - `onDrainTimeout: 'reset'`: the connection is reset and the bytes at risk are reported, never
 *   silently: the socket fails with `ERR_SOCKTUNE_DRAIN_TIMEOUT` (`error.bytesAtRisk`) —
 *   `socket.errored`, `'close'` with `hadError` true, the `end()` callback's error, and `'error'` when
 *   the application listens for it (an unheard `'error'` would crash the process, so it is not
 *   emitted then). Choose `'fin'` to fall back to a normal close that keeps delivering.
 *
 * What the peer sees: every byte written, then ECONNRESET instead of an end-of-stream (a Node.js 20
 * peer with bytes still unread when the RST arrives may see a plain end-of-stream).
 */
function rstOnClose(overrides?: PolicyOverrides): Policy {
  return compose({ name: 'rst-on-close', reset: 'always' }, overrides);
}

/** Ready-made policies. Each takes overrides (or another policy) and returns a new frozen policy. */
export const presets = Object.freeze({ gracefulHeartbeat, rstOnClose } as const);

/**
 * Whether applying `policy` needs the per-connection lifecycle tracker: deadlines, idle,
 * heartbeat, and a user timeout (which the guard holds off while a live peer's window is closed).
 */
export function needsTracking(policy: Policy): boolean {
  return (
    policy.idleTimeout !== false ||
    policy.readerIdleTimeout !== false ||
    policy.writerIdleTimeout !== false ||
    policy.heartbeat !== false ||
    policy.halfCloseTimeout !== false ||
    policy.finWaitTimeout !== false ||
    (policy.userTimeout ?? 0) > 0
  );
}

/** A policy's options in `configure`'s shape. */
export type KernelOptions = Readonly<{ keepAlive?: false | KeepAliveOptions; userTimeout?: number; noDelay?: boolean }>;

// Policies are frozen: their kernel options are worked out once, not for every socket.
const kernelCache = new WeakMap<Policy, KernelOptions>();
const keepAliveCache = new WeakMap<Policy, KernelOptions>();

function cached(cache: WeakMap<Policy, KernelOptions>, policy: Policy, keys: Array<'keepAlive' | 'userTimeout' | 'noDelay'>): KernelOptions {
  let out = cache.get(policy);
  if (out === undefined) {
    const o: Record<string, unknown> = {};
    for (const key of keys) if (policy[key] !== undefined) o[key] = policy[key];
    out = Object.freeze(o) as KernelOptions;
    cache.set(policy, out);
  }
  return out;
}

/** The kernel options of `policy`, in `configure`'s shape. */
export function kernelOptions(policy: Policy): KernelOptions {
  return cached(kernelCache, policy, ['keepAlive', 'userTimeout', 'noDelay']);
}

/** What Node's `setKeepAlive` overwrites and a tuned socket puts back: keepalive and the user timeout. */
export function keepAliveOptions(policy: Policy): KernelOptions {
  return cached(keepAliveCache, policy, ['keepAlive', 'userTimeout']);
}
