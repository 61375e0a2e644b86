/**
 * `tuneServer(server, policy)`: every connection a `net.Server`, `http.Server`, `tls.Server` or
 * `https.Server` accepts gets the policy the moment it is accepted, and a guard tracks them all.
 * @module
 */
import net from 'node:net';
import { invalidArgType, readArgument } from '../errors.js';
import { Guard } from '../guard/guard.js';
import { toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt } from './tune.js';

/**
 * Applies `policy` to every connection `server` accepts from now on, and returns the guard that
 * tracks them (deadlines, statistics, events, graceful `close()`).
 *
 * Plain servers tune a connection on `'connection'`, before any handler of the application and
 * after Node's own `keepAlive`/`noDelay` server options (which the policy overrides). TLS and
 * HTTPS servers tune it on `'secureConnection'`, once the handshake is done. If the kernel refuses
 * the options on a new connection, that connection is destroyed with the error. Connections a
 * policy cannot apply to (a server listening on a Unix-domain socket) are passed through untouched
 * and counted in `guard.stats().untuned`.
 *
 * @param server a server, listening or not yet
 * @param policy a preset (`presets.gracefulHeartbeat()`) or overrides
 * @returns the connection guard of this server
 */
export function tuneServer(server: net.Server, policy: Policy | PolicyOverrides): Guard {
  if (!readArgument('server', server, () => server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server (http, https and tls servers are)', server);
  const p = toPolicy(policy);
  const guard = new Guard(p);
  const event = 'setSecureContext' in server ? 'secureConnection' : 'connection';
  server.prependListener(event, (socket: net.Socket) => adopt(socket, p, guard));
  guard.attach(server);
  return guard;
}
