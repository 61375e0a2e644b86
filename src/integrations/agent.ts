/**
 * `createAgent(policy)` and `createHttpsAgent(policy)`: `http.Agent` and `https.Agent` pools whose
 * every TCP connection carries the policy from its creation, whose idle connections leave the pool
 * before the server closes them, and which never hand out a connection the kernel no longer holds
 * as ESTABLISHED ("socket hang up" when a pooled socket races the server's idle timeout).
 *
 * The policy behaviour is defined once, as a mixin over Node's agent classes. Its state lives in a
 * module-level WeakMap keyed by the agent, not in `#private` fields, so the methods work when
 * another class borrows them (agentkeepalive copies `https.Agent.prototype.createConnection` onto
 * its own class), as Node's own methods do; on an agent without a pool they are Node's.
 * @module
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { invalidArgType, invalidArgValue, readArgument, unknownOption } from '../errors.js';
import { checkInteger } from '../options.js';
import { Guard } from '../guard/guard.js';
import { isExplicit, isPolicy, policyFields, toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt as adoptConnection } from './tune.js';
import { armRetry, noteRequestOptions } from './retry.js';
import { policyAgents, sweepFreeSockets } from './pool.js';
import { hasHttpMessage, keepAliveHeader } from '../handle.js';
import { policyPrebind, prebind } from '../stage/prebind.js';

/** agentkeepalive's options, accepted with agentkeepalive's meaning. */
export interface KeepAliveAgentOptions {
  /**
   * How long a free (pooled, idle) socket may wait for reuse, in milliseconds; 0 or unset: no
   * limit of its own. Replaces the agent's `timeout` for free sockets (which then bounds sockets
   * in use only), as in agentkeepalive. On a TCP connection it takes the place of the policy's
   * `poolIdleTimeout`, and a server's `Keep-Alive: timeout=N` hint still evicts the socket
   * `poolIdleMargin` before N. A socket's own `freeSocketTimeout` property (agentkeepalive's
   * per-socket override) takes its place for that socket.
   */
  freeSocketTimeout?: number;
  /**
   * The most a socket may live from its creation, in milliseconds; 0 or unset: no limit. A socket
   * in use is never cut: one past its TTL is closed when its request ends, and a free socket is
   * closed when its TTL runs out.
   */
  socketActiveTTL?: number;
  /** agentkeepalive's former name of `freeSocketTimeout` (same meaning). */
  freeSocketKeepAliveTimeout?: number;
  /** agentkeepalive's former name of `freeSocketTimeout` (same meaning). */
  keepAliveTimeout?: number;
}

/** Options of {@link createAgent}: `http.Agent`'s plus agentkeepalive's. */
export interface PolicyAgentOptions extends http.AgentOptions, KeepAliveAgentOptions {}
/** Options of {@link createHttpsAgent}: `https.Agent`'s plus agentkeepalive's. */
export interface PolicyHttpsAgentOptions extends https.AgentOptions, KeepAliveAgentOptions {}

/** agentkeepalive's counters, since the agent was created. */
export interface AgentCounters {
  /** Connections made. */
  createSocketCount: number;
  /** Connections `createConnection` reported as failed through its callback. */
  createSocketErrorCount: number;
  /** Connections closed. */
  closeSocketCount: number;
  /** Connections closed with an error. */
  errorSocketCount: number;
  /** Socket timeouts: free sockets evicted on their timeout, and requests whose socket timed out. */
  timeoutSocketCount: number;
  /** Requests finished with the connection kept open. */
  requestCount: number;
}

/** agentkeepalive's `getCurrentStatus()`: the counters and the pool sizes by pool name. */
export interface AgentStatus extends AgentCounters {
  /** Free sockets per pool name. */
  freeSockets: Record<string, number>;
  /** Sockets in use per pool name. */
  sockets: Record<string, number>;
  /** Requests waiting for a socket per pool name. */
  requests: Record<string, number>;
}

