/**
 * `tune(socket, policy)`: the one place a policy meets a connection. Every integration (servers,
 * agents, undici) calls it for each socket it creates or accepts.
 * @module
 */
import net from 'node:net';
import { configure, type ConfigureResult } from '../options.js';
import { lookupHandle } from '../handle.js';
import { keepAliveOptions, kernelOptions, needsTracking, toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { assertSocket, installClose, policyOf } from '../policy/close.js';
import { destroyWith } from '../policy/reset.js';
import { codes } from '../errors.js';
import { Guard } from '../guard/guard.js';

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
const protoSetKeepAlive = net.Socket.prototype.setKeepAlive;

interface Reasserting {
  [kNodeKeepAlive]?: string;
}

/**
 * Node's `setKeepAlive` writes SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL=1 and TCP_KEEPCNT=10
 * (the agent calls it on every release; undici's connector once), overwriting a policy. On a
 * tuned socket it still runs, then the policy's keepalive and user timeout are put back. Node
 * skips a repeat of the same arguments, and so does this.
 */
function setKeepAliveUnderPolicy(this: net.Socket, enable?: boolean, initialDelay?: number): net.Socket {
  protoSetKeepAlive.call(this, enable, initialDelay);
  const key = `${enable}:${initialDelay}`;
  const self = this as net.Socket & Reasserting;
  if (self[kNodeKeepAlive] === key) return this;
  self[kNodeKeepAlive] = key;
  const policy = policyOf(this);
  if (policy === undefined || this.destroyed || this.connecting) return this;
  const options = keepAliveOptions(policy);
  try {
    if (options.keepAlive !== undefined) configure(this, options);
  } catch (err) {
    // The kernel refused the policy on a live connection: it must not go on without it.
    destroyWith(this, err as Error);
  }
  return this;
}

/**
 * Applies `policy` to one connection: its kernel options (now, or on `'connect'` for a connecting
 * socket), its close behaviour (with `reset`, `end()` and `destroy()` become the safe reset), and
 * its deadlines (idle, heartbeat, half-close, FIN-wait), which a guard shared by the sockets of
 * this policy enforces. Node's own later `setKeepAlive` calls are undone on this socket.
 * Tuning again replaces the policy.
 *
 * @param socket a `net.Socket` or `tls.TLSSocket`, connected or connecting
 * @param policy a preset (`presets.gracefulHeartbeat()`) or the same fields as overrides
 * @param guard the guard that tracks its deadlines (default: one shared per policy)
 * @returns `'applied'`, or `'deferred'` for a connecting socket
 */
export function tune(socket: net.Socket, policy: Policy | PolicyOverrides, guard?: Guard): ConfigureResult {
  assertSocket(socket);
  const p = toPolicy(policy);
  const kernel = kernelOptions(p);
  // A policy without kernel options (rstOnClose) only needs the socket checked.
  const result: ConfigureResult = hasAny(kernel) ? configure(socket, kernel) : 'handle' in lookupHandle(socket) ? 'applied' : 'deferred';
  installClose(socket, p);
  if (p.keepAlive !== undefined && socket.setKeepAlive !== setKeepAliveUnderPolicy) socket.setKeepAlive = setKeepAliveUnderPolicy;
  if (needsTracking(p)) (guard ?? guardFor(p)).track(socket);
  return result;
}

/** What `tune` throws for a connection a policy cannot apply to: not TCP (a pipe, a user's stream). */
const passThrough = new Set<string>([codes.NOT_TCP, codes.INVALID_HANDLE]);

/**
 * Tunes a connection an integration made or accepted (servers, agents, connectors). A TCP
 * connection gets `policy`; if the kernel refuses it, the connection is destroyed with that error
 * (a policy fails closed). A connection a policy cannot apply to (a Unix-domain socket, a stream a
 * user's `createConnection` returned) is passed through untouched and counted in
 * `guard.stats().untuned`, never destroyed.
 *
 * @returns whether the policy was applied
 */
export function adopt(socket: unknown, policy: Policy, guard: Guard): boolean {
  try {
    tune(socket as net.Socket, policy, guard);
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
