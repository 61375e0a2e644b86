/**
 * `tune(socket, policy)`: the one place a policy meets a connection. Every integration (servers,
 * agents, undici) calls it for each socket it creates or accepts.
 * @module
 */
import net from 'node:net';
import type http2 from 'node:http2';
import { KeepShorter, configurePolicy, type ConfigureResult } from '../options.js';
import { lookupHandle } from '../handle.js';
import { keepAliveOptions, kernelOptions, needsTracking, toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { assertSocket, installClose, policyOf, renewClose } from '../policy/close.js';
import { destroyWith } from '../policy/reset.js';
import { codes, invalidArgType } from '../errors.js';
import { Guard } from '../guard/guard.js';
import { isHttp2Session, sessionSocket, watchSession } from '../http2/session.js';

/** Guards shared by the sockets tuned one by one with the same policy: one timer per policy. */
const sharedGuards = new WeakMap<Policy, Guard>();

/** The guard `tune` uses for sockets tuned with `policy` outside a server or agent. */
export function guardFor(policy: Policy): Guard {
  let guard = sharedGuards.get(policy);
  if (guard === undefined) {
    guard = new Guard(policy);
    sharedGuards.set(policy, guard);
  }
  return guard;
}

function hasAny(o: object): boolean {
  for (const _ in o) return true;
  return false;
}

const kNodeKeepAlive = Symbol('socktune.nodeKeepAlive');
const kGuard = Symbol('socktune.tune.guard');
const protoSetKeepAlive = net.Socket.prototype.setKeepAlive;

const kPolicyDecides = Symbol('socktune.tune.policyDecides');

interface Tuned {
  [kNodeKeepAlive]?: string;
  /** The guard `tune` gave the socket, for the next connection of the same object. */
  [kGuard]?: Guard;
  /** The policy's keepalive wins over any other, shorter or not (socktune's own pools). */
  [kPolicyDecides]?: boolean;
}

/**
 * Node's `setKeepAlive` writes SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL=1 and TCP_KEEPCNT=10
 * (the agent calls it on every release; undici's connector once). On a tuned socket it still
 * runs, then the policy's keepalive and user timeout are put back — unless what Node just set is
 * the shorter budget (Node's agents: 1 s + 10 × 1 s): a policy never makes a dead peer slower to
 * notice. Node skips a repeat of the same arguments, and so does this.
 */
function setKeepAliveUnderPolicy(this: net.Socket, enable?: boolean, initialDelay?: number): net.Socket {
  protoSetKeepAlive.call(this, enable, initialDelay);
  const key = `${enable}:${initialDelay}`;
  const self = this as net.Socket & Tuned;
  if (self[kNodeKeepAlive] === key) return this;
  self[kNodeKeepAlive] = key;
  const policy = policyOf(this);
  if (policy === undefined || this.destroyed || this.connecting) return this;
  const options = keepAliveOptions(policy);
  try {
    // The user timeout there is the policy's own, set when it was tuned: only keepalive competes.
    if (options.keepAlive !== undefined) configurePolicy(this, options, self[kPolicyDecides] === true ? KeepShorter.None : KeepShorter.KeepAlive);
  } catch (err) {
    // The kernel refused the policy on a live connection: it must not go on without it.
    destroyWith(this, err as Error);
  }
  return this;
}

/**
 * A tuned socket that connects again (`socket.connect()` after `'close'`, as clients that
 * reconnect in place do) is a new connection of the same object: it gets the policy again, with
 * the same guard, once connected. Shadows `connect` on the instance; the method it calls is looked
 * up on the prototype at each call, so a later wrapper there is honoured.
 */
function connectUnderPolicy(this: net.Socket, ...args: unknown[]): net.Socket {
  const self = this as net.Socket & Tuned;
  const policy = policyOf(this);
  if (policy !== undefined) {
    renewClose(this);
    self[kNodeKeepAlive] = undefined;
    const guard = self[kGuard];
    const decides = self[kPolicyDecides] === true;
    this.prependOnceListener('connect', () => {
      if (policyOf(this) === policy) adopt(this, policy, guard ?? guardFor(policy), decides);
    });
  }
  const connect = (Object.getPrototypeOf(this) as { connect: (...a: unknown[]) => net.Socket }).connect;
  return connect.apply(this, args);
}

/**
 * Applies `policy` to one connection: its kernel options (now, or on `'connect'` for a connecting
 * socket), its close behaviour (with `reset`, `end()` and `destroy()` become the safe reset), and
 * its deadlines (idle, heartbeat, half-close, FIN-wait), which a guard shared by the sockets of
 * this policy enforces. Node's own later `setKeepAlive` calls are undone on this socket, and the
 * policy follows the socket when it connects again.
 *
 * A policy never makes a dead peer slower to notice: when the socket already has SO_KEEPALIVE on
 * with a shorter budget (idle + interval × count, set by Node, a library or the application), that
 * keepalive stays, and so does a shorter non-zero TCP_USER_TIMEOUT. Tuning again replaces the policy.
 *
 * An HTTP/2 session (`http2.connect()`'s, or one a server accepted) is tuned as a whole: its
 * socket gets all of the above, and the session the policy's HTTP/2 rules (`policy.http2`: the
 * PING heartbeat on the keepalive budget, maximum age and the PING limit of a server's sessions;
 * GOAWAY to a session without streams for `idleTimeout`; a session kept open `halfCloseTimeout`
 * after the peer's GOAWAY is closed).
 *
 * @param socket a `net.Socket` or `tls.TLSSocket`, connected or connecting, or an `Http2Session`
 * @param policy a preset (`presets.gracefulHeartbeat()`) or the same fields as overrides
 * @param guard the guard that tracks its deadlines (default: one shared per policy)
 * @returns `'applied'`, or `'deferred'` for a connecting socket (or session)
 */
export function tune(socket: net.Socket | http2.Http2Session, policy: Policy | PolicyOverrides, guard?: Guard): ConfigureResult {
  if (isHttp2Session(socket)) return tuneSession(socket, policy, guard);
  return tuneWith(socket, policy, guard, false);
}

/** {@link tune} for an HTTP/2 session: its socket, then the session's rules. */
function tuneSession(session: http2.Http2Session, policy: Policy | PolicyOverrides, guard: Guard | undefined): ConfigureResult {
  const p = toPolicy(policy);
  if (guard !== undefined && !(guard instanceof Guard)) throw invalidArgType('guard', 'an instance of Guard (or undefined)', guard);
  const socket = sessionSocket(session);
  const result = tuneWith(socket, p, guard, false);
  watchSession(session, socket, p, guard ?? guardFor(p));
  return result;
}

/**
 * Puts an HTTP/2 session a server accepted under `policy`'s HTTP/2 rules, when its socket is under
 * that policy (the server adopted it as it accepted it); a socket passed through (not TCP) or
 * refused was counted then, and its session is left alone.
 *
 * @returns whether the session is under the policy
 */
export function adoptSession(session: http2.Http2Session, policy: Policy, guard: Guard): boolean {
  let socket: net.Socket;
  try {
    socket = sessionSocket(session);
  } catch {
    return false;
  }
  if (policyOf(socket) !== policy) return false;
  watchSession(session, socket, policy, guard);
  return true;
}

/**
 * {@link tune}, where `decides` says the policy's keepalive wins over a shorter one the socket has
 * (socktune's own pools: the keepalive Node's agent sets is its default, not the application's).
 */
function tuneWith(socket: net.Socket, policy: Policy | PolicyOverrides, guard: Guard | undefined, decides: boolean, inherited = false): ConfigureResult {
  assertSocket(socket);
  const p = toPolicy(policy);
  if (guard !== undefined && !(guard instanceof Guard)) throw invalidArgType('guard', 'an instance of Guard (or undefined)', guard);
  const kernel = kernelOptions(p);
  // A user timeout already there is someone else's unless a policy of socktune's set it.
  const keep = decides ? KeepShorter.None : policyOf(socket) === undefined ? KeepShorter.Both : KeepShorter.KeepAlive;
  // A policy without kernel options (rstOnClose) only needs the socket checked; an accepted
  // connection that inherited the policy's options from its listener (Linux copies them to every
  // connection it accepts) needs no system call either.
  const result: ConfigureResult =
    hasAny(kernel) && !inherited ? configurePolicy(socket, kernel, keep) : 'handle' in lookupHandle(socket) ? 'applied' : 'deferred';
  installClose(socket, p);
  const self = socket as net.Socket & Tuned;
  if (decides) self[kPolicyDecides] = true;
  else if (self[kPolicyDecides] !== undefined) self[kPolicyDecides] = undefined;
  if (p.keepAlive !== undefined && socket.setKeepAlive !== setKeepAliveUnderPolicy) socket.setKeepAlive = setKeepAliveUnderPolicy;
  if ((socket as { connect: unknown }).connect !== connectUnderPolicy) (socket as { connect: unknown }).connect = connectUnderPolicy;
  if (needsTracking(p)) {
    const g = guard ?? guardFor(p);
    if (self[kGuard] !== g) self[kGuard] = g;
    g.track(socket);
  }
  return result;
}

/** What `tune` throws for a connection a policy cannot apply to: not TCP (a pipe, a user's stream). */
const passThrough = new Set<string>([codes.NOT_TCP, codes.INVALID_HANDLE]);

/**
 * Tunes a connection an integration made or accepted (servers, agents, connectors). A TCP
 * connection gets `policy`; if the kernel refuses it, the connection is destroyed with that error
 * (a policy fails closed). A connection a policy cannot apply to (a Unix-domain socket, a stream a
 * user's `createConnection` returned) is passed through untouched and counted in
 * `guard.stats().untuned`, never destroyed. `decides`: the policy's keepalive wins over a shorter
 * one (socktune's own pools, unless the application gave the agent its own `keepAliveMsecs`).
 * `inherited`: an accepted connection that carries the policy's options from its listener
 * (integrations/server.ts, `inheritedFrom`), which are then not set again.
 *
 * @returns whether the policy was applied
 */
export function adopt(socket: unknown, policy: Policy, guard: Guard, decides = false, inherited = false): boolean {
  try {
    tuneWith(socket as net.Socket, policy, guard, decides, inherited);
    return true;
  } catch (err) {
    if (passThrough.has((err as { code?: string }).code ?? '')) {
      guard.countUntuned();
      return false;
    }
    destroyWith(socket as net.Socket, err as Error);
    return false;
  }
}