/** What every policy agent adds to Node's agent (the counters are agentkeepalive's). */
export interface PoolPolicy extends AgentCounters {
  /** The policy every TCP connection of this agent gets. */
  readonly policy: Policy;
  /** The guard that tracks this agent's connections (deadlines, statistics, events). */
  readonly guard: Guard;
  /**
   * Pooled connections dropped just before reuse because the kernel no longer held them as
   * ESTABLISHED (the server had closed them, or reset them, and Node had not yet noticed).
   */
  readonly staleDropped: number;
  /**
   * Requests sent once more on a new connection because their pooled connection was closed or
   * reset under them before any byte of the response (see `policy.poolRetry`). Each is also an
   * agent `'retry'` event, `{ request, error }`.
   */
  readonly retried: number;
  /** Whether a counter changed since the last read of `statusChanged` (agentkeepalive's). */
  readonly statusChanged: boolean;
  /** The counters and pool sizes (agentkeepalive's). */
  getCurrentStatus(): AgentStatus;
}

type ConnectCallback = (err: Error | null, stream?: Duplex) => void;

/** Node's agent members this module works with (stable since Node 12; see lib/_http_agent.js). */
interface AgentInternals extends http.Agent {
  options: { timeout?: number; freeSocketTimeout?: number; socketActiveTTL?: number };
  scheduling: 'lifo' | 'fifo';
  freeSockets: Record<string, net.Socket[] | undefined>;
  sockets: Record<string, net.Socket[] | undefined>;
  requests: Record<string, http.ClientRequest[] | undefined>;
  keepSocketAlive(socket: Duplex): boolean;
  removeSocket(socket: Duplex, options: object): void;
  createConnection(...args: unknown[]): Duplex | null | undefined;
  createSocket(req: http.ClientRequest, options: object, cb: ConnectCallback): void;
  addRequest(req: http.ClientRequest, options: unknown, ...legacy: unknown[]): void;
}

const COUNTERS = ['createSocketCount', 'createSocketErrorCount', 'closeSocketCount', 'errorSocketCount', 'timeoutSocketCount', 'requestCount'] as const;
type Counter = (typeof COUNTERS)[number];

// setTimeout() above this is taken as 1 ms by Node (with a warning): a hint this long is "forever".
const TIMEOUT_MAX = 2 ** 31 - 1;
const KEEP_ALIVE_TIMEOUT = /(?:^|[\s,;])timeout\s*=\s*(\d+)/i;
const ms = { min: 0, max: TIMEOUT_MAX };

/**
 * How long an idle TCP connection may stay in the pool under `policy`, in milliseconds (<= 0: do
 * not keep it).
 * - With the server's `Keep-Alive: timeout=N` hint: N s minus `poolIdleMargin`.
 * - Without: the agent's `freeSocketTimeout` if it has one, else `poolIdleTimeout`.
 *
 * A limit the user set caps either: a `poolIdleTimeout` given in the policy (not the default), the
 * agent's `freeSocketTimeout`, or else the agent's `timeout` (Node's agent bounds free sockets by it).
 *
 * @param free the agent's (or the socket's own) `freeSocketTimeout`, 0 for none
 * @param agentTimeout the agent's `timeout` option
 */
export function poolIdleLimit(policy: Policy, hint: string | undefined, free = 0, agentTimeout?: number): number {
  const seconds = hint === undefined ? undefined : KEEP_ALIVE_TIMEOUT.exec(hint)?.[1];
  let limit: number;
  if (seconds !== undefined) limit = Number(seconds) * 1000 - policy.poolIdleMargin;
  else limit = free > 0 ? free : policy.poolIdleTimeout;
  if (isExplicit(policy, 'poolIdleTimeout')) limit = Math.min(limit, policy.poolIdleTimeout);
  if (free > 0) limit = Math.min(limit, free);
  else if (agentTimeout !== undefined && agentTimeout > 0) limit = Math.min(limit, agentTimeout);
  return Math.min(limit, TIMEOUT_MAX);
}

/** The pool each policy agent owns, by agent. A borrowed method finds none on a foreign agent. */
const pools = new WeakMap<object, Pool>();
/** The pool each connection belongs to, for the shared listeners below. */
const owners = new WeakMap<object, Pool>();

/** A free socket's timeout (the agent destroys it): counted. */
function onFreeTimeout(this: Duplex): void {
  owners.get(this)?.count('timeoutSocketCount');
}

/**
 * A request whose socket went idle for the agent's (or its own) timeout: counted, and when the
 * application does not listen for `'timeout'`, failed with ERR_SOCKET_TIMEOUT (agentkeepalive's
 * rule) instead of waiting forever.
 */
