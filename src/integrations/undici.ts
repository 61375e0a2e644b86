/**
 * undici (and so `fetch`) under a policy: a connector that tunes every socket it makes, and an
 * undici `Agent` built on it whose idle connections leave the pool before the server closes them.
 * undici is an optional peer dependency (v7), loaded on first use.
 *
 * ```js
 * import { fetch, setGlobalDispatcher } from 'undici';
 * const dispatcher = createDispatcher(presets.gracefulHeartbeat());
 * await fetch(url, { dispatcher });          // one call
 * setGlobalDispatcher(dispatcher);            // or every fetch of the process
 * ```
 * @module
 */
import net from 'node:net';
import { createRequire } from 'node:module';
/** @ts-ignore undici is an optional peer: without it, these types are `any` (the line stays in the published .d.ts). */
import type { Agent, buildConnector } from 'undici';
import { codes, invalidArgType, invalidArgValue, socktuneError } from '../errors.js';
import { Guard } from '../guard/guard.js';
import { toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt as adoptConnection } from './tune.js';

type Undici = typeof import('undici');

const requireHere = createRequire(import.meta.url);
let undici: Undici | undefined;

/** undici, loaded synchronously (it is CommonJS) so the integration's API need not be async. */
function loadUndici(caller: string): Undici {
  if (undici !== undefined) return undici;
  try {
    undici = requireHere('undici') as Undici;
  } catch (cause) {
    if ((cause as { code?: string }).code !== 'MODULE_NOT_FOUND') throw cause;
    const err = socktuneError(codes.MISSING_PEER, `${caller} needs undici (>= 7): npm install undici`);
    Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
    throw err;
  }
  return undici;
}

/** What undici passes a connector: where to connect. */
export type ConnectorOptions = buildConnector.Options;
/** undici's connector callback: `(null, socket)` once connected (TLS: after the handshake), or `(err, null)`. */
export type ConnectorCallback = buildConnector.Callback;
/** An undici connector: makes a socket and reports it through the callback. */
export type Connector = (options: ConnectorOptions, callback: ConnectorCallback) => net.Socket | void;

/** A connector under a policy (pass it as undici's `connect` option). */
export interface PolicyConnector {
  (options: ConnectorOptions, callback: ConnectorCallback): net.Socket | void;
  /** The policy every socket of this connector gets. */
  readonly policy: Policy;
  /** The guard that tracks the sockets of this connector. */
  readonly guard: Guard;
}

/** An undici `Agent` whose connections carry a policy. */
export type PolicyDispatcher = Agent & {
  /** The policy every connection gets. */
  readonly policy: Policy;
  /** The guard that tracks the connections. */
  readonly guard: Guard;
};

/**
 * An undici connector whose every socket carries `policy`: undici's own `buildConnector`
 * (`connectOptions`: TLS options, `timeout` in milliseconds, `maxCachedSessions`, ...), or a
 * connector of your own, with each socket tuned the moment its TCP connection is up — before
 * undici sees it, so before the first request byte — and tracked by `connector.guard`.
 *
 * undici's connector calls `setKeepAlive(true, 60000)` on every socket (Node then also sets
 * TCP_KEEPINTVL=1 and TCP_KEEPCNT=10); the policy is applied after it, and a later
 * `setKeepAlive` by anyone is followed by the policy again.
 *
 * Throws `ERR_SOCKTUNE_MISSING_PEER` when undici is not installed (unless `connectOptions` is a
 * connector function).
 *
 * @param policy a preset (`presets.gracefulHeartbeat()`) or overrides
 * @param connectOptions options of undici's `buildConnector`, or a connector to wrap
 */
