/**
 * `createAgent(policy)` and `createHttpsAgent(policy)`: `http.Agent` and `https.Agent` pools whose
 * every connection carries the policy from its creation, whose idle connections leave the pool
 * before the server closes them, and which never hand out a connection the kernel no longer holds
 * as ESTABLISHED ("socket hang up" when a pooled socket races the server's idle timeout).
 * @module
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { invalidArgType } from '../errors.js';
import { tcpState } from '../options.js';
import { Guard } from '../guard/guard.js';
import { toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt } from './tune.js';

/** What every policy agent adds to Node's agent. */
export interface PoolPolicy {
  /** The policy every connection of this agent gets. */
  readonly policy: Policy;
  /** The guard that tracks this agent's connections (deadlines, statistics, events). */
  readonly guard: Guard;
  /**
   * Pooled connections dropped just before reuse because the kernel no longer held them as
   * ESTABLISHED (the server had closed them, or reset them, and Node had not yet noticed).
   */
  readonly staleDropped: number;
}

type ConnectCallback = (err: Error | null, stream: Duplex) => void;

/** Node's agent internals this module works with (stable since Node 12; see lib/_http_agent.js). */
interface AgentInternals {
  options: { timeout?: number; host?: string; port?: number | string };
  scheduling: 'lifo' | 'fifo';
  freeSockets: Record<string, net.Socket[] | undefined>;
}

/** Node's `addRequest`, not part of the typed surface but the one entry every request passes. */
type AddRequest = (this: http.Agent, req: http.ClientRequest, options: unknown, ...legacy: unknown[]) => void;
const httpAddRequest = (http.Agent.prototype as unknown as { addRequest: AddRequest }).addRequest;
const httpsAddRequest = (https.Agent.prototype as unknown as { addRequest: AddRequest }).addRequest;

// setTimeout() above this is taken as 1 ms by Node (with a warning): a hint this long is "forever".
const TIMEOUT_MAX = 2 ** 31 - 1;
const KEEP_ALIVE_TIMEOUT = /(?:^|[\s,;])timeout\s*=\s*(\d+)/i;

/**
 * How long an idle connection may stay in the pool, in milliseconds (<= 0: do not keep it).
 * The server's `Keep-Alive: timeout=N` hint minus the margin, else the policy's pool idle timeout;
 * never longer than the agent's own `timeout` option.
 */
export function poolIdleLimit(policy: Policy, hint: string | undefined, agentTimeout: number | undefined): number {
  const seconds = hint === undefined ? undefined : KEEP_ALIVE_TIMEOUT.exec(hint)?.[1];
  let limit = seconds === undefined ? policy.poolIdleTimeout : Number(seconds) * 1000 - policy.poolIdleMargin;
  if (agentTimeout !== undefined && agentTimeout > 0) limit = Math.min(limit, agentTimeout);
  return Math.min(limit, TIMEOUT_MAX);
}

/** Whether the kernel still holds `socket` as an open connection both ways. */
function established(socket: net.Socket): boolean {
  if (socket.destroyed) return false;
  try {
    return tcpState(socket) === 'ESTABLISHED';
  } catch {
    return false; // no fd left: closing
  }
}

/** The pool behaviour both agent classes share; one per agent. */
class Pool {
  stale = 0;
  readonly #tuned = new WeakSet<net.Socket>();

  constructor(
    readonly agent: http.Agent & AgentInternals,
    readonly policy: Policy,
    readonly guard: Guard,
  ) {}