function onRequestTimeout(this: http.ClientRequest): void {
  const socket = this.socket as Duplex | null;
  const pool = pools.get((this as { agent?: object }).agent ?? {});
  pool?.count('timeoutSocketCount');
  if (this.listenerCount('timeout') > 1 || socket == null || socket.destroyed) return;
  const err = new Error('Socket timeout') as Error & { code: string; timeout?: number };
  err.code = 'ERR_SOCKET_TIMEOUT';
  err.timeout = (socket as net.Socket).timeout;
  socket.destroy(err);
  // Out of the agent's lists before the request's 'error' (Node's agent does it on 'close', after).
  if (pool !== undefined) unlist(pool.agent.sockets, socket);
}

/** Removes `socket` from a pool list (Node's removeSocket, without its side effects). */
function unlist(set: Record<string, Duplex[] | undefined>, socket: Duplex): void {
  for (const name in set) {
    const list = set[name]!;
    const at = list.indexOf(socket);
    if (at < 0) continue;
    list.splice(at, 1);
    if (list.length === 0) delete set[name];
    return;
  }
}

/** Per-agent pool state and behaviour. */
class Pool {
  stale = 0;
  retried = 0;
  private readonly seen = new WeakSet<object>();
  /** Connections counted as closed (Node's agent may let go of one twice: on handover, then never again). */
  private readonly closed = new WeakSet<object>();
  /** Connections the policy was applied to (TCP): the only ones with idle limits and stale checks. */
  private readonly tuned = new WeakSet<object>();
  /** Connections whose timeout `keep` changed for their idle time in the pool. */
  private readonly timed = new WeakSet<object>();
  private readonly born = new WeakMap<object, number>();
  private readonly checked: number[];
  private readonly freeSocketTimeout: number;
  private readonly socketActiveTTL: number;

  constructor(
    readonly agent: AgentInternals & PoolPolicy,
    readonly policy: Policy,
    readonly guard: Guard,
    /** The policy's keepalive wins over Node's agent default (the application gave no `keepAliveMsecs`). */
    private readonly decides: boolean,
  ) {
    this.freeSocketTimeout = agent.options.freeSocketTimeout ?? 0;
    this.socketActiveTTL = agent.options.socketActiveTTL ?? 0;
    this.checked = COUNTERS.map((c) => agent[c]);
  }

  count(counter: Counter): void {
    this.agent[counter]++;
  }

  /** Whether a counter changed since the previous call. */
  changed(): boolean {
    let changed = false;
    COUNTERS.forEach((c, i) => {
      if (this.agent[c] !== this.checked[i]) changed = true;
      this.checked[i] = this.agent[c];
    });
    return changed;
  }

  /**
   * Takes a connection the agent made (returned or called back, by whichever `createConnection`):
   * TCP gets the policy; anything else (a Unix-domain socket, a user's stream) passes through
   * untouched and is counted in `guard.stats().untuned`.
   */
  adopt(stream: unknown): void {
    if (typeof stream !== 'object' || stream === null || this.seen.has(stream)) return;
    this.seen.add(stream);
    owners.set(stream, this);
    this.count('createSocketCount');
    if (this.socketActiveTTL > 0) this.born.set(stream, performance.now());
    const s = stream as Duplex;
    // A socket handed back before it started connecting has no handle to tune yet.
    if (s instanceof net.Socket && s.pending && !s.connecting && !s.destroyed) s.once('connect', () => this.tune(s));
    else this.tune(s);
  }

  private tune(stream: Duplex): void {
    if (adoptConnection(stream, this.policy, this.guard, this.decides)) this.tuned.add(stream);
  }

  /**
   * Node's agent lets go of `socket` (`removeSocket`): as it closed, or as a CONNECT or upgrade
   * request takes it over. Counted here rather than by a `'close'` listener of socktune's own, so a
   * socket handed over carries no listener of the pool (Node's own agent leaves none).
   */
  released(socket: Duplex): void {
    if (!socket.destroyed || this.closed.has(socket) || !this.seen.has(socket)) return;
    this.closed.add(socket);
    this.count('closeSocketCount');
    if ((socket as { errored?: unknown }).errored != null) this.count('errorSocketCount');
  }

