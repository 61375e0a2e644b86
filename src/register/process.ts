/**
 * The process-wide layer behind `socktune/register`: every TCP connection the process opens or
 * accepts gets the policy of the first rule that matches it, from Node's diagnostics channels,
 * through the same `adopt` the integrations use (TCP tuned, anything else passed through and
 * counted, a kernel refusal destroys the connection). One guard per rule.
 *
 * What Node publishes, and when (each checked by test/32-register.test.ts on every Node the suite
 * runs on):
 * - `net.client.socket`: Node 22 and 24 publish it at the start of every `Socket#connect()`
 *   (`net.connect`, `new net.Socket().connect()`, `tls.connect`; nodejs/node#58349). Node 20
 *   publishes it only from `net.connect()`/`net.createConnection()`, so there `Socket#connect` is
 *   wrapped to see the rest (pg's `new net.Socket()`, `tls.connect`). Either way the socket has
 *   not started connecting: it is settled on its `'connect'` event, ahead of the application's
 *   listeners, when its addresses are known.
 * - `net.server.socket`: after the server's `'connection'` event, with the accepted socket. On a
 *   TLS server that is the raw socket under the TLS layer; the TLS socket is settled on
 *   `'secureConnection'` instead, the moment the handshake is done.
 * - `tracing:net.server.listen:asyncStart`: in `server.listen()`, on the application's stack (the
 *   origin of the server's connections under trace).
 * - `undici:client:connected`: fetch's connection once connected (TLS: after the handshake); the
 *   net channels have settled it already, so this catches only sockets a connector made without
 *   `connect()`.
 *
 * HTTP/2 sessions have no channel on Node 20 (Node 22+ publishes streams, not sessions), so
 * `http2.connect` is wrapped once the application has loaded node:http2 (the module's export,
 * which grpc-js and undici call through the module object; `syncBuiltinESMExports` updates named
 * imports), and an HTTP/2 server's
 * `'session'` event is listened to from its `listen()`. A session gets the policy its socket got
 * (the socket is settled first: the session's `'connect'` follows the socket's).
 * @module
 */
import dc from 'node:diagnostics_channel';
import type http2 from 'node:http2';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import type tls from 'node:tls';
import { Guard, type GuardCloseEvent } from '../guard/guard.js';
import { drain, shutdownSettings, type ShutdownOptions, type ShutdownReport } from '../guard/shutdown.js';
import { recordOrigin } from '../guard/origin.js';
import { guardOf as trackerOf } from '../guard/guard.js';
import { policyOf } from '../policy/close.js';
import { isExplicit, type Policy } from '../policy/presets.js';
import { inheritedFrom, keepAliveAbove, putOnListener } from '../integrations/server.js';
import type http from 'node:http';
import { adopt } from '../integrations/tune.js';
import { isHttp2Server, isWatched, watchSession } from '../http2/session.js';
import { isPolicyAgent, sweepFreeSockets } from '../integrations/pool.js';
import { builtin, connectHost, isTlsServer, loadedBuiltin, runtime } from '../handle.js';
import { armRetry, noteRequestOptions } from '../integrations/retry.js';
import { retryGlobalFetch } from '../integrations/undici-retry.js';
import { socktuneError } from '../errors.js';
import { policyPrebind, prebindEveryConnection } from '../stage/prebind.js';
import type { ConnectTarget } from '../handle.js';
import type { EncodedOptions } from '../options.js';
import type { Direction, RegisterConfig, Rule } from './config.js';
import { captureOrigin, endpoints, traceLine, tracedReasons } from './trace.js';
import { watchConnection } from './ends.js';