  /** Tunes a socket the agent just made: kernel options on `'connect'`, close behaviour, guard. */
  adopt(socket: unknown): void {
    if (!(socket instanceof net.Socket) || this.#tuned.has(socket)) return;
    this.#tuned.add(socket);
    adopt(socket, this.policy, this.guard);
  }

  /** Wraps `createConnection` so the socket is tuned however it is handed back (returned or called back). */
  connect(base: (options: http.ClientRequestArgs, cb?: ConnectCallback) => Duplex | null | undefined, options: http.ClientRequestArgs, cb?: ConnectCallback): Duplex | null | undefined {
    const done: ConnectCallback | undefined = cb && ((err, stream) => {
      if (!err && stream) this.adopt(stream);
      cb(err, stream);
    });
    const socket = base.call(this.agent, options, done);
    if (socket) this.adopt(socket);
    return socket;
  }

  /** After Node's own `keepSocketAlive`: how long the socket may idle in the pool, or false to drop it. */
  keep(socket: Duplex): boolean {
    const res = (socket as { _httpMessage?: { res?: http.IncomingMessage } })._httpMessage?.res;
    const header: string | string[] | undefined = res?.headers['keep-alive'];
    const hint = Array.isArray(header) ? header.join(', ') : header;
    const limit = poolIdleLimit(this.policy, hint, this.agent.options.timeout);
    if (limit <= 0) return false;
    // The agent destroys a free socket on 'timeout': the socket's own idle timer, no new one.
    (socket as net.Socket).setTimeout(limit);
    return true;
  }

  /** A pooled socket goes back to work: its idle eviction gives way to the agent's own timeout. */
  reuse(socket: Duplex): void {
    const s = socket as net.Socket;
    const active = this.agent.options.timeout ?? 0;
    if (s.timeout !== active) s.setTimeout(active);
  }

  /**
   * Before Node picks a free socket for a request: drops, from the end Node picks from, every
   * socket the kernel no longer holds as ESTABLISHED (one TCP_INFO read per socket looked at).
   * Node 20's `addRequest` pops the newest free socket (LIFO) and skips only destroyed sockets at
   * the front of the list; a FIN or RST that arrived while the event loop was busy is in the
   * kernel long before Node reads it.
   */
  sweep(options: unknown, legacy: unknown[]): void {
    // As Node's addRequest merges them (the legacy form is addRequest(req, host, port, localAddress)).
    const request = typeof options === 'string' ? { host: options, port: legacy[0], localAddress: legacy[1] } : (options as object);
    const given = { ...request, ...this.agent.options };
    const free = this.agent.freeSockets;
    if (!(this.agent instanceof https.Agent)) {
      // An http.Agent names its pools from host, port, local address and family only.
      const name = this.agent.getName(given as http.ClientRequestArgs);
      if (free[name] !== undefined) this.#drop(free, name);
      return;
    }
    // https adds TLS fields, the server name among them, after host:port:; Node derives the
    // server name from the Host header. Every pool of this host and port is checked instead.
    const { host, port } = given as { host?: string; port?: number | string };
    const prefix = `${host || 'localhost'}:${port || ''}:`;
    for (const name in free) if (name.startsWith(prefix)) this.#drop(free, name);
  }

  /** Drops stale sockets from the end of `free[name]` that Node will pick from. */
  #drop(free: AgentInternals['freeSockets'], name: string): void {
    const list = free[name]!;
    const fifo = this.agent.scheduling === 'fifo';
    while (list.length > 0) {
      const at = fifo ? 0 : list.length - 1;
      const socket = list[at];
      if (established(socket)) break;
      list.splice(at, 1);
      if (!socket.destroyed) {
        this.stale++;
        void this.guard.drop(socket, 'stale');
      }
    }
    if (list.length === 0) delete free[name];
  }
}

function checkOptions(name: string, options: unknown): void {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw invalidArgType(name, 'of type object', options);
}

/**
 * An `http.Agent` under a policy. Use {@link createAgent}; the class is exported for `instanceof`
 * and subclassing.
 */
export class PolicyAgent extends http.Agent implements PoolPolicy {
  readonly policy: Policy;
  readonly guard: Guard;
  readonly #pool: Pool;

  /**
   * @param policy a preset or overrides
   * @param options `http.Agent` options; `keepAlive` defaults to true
   */
  constructor(policy: Policy | PolicyOverrides, options?: http.AgentOptions) {
    const p = toPolicy(policy);
    checkOptions('agentOptions', options);
    super({ keepAlive: true, ...options });
    this.policy = p;
    this.guard = new Guard(p);
    this.#pool = new Pool(this as unknown as http.Agent & AgentInternals, p, this.guard);
  }

  get staleDropped(): number {
    return this.#pool.stale;
  }