  /** Closes every idle pooled connection the policy's way (RST under a reset policy); returns how many. */
  closeIdle(): number {
    let closed = 0;
    const free = this.agent.freeSockets;
    for (const name of Object.keys(free)) {
      for (const socket of [...(free[name] ?? [])]) {
        if (socket.destroyed) continue;
        socket.destroy();
        closed++;
      }
    }
    return closed;
  }

  /** After Node's own `keepSocketAlive` said yes: how long the socket may idle in the pool, or false to drop it. */
  keep(socket: Duplex): boolean {
    const s = socket as net.Socket & { freeSocketTimeout?: number; freeSocketKeepAliveTimeout?: number };
    const own = s.freeSocketTimeout || s.freeSocketKeepAliveTimeout || this.freeSocketTimeout;
    let limit: number | undefined;
    if (this.tuned.has(socket)) {
      limit = poolIdleLimit(this.policy, keepAliveHeader(socket), own, this.agent.options.timeout);
    } else if (own > 0) {
      limit = own;
    }
    if (this.socketActiveTTL > 0) {
      const left = this.socketActiveTTL - (performance.now() - (this.born.get(socket) ?? 0));
      if (left <= 0) return false;
      limit = Math.min(limit ?? (s.timeout || Infinity), Math.ceil(left));
    }
    if (limit !== undefined) {
      if (limit <= 0) return false;
      // The agent destroys a free socket on 'timeout': the socket's own idle timer, no new one.
      s.setTimeout(limit);
      this.timed.add(socket);
    }
    s.on('timeout', onFreeTimeout);
    return true;
  }

  /** A pooled socket goes back to work: its idle limit gives way to the agent's own timeout. */
  reuse(socket: Duplex): void {
    const s = socket as net.Socket;
    s.off('timeout', onFreeTimeout);
    if (!this.timed.has(socket)) return;
    const active = this.agent.options.timeout ?? 0;
    if (s.timeout !== active) s.setTimeout(active);
  }

  /** Before Node picks a free socket for a request: see {@link sweepFreeSockets}. */
  sweep(options: unknown, legacy: unknown[]): void {
    sweepFreeSockets(
      this.agent,
      options,
      legacy,
      (socket) => (this.tuned.has(socket) ? 'tcp' : 'other'),
      (socket) => {
        this.stale++;
        void this.guard.drop(socket, 'stale');
      },
    );
  }
}

/**
 * What the agents take as options: `http.Agent`'s and `https.Agent`'s own, the `net.connect` and
 * `tls.connect` options Node's agent passes to every connection it makes, and agentkeepalive's.
 */
const agentOptionNames = Object.freeze([
  // http.Agent, https.Agent
  'keepAlive',
  'keepAliveMsecs',
  'maxSockets',
  'maxTotalSockets',
  'maxFreeSockets',
  'scheduling',
  'timeout',
  'maxCachedSessions',
  'defaultPort',
  'protocol',
  'proxyEnv',
  // net.connect (Node's agent passes its options to every connection)
  'host',
  'hostname',
  'port',
  'path',
  'socketPath',
  'localAddress',
  'localPort',
  'family',
  'hints',
  'lookup',
  'noDelay',
  'keepAliveInitialDelay',
  'autoSelectFamily',
  'autoSelectFamilyAttemptTimeout',
  'allowHalfOpen',
  'signal',
  'fd',
  'readable',
  'writable',
  'onread',
  'blockList',
  'highWaterMark',
  // tls.connect and secure contexts
  'ca',
  'cert',
  'key',
  'pfx',
  'passphrase',
  'ciphers',
  'ecdhCurve',
  'honorCipherOrder',
  'minVersion',
  'maxVersion',
  'secureOptions',
  'secureProtocol',
  'sessionIdContext',
  'servername',
  'session',
  'rejectUnauthorized',
  'checkServerIdentity',
  'ALPNProtocols',
  'crl',
  'dhparam',
  'sigalgs',
  'privateKeyEngine',
  'privateKeyIdentifier',
  'clientCertEngine',
  'enableTrace',
  'minDHSize',
  'secureContext',
  'pskCallback',
  'requestOCSP',
  'ticketKeys',
  'sessionTimeout',
  'allowPartialTrustChain',
  'requestCert',
  'socket',
  // agentkeepalive
  'freeSocketTimeout',
  'socketActiveTTL',
  'freeSocketKeepAliveTimeout',
  'keepAliveTimeout',
]);