export function createConnector(policy: Policy | PolicyOverrides, connectOptions?: buildConnector.BuildOptions | Connector): PolicyConnector {
  const p = toPolicy(policy);
  let base: Connector;
  if (typeof connectOptions === 'function') {
    base = connectOptions;
  } else {
    if (connectOptions !== undefined && (typeof connectOptions !== 'object' || connectOptions === null)) {
      throw invalidArgType('connectOptions', 'an object or a connector function', connectOptions);
    }
    base = loadUndici('createConnector()').buildConnector(connectOptions ?? {}) as unknown as Connector;
  }
  const guard = new Guard(p);
  const tuned = new WeakSet<net.Socket>();

  function adopt(socket: net.Socket): void {
    if (tuned.has(socket)) return;
    tuned.add(socket);
    adoptConnection(socket, p, guard);
  }

  const connect = function socktuneConnect(options: ConnectorOptions, callback: ConnectorCallback): net.Socket | void {
    const socket = base(options, (...args: Parameters<ConnectorCallback>) => {
      // A connector that hands its socket over only here (or a TLS socket over an upgraded one).
      const made = args[1];
      if (args[0] == null && made instanceof net.Socket) adopt(made);
      callback(...args);
    });
    if (socket instanceof net.Socket) {
      // Ahead of undici's own 'connect' listener (its callback), so the policy is in place first;
      // TLS sockets connect TCP first and report to undici on 'secureConnect'.
      if (socket.connecting) socket.prependOnceListener('connect', () => adopt(socket));
      else if (!socket.destroyed) adopt(socket);
    }
    return socket;
  };
  Object.defineProperties(connect, {
    policy: { value: p, enumerable: true },
    guard: { value: guard, enumerable: true },
  });
  return connect as PolicyConnector;
}

/**
 * An undici `Agent` whose connections carry `policy`, through {@link createConnector}:
 * `keepAliveTimeout` is `policy.poolIdleTimeout` (idle connections leave the pool before the
 * common 5 s server timeout when the server gives no hint) and `keepAliveTimeoutThreshold` is
 * `policy.poolIdleMargin` (with `Keep-Alive: timeout=N`, leave that much earlier; a hint not
 * larger than the margin means the connection is not reused).
 *
 * Use it with undici's `fetch(url, { dispatcher })` or `request(url, { dispatcher })`, or for every
 * fetch with undici's `setGlobalDispatcher(dispatcher)` (Node's global `fetch` takes the
 * `dispatcher` option too).
 *
 * Unlike {@link createAgent}, the pool cannot check the kernel state of a connection before
 * reusing it (undici has no hook there): the eviction before the server's timeout is what keeps
 * requests off connections the server is closing.
 *
 * @param policy a preset or overrides
 * @param agentOptions undici `Agent` options, except `keepAliveTimeout` and
 *   `keepAliveTimeoutThreshold` (set through the policy). `connect` (an options object or a
 *   connector), `connectTimeout`, `maxCachedSessions`, `allowH2` and `autoSelectFamily` reach the
 *   connector as undici would pass them.
 */
export function createDispatcher(policy: Policy | PolicyOverrides, agentOptions: Agent.Options = {}): PolicyDispatcher {
  const p = toPolicy(policy);
  if (typeof agentOptions !== 'object' || agentOptions === null) throw invalidArgType('agentOptions', 'of type object', agentOptions);
  const {
    connect, connectTimeout, maxCachedSessions, allowH2, autoSelectFamily, autoSelectFamilyAttemptTimeout,
    socketPath, keepAliveTimeout, keepAliveTimeoutThreshold, ...rest
  } = agentOptions;
  if (keepAliveTimeout !== undefined || keepAliveTimeoutThreshold !== undefined) {
    throw invalidArgValue('agentOptions', { keepAliveTimeout, keepAliveTimeoutThreshold }, 'cannot set the pool timeouts; set policy.poolIdleTimeout and policy.poolIdleMargin');
  }
  if (socketPath != null) throw invalidArgValue('agentOptions.socketPath', socketPath, 'is a Unix-domain path; a policy applies to TCP connections');
  const { Agent: UndiciAgent } = loadUndici('createDispatcher()');
  // undici hands these to its own buildConnector only when `connect` is not a function.
  const connector = createConnector(p, typeof connect === 'function' ? (connect as unknown as Connector) : {
    maxCachedSessions,
    allowH2,
    timeout: connectTimeout,
    ...(typeof autoSelectFamily === 'boolean' ? { autoSelectFamily, autoSelectFamilyAttemptTimeout } : undefined),
    ...connect,
  } as buildConnector.BuildOptions);
  const agent = new UndiciAgent({
    ...rest,
    ...(allowH2 !== undefined ? { allowH2 } : undefined),
    connect: connector as unknown as buildConnector.connector,
    keepAliveTimeout: p.poolIdleTimeout,
    keepAliveTimeoutThreshold: p.poolIdleMargin,
  });
  Object.defineProperties(agent, {
    policy: { value: p, enumerable: false },
    guard: { value: connector.guard, enumerable: false },
  });
  return agent as PolicyDispatcher;
}