  override createConnection(options: http.ClientRequestArgs, cb?: ConnectCallback): Duplex | null | undefined {
    return this.#pool.connect(super.createConnection, options, cb);
  }

  override keepSocketAlive(socket: Duplex): boolean {
    // Node's: setKeepAlive(true, keepAliveMsecs) (the tuned socket puts the policy back), unref().
    super.keepSocketAlive(socket);
    return this.#pool.keep(socket);
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    super.reuseSocket(socket, request);
    this.#pool.reuse(socket);
  }

  /** Node's request entry point (undocumented, overridden by design): stale sockets leave first. */
  addRequest(req: http.ClientRequest, options: unknown, ...legacy: unknown[]): void {
    this.#pool.sweep(options, legacy);
    httpAddRequest.call(this, req, options, ...legacy);
  }
}

/**
 * An `https.Agent` under a policy. Use {@link createHttpsAgent}; the class is exported for
 * `instanceof` and subclassing.
 */
export class PolicyHttpsAgent extends https.Agent implements PoolPolicy {
  readonly policy: Policy;
  readonly guard: Guard;
  readonly #pool: Pool;

  /**
   * @param policy a preset or overrides
   * @param options `https.Agent` options; `keepAlive` defaults to true
   */
  constructor(policy: Policy | PolicyOverrides, options?: https.AgentOptions) {
    const p = toPolicy(policy);
    checkOptions('agentOptions', options);
    super({ keepAlive: true, ...options });
    this.policy = p;
    this.guard = new Guard(p);
    this.#pool = new Pool(this as unknown as http.Agent & AgentInternals, p, this.guard);
  }

  get staleDropped(): number {
    return this.#pool.stale;
  }

  override createConnection(options: http.ClientRequestArgs, cb?: ConnectCallback): Duplex | null | undefined {
    return this.#pool.connect(super.createConnection, options, cb);
  }

  override keepSocketAlive(socket: Duplex): boolean {
    super.keepSocketAlive(socket);
    return this.#pool.keep(socket);
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    super.reuseSocket(socket, request);
    this.#pool.reuse(socket);
  }

  /** Node's request entry point (undocumented, overridden by design): stale sockets leave first. */
  addRequest(req: http.ClientRequest, options: unknown, ...legacy: unknown[]): void {
    this.#pool.sweep(options, legacy);
    httpsAddRequest.call(this, req, options, ...legacy);
  }
}

/**
 * An `http.Agent` whose connections all carry `policy`:
 * - every socket gets the policy's kernel options on `'connect'`, before its first request is
 *   written (Node's agent would apply its own keepalive only when a socket is first freed), and
 *   keeps them through every release (Node's `setKeepAlive(true, keepAliveMsecs)` is undone);
 * - an idle pooled socket is evicted `policy.poolIdleMargin` before the server's
 *   `Keep-Alive: timeout=N` (not kept at all when that leaves nothing), or after
 *   `policy.poolIdleTimeout` (default 3 s, under the common 5 s server default) when the server
 *   gave no hint — Node 20's agent ignores the hint unless its `timeout` option is set;
 * - a pooled socket the kernel no longer holds as ESTABLISHED (the server's FIN or RST arrived
 *   while the event loop was busy) is dropped instead of being handed to a request
 *   (`agent.staleDropped` counts them);
 * - `agent.guard` tracks the connections for the policy's deadlines.
 *
 * @param policy a preset (`presets.gracefulHeartbeat()`) or overrides
 * @param agentOptions `http.Agent` options (`keepAlive` defaults to true; `timeout`, in
 *   milliseconds, still bounds sockets in use and caps the pool idle time)
 */
export function createAgent(policy: Policy | PolicyOverrides, agentOptions?: http.AgentOptions): PolicyAgent {
  return new PolicyAgent(policy, agentOptions);
}

/** {@link createAgent} for HTTPS: an `https.Agent` with the same pool behaviour (TLS sockets are tuned on TCP connect). */
export function createHttpsAgent(policy: Policy | PolicyOverrides, agentOptions?: https.AgentOptions): PolicyHttpsAgent {
  return new PolicyHttpsAgent(policy, agentOptions);
}