/** Fields of http.Agent options that a policy does not have: a first argument with them is agent options given first. */
const agentOnly = new Set(agentOptionNames.filter((n) => !policyFields.includes(n)));

/**
 * The policy argument of the agents: a policy or policy fields, with a word for the habit of
 * giving `http.Agent` options first (`createAgent({ keepAlive: true })`).
 */
function agentPolicy(policy: unknown): Policy {
  if (!isPolicy(policy) && typeof policy === 'object' && policy !== null) {
    // Names only, and a data property's value: no getter of the caller's runs twice.
    const agentKey = readArgument('policy', policy, () => {
      if (Array.isArray(policy)) return undefined;
      // `keepAlive: true` is http.Agent's (a policy's is false or timings).
      const keepAliveTrue = (k: string) => k === 'keepAlive' && Object.getOwnPropertyDescriptor(policy, k)?.value === true;
      return Object.keys(policy).find((k) => agentOnly.has(k) || keepAliveTrue(k));
    });
    if (agentKey !== undefined) {
      throw invalidArgValue(
        'policy',
        policy,
        `has the http.Agent option '${agentKey}': the agents take the policy first and the agent options second, ` +
          `as in createAgent(presets.gracefulHeartbeat(), { maxSockets: 10 }) (they keep connections alive already)`,
      );
    }
  }
  return toPolicy(policy);
}