/** What the registration did with the connections it saw. */
export interface RegisterStats {
  /** Connections this process opened, once connected. */
  opened: number;
  /** Connections this process's servers accepted (TLS: once the handshake was done). */
  accepted: number;
  /** Connections that got a rule's policy. */
  tuned: number;
  /** Connections a matching rule's policy cannot apply to (Unix-domain sockets): passed through untouched. */
  untuned: number;
  /** Connections the application had put under a policy itself (`tune`, `tuneServer`, `createAgent`, `createDispatcher`): left to it. */
  explicit: number;
  /** Connections no rule matched, or whose rule's policy is `false`: left untouched. */
  unmatched: number;
  /** Connections destroyed because the kernel refused the policy (a policy fails closed). */
  refused: number;
  /**
   * Requests of Node's own agents (the global ones and every `http.Agent`/`https.Agent` an
   * application or a library makes) and of the global `fetch`, sent once more on a new connection
   * because their pooled connection was closed or reset under them before any byte of the
   * response (`poolRetry`).
   */
  retried: number;
  /**
   * Pooled connections of Node's own agents dropped before reuse because the kernel no longer held
   * them as ESTABLISHED (the server's FIN or RST had arrived while they waited in the pool); the
   * request got another connection.
   */
  stale: number;
  /**
   * HTTP/2 sessions (`http2.connect`'s, grpc-js's and undici's, and those of HTTP/2 servers) put
   * under the policy of their connection's rule: the PING heartbeat, maximum age, the PING limit.
   */
  sessions: number;
  /**
   * Whether the registration applies policies. `false` when it is not loaded, or when it could not
   * start on this host (no native addon for this platform, an unsupported runtime): the process
   * then runs untouched, and `reason` says why.
   */
  active: boolean;
  /** Why the registration is not active, as `CODE: message` (`ERR_SOCKTUNE_NO_ADDON: ...`). */
  reason?: string;
}

interface Entry {
  rule: Rule;
  /** The rule's guard; none for a rule whose policy is `false`. */
  guard?: Guard;
}

interface Registration {
  config: RegisterConfig;
  entries: Entry[];
  /** Whether a rule's policy gives connections a port range (IP_LOCAL_PORT_RANGE) at the pre-connect stage. */
  portRanges: boolean;
  guards: Readonly<Record<string, Guard>>;
  stats: Counts;
}

const kPending = Symbol('socktune.register.pending');
const kSettled = Symbol('socktune.register.settled');
const kOrigin = Symbol('socktune.register.origin');
const kDirection = Symbol('socktune.register.direction');
const kEndpoints = Symbol('socktune.register.endpoints');

interface Marked {
  [kPending]?: boolean;
  [kSettled]?: boolean;
  [kOrigin]?: () => string;
  [kDirection]?: Direction;
  [kEndpoints]?: string;
}

let active: Registration | undefined;
const adopted = new WeakMap<net.Socket, Guard>();
const watchedServers = new WeakSet<net.Server>();
/** The servers this process listens on, for a drain. */
const listening = new Set<net.Server>();
const serverOrigins = new WeakMap<net.Server, () => string>();

/** The guards `socktune/register` created in this process, by rule name (`default` for `SOCKTUNE_POLICY`); empty when it is not loaded. */
export function registeredGuards(): Readonly<Record<string, Guard>> {
  return active?.guards ?? {};
}

/**
 * The guard that tracks `socket`'s deadlines, for a connection `socktune/register` put under a
 * policy; `undefined` for any other socket.
 */
export function guardOf(socket: net.Socket): Guard | undefined {
  const guard = adopted.get(socket);
  // Still its guard only while that guard tracks it (a later tune() or track() moves it).
  return guard !== undefined && trackerOf(socket) === guard ? guard : undefined;
}

let inactiveReason: string | undefined;

/** What `socktune/register` did so far (all zero when it is not loaded or not active). */
export function registerStats(): RegisterStats {
  const out: RegisterStats = { ...(active?.stats ?? emptyStats()), active: active !== undefined };
  if (inactiveReason !== undefined) out.reason = inactiveReason;
  return out;
}

type Counts = Omit<RegisterStats, 'active' | 'reason'>;

function emptyStats(): Counts {
  return { opened: 0, accepted: 0, tuned: 0, untuned: 0, explicit: 0, unmatched: 0, refused: 0, retried: 0, stale: 0, sessions: 0 };
}

/**
 * Records that the registration could not start on this host (`error`: the coded error, such as
 * ERR_SOCKTUNE_NO_ADDON): nothing is subscribed, and `stats()` says why.
 */
