/**
 * `tuneServer(server, policy)`: every connection a `net.Server`, `http.Server`, `tls.Server` or
 * `https.Server` accepts gets the policy the moment it is accepted, and a guard tracks them all.
 * @module
 */
import type http from 'node:http';
import net from 'node:net';
import { invalidArgType, readArgument } from '../errors.js';
import { Guard } from '../guard/guard.js';
import { toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt, adoptSession } from './tune.js';
import { isHttp2Server } from '../http2/session.js';
import type { Http2Session } from 'node:http2';
import { assertNotFdless, builtin } from '../handle.js';

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
  if (!readArgument('server', server, () => server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server (http, https and tls servers are)', server);
  const p = toPolicy(policy);
  const guard = new Guard(p);
  const event = 'setSecureContext' in server ? 'secureConnection' : 'connection';
  server.prependListener(event, (socket: net.Socket) => adopt(socket, p, guard));
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