/** Checks and normalizes the agent options: known names only, agentkeepalive's aliases, milliseconds as integers. */
function agentOptions(options: unknown): PolicyHttpsAgentOptions {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw invalidArgType('agentOptions', 'of type object', options);
  // Each own option read once, into a copy (the caller's getters and Proxy traps run here only).
  const o: Record<string, unknown> = readArgument('agentOptions', options, () => ({ ...(options as object) }));
  // An option the agents do not know would be ignored: a misspelling (maxSocket) is an error.
  for (const key of Object.keys(o)) {
    if (o[key] !== undefined && !agentOptionNames.includes(key)) throw unknownOption('agentOptions', key, agentOptionNames);
  }
  if (o.keepAlive === undefined) o.keepAlive = true;
  for (const alias of ['freeSocketKeepAliveTimeout', 'keepAliveTimeout']) {
    if (o[alias] === undefined) {
      delete o[alias];
      continue;
    }
    if (o.freeSocketTimeout !== undefined && o.freeSocketTimeout !== o[alias]) {
      throw invalidArgValue(
        `agentOptions.${alias}`,
        o[alias],
        `is agentkeepalive's former name of freeSocketTimeout, which is ${String(o.freeSocketTimeout)}; give one`,
      );
    }
    o.freeSocketTimeout = o[alias];
    delete o[alias];
  }
  // agentkeepalive also took '5s'-style strings; a duration here is milliseconds, never coerced.
  for (const key of ['freeSocketTimeout', 'socketActiveTTL']) {
    if (o[key] !== undefined) checkInteger(`agentOptions.${key}`, o[key], ms);
  }
  return o as PolicyHttpsAgentOptions;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AgentClass = new (...args: any[]) => http.Agent;

/**
 * The policy behaviour over one of Node's agent classes. Every method calls the base class's
 * (looked up when called, so a patched prototype is honoured) and then its own part; on an agent
 * this module did not construct, only the base class's.
 */
function withPolicy<TBase extends AgentClass>(Base: TBase) {
  const base = Base.prototype as AgentInternals;

  const PolicyPool = class extends Base implements PoolPolicy {
    readonly policy: Policy;
    readonly guard: Guard;
    createSocketCount = 0;
    createSocketErrorCount = 0;
    closeSocketCount = 0;
    errorSocketCount = 0;
    timeoutSocketCount = 0;
    requestCount = 0;

    // A mixin's constructor takes `...args: any[]`; the exported classes type them.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    constructor(...args: any[]) {
      const policy = agentPolicy(args[0]);
      const options = agentOptions(args[1]);
      super(options);
      this.policy = policy;
      this.guard = new Guard(policy);
      const decides = !Object.hasOwn(options, 'keepAliveMsecs');
      const pool = new Pool(this as unknown as AgentInternals & PoolPolicy, policy, this.guard, decides);
      pools.set(this, pool);
      policyAgents.add(this);
      // Before Node's own 'free' listener, which takes the finished request off the socket.
      this.prependListener('free', (socket: Duplex) => {
        if (hasHttpMessage(socket)) pool.count('requestCount');
      });
    }

    get staleDropped(): number {
      return pools.get(this)?.stale ?? 0;
    }

    /** Node's (`net.createConnection`, or https's `tls.connect` form), every call form as given; the connection is tuned. */
    override createConnection(...args: unknown[]): Duplex | null | undefined {
      const stream = base.createConnection.apply(this, args);
      // Made and not bound yet: the pre-connect stage gives it the policy's stage options
      // (IP_BIND_ADDRESS_NO_PORT for an agent's `localAddress`).
      if (stream instanceof net.Socket && this.policy !== undefined) prebind(stream, policyPrebind(this.policy));
      if (stream) pools.get(this)?.adopt(stream);
      return stream;
    }

    /**
     * Node's pool entry for a new connection: also tunes a connection a subclass's or the
     * user's own `createConnection` made, returned or called back.
     */
    createSocket(req: http.ClientRequest, options: object, cb: ConnectCallback): void {
      const pool = pools.get(this);
      if (pool === undefined) return base.createSocket.call(this, req, options, cb);
      base.createSocket.call(this, req, options, (err, stream) => {
        if (err) pool.count('createSocketErrorCount');
        else pool.adopt(stream);
        cb(err, stream);
      });
    }

    /** Node's, and the pool counts a close (not a socket a CONNECT or upgrade request took over). */
    removeSocket(socket: Duplex, options: object): void {
      base.removeSocket.call(this, socket, options);
      pools.get(this)?.released(socket);
    }

    /**
     * Closes every idle pooled connection now, the policy's way: with RST-on-close, a reset once
     * the server has acknowledged everything, so this side keeps no TIME_WAIT (a job about to end,
     * a shutdown). Connections in use are left to finish. Returns how many were closed.
     */
    closeIdle(): number {
      return pools.get(this)?.closeIdle() ?? 0;
    }

    override keepSocketAlive(socket: Duplex): boolean {
      // Node's: setKeepAlive(true, keepAliveMsecs) (a tuned socket puts the policy back), unref(),
      // and its own veto (a Keep-Alive hint of 1 s or less). A veto of the base class stands.
      if (!base.keepSocketAlive.call(this, socket)) return false;
      return pools.get(this)?.keep(socket) ?? true;
    }

    override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
      base.reuseSocket.call(this, socket, request);
      const pool = pools.get(this);
      if (pool === undefined) return;
      pool.reuse(socket);
      armRetry(this, socket, request, this.policy, (req, error) => {
        pool.retried++;
        this.emit('retry', { request: req, error });
      });
    }

    get retried(): number {
      return pools.get(this)?.retried ?? 0;
    }

    /** Node's request entry point (undocumented, overridden by design): stale sockets leave first. */
    addRequest(req: http.ClientRequest, options: unknown, ...legacy: unknown[]): void {
      const pool = pools.get(this);
      if (pool !== undefined) {
        noteRequestOptions(req, options);
        pool.sweep(options, legacy);
        // Node's legacy API takes any object as the request (test-http-addrequest-localaddress).
        if (typeof (req as { on?: unknown }).on === 'function') req.on('timeout', onRequestTimeout);
      }
      base.addRequest.call(this, req, options, ...legacy);
    }

    get statusChanged(): boolean {
      return pools.get(this)?.changed() ?? false;
    }

    getCurrentStatus(): AgentStatus {
      const self = this as unknown as AgentInternals & Record<Counter, number>;
      const sizes = (set: Record<string, unknown[] | undefined>): Record<string, number> => {
        const out: Record<string, number> = {};
        for (const name in set) out[name] = set[name]!.length;
        return out;
      };
      // On an agent that borrowed this method the counters are not there: 0.
      return {
        createSocketCount: self.createSocketCount ?? 0,
        createSocketErrorCount: self.createSocketErrorCount ?? 0,
        closeSocketCount: self.closeSocketCount ?? 0,
        errorSocketCount: self.errorSocketCount ?? 0,
        timeoutSocketCount: self.timeoutSocketCount ?? 0,
        requestCount: self.requestCount ?? 0,
        freeSockets: sizes(self.freeSockets),
        sockets: sizes(self.sockets),
        requests: sizes(self.requests),
      };
    }
  };
  // A mixin's construct signature is `...args: any[]`: typed here for the exported classes.
  return PolicyPool as unknown as (new (policy: Policy | PolicyOverrides, options?: object) => InstanceType<TBase> & PoolPolicy) & Omit<TBase, 'prototype'>;
}