export function registerInactive(error: Error & { code?: string }): void {
  inactiveReason = `${error.code ?? 'ERR_SOCKTUNE_UNSUPPORTED'}: ${error.message}`;
}

/** An IPv4 address as a dual-stack socket reports it (`::ffff:10.0.0.1`), as people write it. */
function plain(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  const a = address.toLowerCase();
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

function matches(rule: Rule, direction: Direction, socket: net.Socket): boolean {
  if (rule.direction !== undefined && rule.direction !== direction) return false;
  // Each address is read (getpeername/getsockname, then cached by Node) only if a rule asks.
  if (rule.port !== undefined && !rule.port.includes(socket.remotePort as number)) return false;
  if (rule.localPort !== undefined && !rule.localPort.includes(socket.localPort as number)) return false;
  if (rule.host !== undefined && !hostMatches(rule.host, connectHost(socket), socket.remoteAddress)) return false;
  if (rule.localAddress !== undefined && !addressIn(rule.localAddress, socket.localAddress)) return false;
  return true;
}

/** Whether a rule's `host` list names the host the application connected to, or the peer's address. */
function hostMatches(hosts: readonly string[], name: string | undefined, address: string | undefined): boolean {
  const a = plain(address);
  return hosts.some((h) => h === name || plain(h) === a);
}

function addressIn(list: readonly string[], address: string | undefined): boolean {
  const a = plain(address);
  return list.some((x) => plain(x) === a);
}

/**
 * The same rules for a connection not made yet, at the pre-connect stage: the destination is
 * known, the local port is not (it is chosen at connect), so a rule that names one does not match.
 */
function matchesBeforeConnect(rule: Rule, socket: net.Socket, target: ConnectTarget): boolean {
  if (rule.direction === 'accepted' || rule.localPort !== undefined) return false;
  if (rule.port !== undefined && !rule.port.includes(target.port)) return false;
  if (rule.host !== undefined && !hostMatches(rule.host, connectHost(socket), target.address)) return false;
  if (rule.localAddress !== undefined && !addressIn(rule.localAddress, target.bind?.address)) return false;
  return true;
}

/**
 * The pre-connect stage of a connection the application opens: the stage fields of the first
 * rule's policy (IP_BIND_ADDRESS_NO_PORT for a pinned source address, on by default, and a port
 * range). Nothing for a connection without `localAddress` when no rule gives a port range: Node
 * makes those sockets itself, as without socktune.
 */
function stageOfOpened(socket: net.Socket, target: ConnectTarget): EncodedOptions | undefined {
  const r = active;
  if (r === undefined || (target.bind === undefined && !r.portRanges)) return undefined;
  const entry = r.entries.find((e) => matchesBeforeConnect(e.rule, socket, target));
  return entry === undefined || entry.rule.policy === false ? undefined : policyPrebind(entry.rule.policy);
}

/** Gives a connection, now connected, the policy of the first rule that matches it. */
function settle(socket: net.Socket, direction: Direction, server?: net.Server): void {
  const r = active;
  const s = socket as net.Socket & Marked;
  if (r === undefined || s[kSettled] === true || socket.destroyed) return;
  s[kSettled] = true;
  const stats = r.stats;
  stats[direction]++;
  watchConnection(socket, direction);
  if (policyOf(socket) !== undefined) {
    // A socket this registration tuned, connecting again: its policy follows it (see tune()).
    if (adopted.has(socket)) stats.tuned++;
    // The application's own choice, made before this (tuneServer and the agents tune first).
    else stats.explicit++;
    return;
  }
  if (r.config.trace) {
    // Every connection's, not only tuned ones: how each ended is reported with it.
    const origin = direction === 'opened' ? s[kOrigin] : server && serverOrigins.get(server);
    recordOrigin(socket, origin ?? (direction === 'opened' ? 'connect (not seen)' : 'listen (before socktune/register was loaded)'));
    s[kOrigin] = undefined;
    s[kDirection] = direction;
  }
  const entry = r.entries.find((e) => matches(e.rule, direction, socket));
  if (entry === undefined || entry.rule.policy === false || entry.guard === undefined) {
    stats.unmatched++;
    return;
  }
  const inherited = direction === 'accepted' && inheritedFrom(server, socket, entry.rule.policy);
  if (adopt(socket, entry.rule.policy, entry.guard, false, inherited)) {
    stats.tuned++;
    adopted.set(socket, entry.guard);
  } else if (socket.destroyed) {
    stats.refused++;
  } else {
    stats.untuned++;
  }
}

function onConnect(this: net.Socket): void {
  this.removeListener('connect', onConnect);
  (this as net.Socket & Marked)[kPending] = false;
  settle(this, 'opened');
}

/** A client socket about to connect: settled on `'connect'`, before the application's listeners. */
function opening(socket: net.Socket, below: (...args: never[]) => unknown): void {
  const s = socket as net.Socket & Marked;
  // Node 20's net.connect() publishes and then calls Socket#connect (seen again through the wrap).
  if (s[kPending] === true) return;
  s[kPending] = true;
  // A socket object may connect again after it closed: that is a new connection.
  s[kSettled] = false;
  if (active?.config.trace) s[kOrigin] = captureOrigin('connect', below);
  socket.prependListener('connect', onConnect);
}

function onClientSocket(message: unknown): void {
  if (!http2Wrapped) wrapHttp2Connect();
  const socket = (message as { socket?: unknown } | null)?.socket;
  if (socket instanceof net.Socket) opening(socket, onClientSocket);
}

function onSecureConnection(this: tls.Server, socket: tls.TLSSocket): void {
  settle(socket, 'accepted', this);
}

/** A TLS server's connections are settled as TLS sockets, once the handshake is done. */
function watchServer(server: net.Server): void {
  if (watchedServers.has(server)) return;
  if (!http2Wrapped) wrapHttp2Connect();
  watchedServers.add(server);
  listening.add(server);
  server.once('close', () => listening.delete(server));
  if (server.listening) startsListening(server);
  else server.once('listening', () => startsListening(server));
  if (isTlsServer(server)) server.prependListener('secureConnection', onSecureConnection);
  if (isHttp2Server(server)) {
    wrapHttp2Connect(); // node:http2 is loaded: this is one of its servers
    server.on('session', onSession);
  }
}

/** An HTTP/2 session, client or server: its rules once connected, when its socket is. */
function onSession(session: http2.Http2Session): void {
  session.once('connect', settleSession);
}

/**
 * A connected HTTP/2 session gets the policy its socket got from a rule (and that rule's guard);
 * a session on a socket the application tuned itself, or whose session it tuned, is its own.
 */
function settleSession(session: http2.Http2Session, socket: net.Socket): void {
  const guard = guardOf(socket);
  const policy = policyOf(socket);
  if (active === undefined || guard === undefined || policy === undefined || isWatched(session)) return;
  if (watchSession(session, socket, policy, guard)) active.stats.sessions++;
}

/** Whether `http2.connect` is wrapped yet. */
let http2Wrapped = false;

/**
 * `http2.connect` sees every client session (grpc-js and undici call it through the module
 * object). Wrapped once the application has loaded node:http2, never sooner (loading it loads
 * node:http and node:tls, which a process may never use): at start if it is loaded already, on
 * the next turn (after the main module's imports, grpc-js's and undici's included), and at each
 * connection and server until then. A session opened in the same turn that first loaded
 * node:http2, before any of those, gets its socket's policy but not the session's rules.
 */
function wrapHttp2Connect(): void {
  if (http2Wrapped) return;
  const h2 = loadedBuiltin<typeof http2>('node:http2');
  if (h2 === undefined) return;
  http2Wrapped = true;
  const original = h2.connect;
  const connect = function connect(this: unknown, ...args: Parameters<typeof http2.connect>): http2.ClientHttp2Session {
    const session = (original as (...a: unknown[]) => http2.ClientHttp2Session).apply(this, args);
    onSession(session);
    return session;
  };
  h2.connect = connect as typeof http2.connect;
  syncBuiltinESMExports();
}

/** A server of the process starts listening: the policy of every connection it will accept goes on its listener once. */
function startsListening(server: net.Server): void {
  upstreamIdle(server);
  const policy = everyAcceptedPolicy(server);
  if (policy !== undefined) putOnListener(server, policy);
}

/**
 * The policy of every connection `server` will accept, when the rules decide it before any
 * connection: the first rule that can match this listener has no condition on the peer (its port
 * or host). Where one has, connections of one listener may get different policies (or none), so
 * nothing goes on the listener and each connection is tuned by itself.
 */
function everyAcceptedPolicy(server: net.Server): Policy | undefined {
  const address = server.address();
  if (typeof address !== 'object' || address === null) return undefined;
  const host = plain(address.address);
  const wildcard = host === '::' || host === '0.0.0.0';
  for (const { rule } of active?.entries ?? []) {
    if (rule.direction === 'opened') continue;
    if (rule.localPort !== undefined && !rule.localPort.includes(address.port)) continue;
    if (rule.localAddress !== undefined) {
      // A listener on every address accepts on each of them: the rule decides per connection.
      if (wildcard) return undefined;
      if (!rule.localAddress.some((a) => plain(a) === host)) continue;
    }
    if (rule.port !== undefined || rule.host !== undefined) return undefined;
    return rule.policy === false ? undefined : rule.policy;
  }
  return undefined;
}

/** The idle timeout of the proxies most services run behind: AWS ALB's default, nginx's upstream keepalive_timeout. */
const COMMON_UPSTREAM_IDLE = 60_000;

/**
 * The policy for a server's accepted connections, as far as it can be known before any connection:
 * the first rule for accepted connections that its port and address do not rule out.
 */
function serverPolicy(server: net.Server): Policy | undefined {
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : undefined;
  const host = typeof address === 'object' && address !== null ? plain(address.address) : undefined;
  for (const { rule } of active?.entries ?? []) {
    if (rule.direction === 'opened' || rule.port !== undefined || rule.host !== undefined) continue;
    if (rule.localPort !== undefined && (port === undefined || !rule.localPort.includes(port))) continue;
    if (rule.localAddress !== undefined && (host === undefined || !rule.localAddress.some((a) => plain(a) === host))) continue;
    return rule.policy === false ? undefined : rule.policy;
  }
  return undefined;
}

/**
 * An HTTP server under a policy with `upstreamIdleTimeout` keeps idle keep-alive connections
 * longer than the proxy in front; where the application set a shorter `keepAliveTimeout` itself,
 * or where nothing was said of a proxy and the server keeps them less than the common 60 s, one
 * warning per server says what a load balancer in front would do.
 */
function upstreamIdle(server: net.Server): void {
  const policy = serverPolicy(server);
  const keepAlive = (server as net.Server & { keepAliveTimeout?: unknown }).keepAliveTimeout;
  if (policy === undefined || typeof keepAlive !== 'number') return;
  const where = describeServer(server);
  if (policy.upstreamIdleTimeout !== false) {
    if (keepAliveAbove(server, policy.upstreamIdleTimeout) === 'application-below') {
      process.emitWarning(
        `${where} keeps idle keep-alive connections ${keepAlive} ms (its own keepAliveTimeout), not longer than the proxy in front (upstreamIdleTimeout ${policy.upstreamIdleTimeout} ms): ` +
          'the proxy may send a request on a connection the server is closing (502). Raise keepAliveTimeout above it.',
        { code: 'SOCKTUNE_KEEPALIVE_BELOW_UPSTREAM' },
      );
    }
    return;
  }
  if (isExplicit(policy, 'upstreamIdleTimeout') || keepAlive === 0 || keepAlive >= COMMON_UPSTREAM_IDLE) return;
  // Nothing was said of a proxy: the warning waits for a request that came through one.
  unannounced.add(server);
  if (!watchingRequests) {
    watchingRequests = true;
    dc.subscribe('http.server.request.start', onRequestStart);
  }
}

/** HTTP servers that keep idle connections less than the common proxy timeout, told nothing of a proxy. */
const unannounced = new WeakSet<net.Server>();
let watchingRequests = false;

/** Headers a proxy or load balancer adds (RFC 7239, the de facto X-Forwarded-For, RFC 9110's Via). */
const PROXY_HEADERS = ['forwarded', 'x-forwarded-for', 'via'];

function onRequestStart(message: unknown): void {
  const { server, request } = (message ?? {}) as { server?: unknown; request?: { headers?: Record<string, unknown> } };
  if (!(server instanceof net.Server) || !unannounced.has(server)) return;
  const headers = request?.headers;
  if (typeof headers !== 'object' || headers === null || !PROXY_HEADERS.some((h) => headers[h] !== undefined)) return;
  unannounced.delete(server);
  const keepAlive = (server as net.Server & { keepAliveTimeout?: number }).keepAliveTimeout;
  if (typeof keepAlive !== 'number' || keepAlive === 0 || keepAlive >= COMMON_UPSTREAM_IDLE) return;
  process.emitWarning(
    `${describeServer(server)} is behind a proxy (its requests carry forwarding headers) and closes idle keep-alive connections after ${keepAlive} ms; ` +
      'a proxy that keeps them longer ' +
      `(AWS ALB and nginx upstream keepalive: ${COMMON_UPSTREAM_IDLE} ms by default) can send a request on one as it closes (502). ` +
      "Give the policy upstreamIdleTimeout (the proxy's idle timeout), or upstreamIdleTimeout: false when nothing is in front.",
    { code: 'SOCKTUNE_KEEPALIVE_BELOW_UPSTREAM' },
  );
}

function describeServer(server: net.Server): string {
  const address = server.address();
  if (typeof address === 'object' && address !== null)
    return `the HTTP server on ${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`;
  return 'an HTTP server';
}

function onServerSocket(message: unknown): void {
  const socket = (message as { socket?: unknown } | null)?.socket;
  if (!(socket instanceof net.Socket)) return;
  const server = (socket as net.Socket & { server?: net.Server }).server;
  if (isTlsServer(server)) return watchServer(server); // the raw socket under the TLS layer
  if (server !== undefined) watchServer(server);
  settle(socket, 'accepted', server);
}

function onListen(message: unknown): void {
  const server = (message as { server?: unknown } | null)?.server;
  if (!(server instanceof net.Server)) return;
  watchServer(server);
  if (active?.config.trace) serverOrigins.set(server, captureOrigin('listen', onListen));
}

function onUndiciConnected(message: unknown): void {
  const socket = (message as { socket?: unknown } | null)?.socket;
  if (socket instanceof net.Socket && (socket as net.Socket & Marked)[kPending] !== true) settle(socket, 'opened');
}

/**
 * Whether this Node publishes `net.client.socket` from every `Socket#connect()` (Node 22.17+/24:
 * nodejs/node#58349) rather than only from `net.connect()` (Node 20). Read from the method itself,
 * so a backport is picked up without a version table. @internal
 */
export function connectPublishes(): boolean {
  return Function.prototype.toString.call(net.Socket.prototype.connect).includes('netClientSocketChannel');
}

/**
 * Where no `net.server.socket` or `tracing:net.server.listen` is published (Bun): every server that
 * listens from now on is watched, and its connections settled as they are accepted.
 */
function wrapListen(): void {
  type Listen = (this: net.Server, ...args: unknown[]) => net.Server;
  const proto = net.Server.prototype as unknown as { listen: Listen };
  const original = proto.listen;
  proto.listen = function listen(this: net.Server, ...args: unknown[]): net.Server {
    if (!watchedServers.has(this)) {
      onListen({ server: this });
      if (!isTlsServer(this)) this.prependListener('connection', onAccepted);
    }
    return original.apply(this, args);
  };
}

function onAccepted(this: net.Server, socket: net.Socket): void {
  if (socket instanceof net.Socket) settle(socket, 'accepted', this);
}

function wrapConnect(): void {
  type Connect = (this: net.Socket, ...args: unknown[]) => net.Socket;
  const proto = net.Socket.prototype as unknown as { connect: Connect };
  const original = proto.connect;
  proto.connect = function connect(this: net.Socket, ...args: unknown[]): net.Socket {
    opening(this, connect);
    return original.apply(this, args);
  };
}

/**
 * Node's own agents (the global ones and every `http.Agent`/`https.Agent` an application or a
 * library makes): a pooled connection under a policy that the kernel no longer holds as
 * ESTABLISHED (the server's FIN or RST arrived while it waited) is dropped before Node picks it,
 * and a request on a pooled connection that its server closed under it is sent once more, under
 * the policy of the connection (see integrations/retry.ts). socktune's own agents do this
 * themselves.
 */
function patchAgents(): void {
  // node:http is loaded by the application's first request, never by socktune: a process that
  // makes none keeps Node's own start-up (its HTTP parser pool, what it loads and when). The
  // first request's socket is new; every later one meets the patched agent.
  const onFirstRequest = (): void => {
    dc.unsubscribe('http.client.request.start', onFirstRequest);
    patchAgentPrototype(builtin<typeof http>('node:http').Agent.prototype);
  };
  dc.subscribe('http.client.request.start', onFirstRequest);
}

function patchAgentPrototype(agentPrototype: http.Agent): void {
  type AddRequest = (this: http.Agent, req: http.ClientRequest, options: unknown, ...legacy: unknown[]) => void;
  type ReuseSocket = (this: http.Agent, socket: net.Socket, req: http.ClientRequest) => void;
  const proto = agentPrototype as unknown as { addRequest: AddRequest; reuseSocket: ReuseSocket };
  const addRequest = proto.addRequest;
  const reuseSocket = proto.reuseSocket;
  proto.addRequest = function addRequestUnderRegister(this: http.Agent, req, options, ...legacy) {
    if (active !== undefined && !isPolicyAgent(this)) {
      noteRequestOptions(req, options);
      sweepFreeSockets(
        this,
        options,
        legacy,
        (socket) => (guardOf(socket) === undefined ? 'other' : 'tcp'),
        (socket) => {
          if (active !== undefined) active.stats.stale++;
          void guardOf(socket)?.drop(socket, 'stale');
        },
      );
    }
    return addRequest.call(this, req, options, ...legacy);
  };
  proto.reuseSocket = function reuseSocketUnderRegister(this: http.Agent, socket, req) {
    reuseSocket.call(this, socket, req);
    if (active !== undefined && !isPolicyAgent(this)) armRetry(this, socket, req, policyOf(socket), onRetry);
  };
}

function onRetry(): void {
  if (active !== undefined) active.stats.retried++;
}

/** The policy of connections this process opens, as far as it is known before any connection. */
function openedPolicy(): Policy | undefined {
  for (const { rule } of active?.entries ?? []) {
    if (rule.direction === 'accepted') continue;
    if (rule.port !== undefined || rule.host !== undefined || rule.localPort !== undefined || rule.localAddress !== undefined) continue;
    return rule.policy === false ? undefined : rule.policy;
  }
  return undefined;
}

/**
 * The global fetch: its dispatcher (Node's bundled undici, made on first use) gets the retry of a
 * request whose pooled connection closed under it, on the first call of fetch, so a process that
 * never fetches never loads it.
 */
function wrapGlobalFetch(): void {
  const policy = openedPolicy();
  const d = Object.getOwnPropertyDescriptor(globalThis, 'fetch');
  if (policy === undefined || policy.poolRetry === false || d === undefined || typeof d.value !== 'function' || d.writable !== true) return;
  const original = d.value as typeof fetch;
  const mode = policy.poolRetry;
  const first = function fetch(this: unknown, ...args: Parameters<typeof globalThis.fetch>): ReturnType<typeof globalThis.fetch> {
    // Once: the global goes back to Node's own fetch, now over the retrying dispatcher.
    if (globalThis.fetch === first) Object.defineProperty(globalThis, 'fetch', d);
    try {
      retryGlobalFetch(mode, onRetry);
    } catch {
      // A dispatcher that cannot be composed keeps undici's own behaviour.
    }
    return original.apply(this, args);
  };
  Object.defineProperty(globalThis, 'fetch', { ...d, value: first });
}

/** Under trace: one stderr line for each half-closed or idle connection a guard closes. */
function traceCloses(guard: Guard, name: string): void {
  guard.on('closing', (event: GuardCloseEvent) => {
    const s = event.socket as net.Socket & Marked;
    if (tracedReasons.has(event.reason)) s[kEndpoints] = endpoints(s, s[kDirection] ?? 'opened');
  });
  guard.on('closed', (event: GuardCloseEvent) => {
    if (!tracedReasons.has(event.reason)) return;
    process.stderr.write(traceLine(event, name, (event.socket as net.Socket & Marked)[kEndpoints] ?? '?'));
  });
}

/**
 * Starts applying `config` to every TCP connection this process opens or accepts from now on.
 * Once per process (per thread): a second call throws.
 *
 * @returns the guards, one per rule with a policy, by rule name
 */
export function register(config: RegisterConfig): Readonly<Record<string, Guard>> {
  if (active !== undefined) throw socktuneError('ERR_SOCKTUNE_CONFIG', 'socktune/register is already active in this process');
  const entries: Entry[] = [];
  const guards: Record<string, Guard> = {};
  for (const rule of config.rules) {
    if (rule.policy === false) {
      entries.push({ rule });
      continue;
    }
    const guard = new Guard(rule.policy);
    if (config.trace) traceCloses(guard, rule.name);
    // Defined, not assigned: a rule may be named anything, `__proto__` included.
    Object.defineProperty(guards, rule.name, { value: guard, enumerable: true });
    entries.push({ rule, guard });
  }
  const portRanges = entries.some((e) => e.rule.policy !== false && e.rule.direction !== 'accepted' && e.rule.policy.localPortRange !== false);
  active = { config, entries, portRanges, guards: Object.freeze(guards), stats: emptyStats() };
  if (entries.some((e) => e.rule.policy !== false && e.rule.direction !== 'accepted')) prebindEveryConnection(stageOfOpened);
  dc.subscribe('net.client.socket', onClientSocket);
  dc.subscribe('net.server.socket', onServerSocket);
  dc.subscribe('tracing:net.server.listen:asyncStart', onListen);
  dc.subscribe('undici:client:connected', onUndiciConnected);
  if (!connectPublishes()) wrapConnect();
  // Bun publishes none of Node's net.* and http.* channels: its servers and agents are patched.
  if (runtime === 'bun') {
    wrapListen();
    patchAgentPrototype(builtin<typeof http>('node:http').Agent.prototype);
  } else patchAgents();
  wrapGlobalFetch();
  wrapHttp2Connect();
  if (!http2Wrapped) setImmediate(wrapHttp2Connect).unref();
  if (config.shutdown !== undefined) onSignal(config.shutdown);
  return active.guards;
}

/**
 * The drain of a deploy over everything socktune/register saw (see guard/shutdown.ts): every
 * server this process listens on (HTTP responses from now on carry `Connection: close`, accepting
 * stops after `delay`, idle keep-alive connections close spread over `spread`, requests in flight
 * finish), and the connections the guards track (ended: the peer sees EOF); what is left at
 * `timeout` is closed the policy's way.
 */
export async function closeRegistered(options: ShutdownOptions = {}): Promise<ShutdownReport> {
  const settings = shutdownSettings(options);
  const guards = Object.values(registeredGuards());
  const tracked = (): net.Socket[] => guards.flatMap((g) => g.trackedSockets());
  return drain([...listening], settings, tracked, async (socket) => {
    const guard = trackerOf(socket);
    if (guard !== undefined) await guard.drop(socket, 'shutdown');
    else socket.destroy();
  });
}

/**
 * `SOCKTUNE_SHUTDOWN`: on the signal, the drain of {@link closeRegistered}; then, if the
 * application does not listen for that signal itself, the signal again, so the process ends as it
 * would have without socktune. An application that listens decides when it exits.
 */
function onSignal(shutdown: NonNullable<RegisterConfig['shutdown']>): void {
  const handler = (): void => {
    process.removeListener(shutdown.signal, handler);
    const { signal: _signal, ...options } = shutdown;
    void closeRegistered(options).then((report) => {
      if (active?.config.trace) process.stderr.write(`socktune: drained on ${shutdown.signal}: ${JSON.stringify(report)}\n`);
      if (process.listenerCount(shutdown.signal) === 0) process.kill(process.pid, shutdown.signal);
    });
  };
  process.on(shutdown.signal, handler);
}
