/**
 * `tuneServer(server, policy)`: every connection a `net.Server`, `http.Server`, `tls.Server` or
 * `https.Server` accepts gets the policy the moment it is accepted, and a guard tracks them all.
 * @module
 */
import type http from 'node:http';
import net from 'node:net';
import { invalidArgType, readArgument } from '../errors.js';
import { Guard } from '../guard/guard.js';
import { kernelOptions, toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { KeepShorter, configurePolicy, readOptions } from '../options.js';
import { adopt, adoptSession } from './tune.js';
import { isHttp2Server } from '../http2/session.js';
import type { Http2Session } from 'node:http2';
import { assertNotFdless, builtin, listenerHandle, setOnAccept } from '../handle.js';

/**
 * Applies `policy` to every connection `server` accepts from now on, and returns the guard that
 * tracks them (deadlines, statistics, events, graceful `close()`).
 *
 * Plain servers tune a connection on `'connection'`, before any handler of the application and
 * after Node's own `keepAlive`/`noDelay` server options (which the policy overrides). TLS and
 * HTTPS servers tune it on `'secureConnection'`, once the handshake is done. If the kernel refuses
 * the options on a new connection, that connection is destroyed with the error. Connections a
 * policy cannot apply to (a server listening on a Unix-domain socket) are passed through untouched
 * and counted in `guard.stats().untuned`. With `upstreamIdleTimeout`, an HTTP server keeps idle
 * keep-alive connections longer than the proxy in front (see {@link Policy.upstreamIdleTimeout}).
 * An HTTP/2 server (`http2.createServer`, `createSecureServer`, and so a gRPC server) puts each
 * session it accepts under the policy's HTTP/2 rules too (see {@link tune}).
 *
 * @param server a server, listening or not yet
 * @param policy a preset (`presets.gracefulHeartbeat()`) or overrides
 * @returns the connection guard of this server
 */
export function tuneServer(server: net.Server, policy: Policy | PolicyOverrides): Guard {
  assertNotFdless(server);
  if (!readArgument('server', server, () => server instanceof net.Server))
    throw invalidArgType('server', 'an instance of net.Server (http, https and tls servers are)', server);
  const p = toPolicy(policy);
  const guard = new Guard(p);
  const event = 'setSecureContext' in server ? 'secureConnection' : 'connection';
  server.prependListener(event, (socket: net.Socket) => adopt(socket, p, guard, false, inheritedFrom(server, socket, p)));
  // The policy's options on the listener, once per listen: every connection accepted from then on
  // inherits them (Linux), so none costs a system call.
  if (server.listening) putOnListener(server, p);
  server.on('listening', () => putOnListener(server, p));
  guard.attach(server);
  if (isHttp2Server(server)) server.on('session', (session: Http2Session) => adoptSession(session, p, guard));
  if (p.upstreamIdleTimeout !== false) keepAliveAbove(server, p.upstreamIdleTimeout);
  return guard;
}

interface HttpTimeouts {
  keepAliveTimeout?: unknown;
  headersTimeout?: number;
  requestTimeout?: number;
}

let nodeDefault: number | undefined;

/** Node's own default `keepAliveTimeout` (5 s on Node 20), read from a server that was never used. */
function defaultKeepAliveTimeout(): number {
  return (nodeDefault ??= new (builtin<typeof http>('node:http').Server)().keepAliveTimeout);
}

/** What {@link keepAliveAbove} found or did. */
export type KeepAliveDecision =
  /** Not an HTTP server: nothing to do. */
  | 'not-http'
  /** `keepAliveTimeout` (and `headersTimeout`) raised above the proxy's idle timeout. */
  | 'raised'
  /** Already above it. */
  | 'above'
  /** The application set `keepAliveTimeout` itself, at or below the proxy's: it stays (warn). */
  | 'application-below';

/**
 * Keeps an HTTP server's idle keep-alive connections open longer than the proxy in front keeps
 * them (`upstream` ms): `keepAliveTimeout` one second above, `headersTimeout` one second above that
 * (Node closes a connection whose next request's headers take longer), `requestTimeout` no lower.
 * A `keepAliveTimeout` other than Node's default was the application's choice and stays.
 * @internal
 */
export function keepAliveAbove(server: net.Server, upstream: number): KeepAliveDecision {
  const s = server as net.Server & HttpTimeouts;
  if (typeof s.keepAliveTimeout !== 'number') return 'not-http';
  const target = Math.min(upstream + 1000, 2 ** 31 - 3000);
  if (s.keepAliveTimeout === 0 || s.keepAliveTimeout > upstream) return 'above';
  if (s.keepAliveTimeout !== defaultKeepAliveTimeout()) return 'application-below';
  s.keepAliveTimeout = target;
  if (typeof s.headersTimeout === 'number' && s.headersTimeout <= target) s.headersTimeout = target + 1000;
  if (typeof s.requestTimeout === 'number' && s.requestTimeout > 0 && typeof s.headersTimeout === 'number' && s.requestTimeout < s.headersTimeout) {
    s.requestTimeout = s.headersTimeout;
  }
  return 'raised';
}

// ---------------------------------------------------------------- the listener stage of a policy
// Linux copies a listener's keepalive (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT),
// TCP_USER_TIMEOUT and TCP_NODELAY to every connection it accepts (and SO_LINGER too, which no
// policy puts on a listener). A policy put there once costs accepted connections no setsockopt.
// Whether they do carry it is read back from the first connections a listener accepts, on every
// platform and Node, until one does; where none does (a platform that does not inherit, a cluster
// worker whose connections the primary accepted), each connection is tuned by itself as before.

/** A listener that carries a policy's options: the policy, and what reading back has shown so far. */
interface Carried {
  policy: Policy;
  /** `true` once an accepted connection was read back carrying the options; `false` once none did. */
  verified: boolean | undefined;
  /** Connections read back that did not carry them (queued before the options were set, or a platform that does not inherit). */
  misses: number;
}

/** How many connections in a row may lack the listener's options before its connections are tuned one by one for good. */
const MISSES = 8;
const carried = new WeakMap<object, Carried>();

function hasAny(o: object): boolean {
  for (const _ in o) return true;
  return false;
}

/**
 * Sets `policy`'s inheritable options (keepalive, user timeout, Nagle; never linger) on the socket
 * `server` listens on, unless Node sets its own on every accepted connection (the server's
 * `keepAlive` option, or `noDelay` where the policy turns it off), which the policy would then
 * have to follow connection by connection. Returns whether the listener carries them now.
 * @internal tuneServer's, and socktune/register's
 */
export function putOnListener(server: net.Server, policy: Policy): boolean {
  const kernel = kernelOptions(policy);
  const node = setOnAccept(server);
  const handle = listenerHandle(server);
  if (handle === undefined || !hasAny(kernel) || node.keepAlive || (node.noDelay && policy.noDelay === false)) return false;
  try {
    configurePolicy(server, kernel, KeepShorter.None);
  } catch {
    // A server on a pipe, or a listener the kernel refuses them on: its connections are tuned one by one.
    return false;
  }
  carried.set(handle, { policy, verified: undefined, misses: 0 });
  return true;
}

/**
 * Whether `socket`, just accepted by `server`, carries `policy`'s options from its listener, so
 * tuning it needs no system call. Until one connection of the listener is read back carrying them,
 * each is read back (up to eight in a row that do not carry them, then never again).
 * @internal
 */
export function inheritedFrom(server: net.Server | undefined, socket: net.Socket, policy: Policy): boolean {
  const handle = server === undefined ? undefined : listenerHandle(server);
  const entry = handle === undefined ? undefined : carried.get(handle);
  if (entry === undefined || entry.policy !== policy || entry.verified === false) return false;
  if (entry.verified === true) return true;
  let carries = false;
  try {
    carries = holds(readOptions(socket), policy);
  } catch {
    return false;
  }
  if (carries) entry.verified = true;
  else if (++entry.misses >= MISSES) entry.verified = false;
  return carries;
}

/** Whether the options read back are the policy's kernel options (keepalive in whole seconds, as the kernel holds them). */
function holds(read: ReturnType<typeof readOptions>, policy: Policy): boolean {
  const { keepAlive, userTimeout, noDelay } = kernelOptions(policy);
  if (keepAlive === false && read.keepAlive !== false) return false;
  if (typeof keepAlive === 'object') {
    const seconds = (ms: number | undefined) => Math.ceil((ms ?? 0) / 1000) * 1000;
    const k = read.keepAlive;
    // `true`: the system cannot tell the timings (Windows without them), so they are not shown carried.
    if (typeof k !== 'object' || k.idle !== seconds(keepAlive.idle) || k.interval !== seconds(keepAlive.interval) || k.count !== keepAlive.count) return false;
  }
  if (userTimeout !== undefined && read.userTimeout !== userTimeout) return false;
  if (noDelay !== undefined && read.noDelay !== noDelay) return false;
  return true;
}