/**
 * An `http.Agent` under a policy. Use {@link createAgent}; the class is exported for `instanceof`
 * and subclassing.
 */
export class PolicyAgent extends withPolicy(http.Agent) {
  /**
   * @param policy a preset or overrides
   * @param options `http.Agent` options plus agentkeepalive's; `keepAlive` defaults to true
   */
  constructor(policy: Policy | PolicyOverrides, options?: PolicyAgentOptions) {
    super(policy, options);
  }
}

/**
 * An `https.Agent` under a policy. Use {@link createHttpsAgent}; the class is exported for
 * `instanceof` and subclassing.
 */
export class PolicyHttpsAgent extends withPolicy(https.Agent) {
  /**
   * @param policy a preset or overrides
   * @param options `https.Agent` options plus agentkeepalive's; `keepAlive` defaults to true
   */
  constructor(policy: Policy | PolicyOverrides, options?: PolicyHttpsAgentOptions) {
    super(policy, options);
  }
}

/**
 * An `http.Agent` whose TCP connections all carry `policy`:
 * - every socket gets the policy's kernel options on `'connect'`, before its first request is
 *   written (Node's agent would apply its own keepalive only when a socket is first freed), and
 *   keeps them through every release (Node's `setKeepAlive(true, keepAliveMsecs)` is undone);
 * - an idle pooled socket is evicted `policy.poolIdleMargin` (default 2 s) before the server's
 *   `Keep-Alive: timeout=N` (not kept at all when that leaves nothing), or after
 *   `policy.poolIdleTimeout` (default 3 s, under the common 5 s server default) when the server
 *   gave no hint; a `poolIdleTimeout` you give caps it either way. Node 20's agent ignores the
 *   hint unless its `timeout` option is set;
 * - a pooled socket the kernel no longer holds as ESTABLISHED (the server's FIN or RST arrived
 *   while the event loop was busy) is dropped instead of being handed to a request
 *   (`agent.staleDropped` counts them);
 * - `agent.guard` tracks the connections for the policy's deadlines.
 *
 * Connections the policy cannot apply to (`socketPath`, a `createConnection` that returns a
 * Unix-domain socket or a stream of its own) pass through untouched, are pooled and reused as by
 * Node's agent, and are counted in `agent.guard.stats().untuned`.
 *
 * agentkeepalive's options (`freeSocketTimeout`, `socketActiveTTL`, and their former names) and
 * status API (`getCurrentStatus()`, `statusChanged`, the counters) work with its meaning; a request
 * whose socket times out while nobody listens for `'timeout'` fails with `ERR_SOCKET_TIMEOUT`.
 *
 * @param policy a preset (`presets.gracefulHeartbeat()`) or overrides
 * @param agentOptions `http.Agent` options (`keepAlive` defaults to true; `timeout`, in
 *   milliseconds, bounds sockets in use and, without `freeSocketTimeout`, caps the pool idle time)
 *   plus agentkeepalive's
 */
export function createAgent(policy: Policy | PolicyOverrides, agentOptions?: PolicyAgentOptions): PolicyAgent {
  return new PolicyAgent(policy, agentOptions);
}

/** {@link createAgent} for HTTPS: an `https.Agent` with the same pool behaviour (TLS sockets are tuned on TCP connect). */
export function createHttpsAgent(policy: Policy | PolicyOverrides, agentOptions?: PolicyHttpsAgentOptions): PolicyHttpsAgent {
  return new PolicyHttpsAgent(policy, agentOptions);
}
