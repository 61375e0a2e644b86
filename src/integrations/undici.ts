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
import { codes, invalidArgType, invalidArgValue, readArgument, socktuneError } from '../errors.js';
import { policyPrebind, prebind } from '../stage/prebind.js';
import { Guard } from '../guard/guard.js';
import { isExplicit, toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { adopt as adoptConnection } from './tune.js';
import { runtime } from '../handle.js';
import { retryInterceptor } from './undici-retry.js';

type Undici = typeof import('undici');

const requireHere = createRequire(import.meta.url);
let undici: Undici | undefined;

/** undici, loaded synchronously (it is CommonJS) so the integration's API need not be async. */
function loadUndici(caller: string): Undici {
  if (undici !== undefined) return undici;
  try {
    // Under Bun, `undici` names Bun's built-in stand-in (its Client and Agent do not dispatch): the
    // npm package is loaded by its file.
    undici = requireHere(runtime === 'bun' ? 'undici/index.js' : 'undici') as Undici;
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
  /**
   * Requests sent once more, on a new connection, because their pooled connection was closed or
   * reset under them before any byte of the response (see `policy.poolRetry`); each is also
   * published on the `socktune:retry` channel.
   */
  readonly retried: number;
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
 * Connections a policy cannot apply to (`socketPath`, a connector's own Unix-domain socket or
 * stream) pass through untouched and are counted in `connector.guard.stats().untuned`.
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
    // Each own option read once, into a copy (the caller's getters and Proxy traps run here only).
    const copy = readArgument('connectOptions', connectOptions, () => ({ ...connectOptions }));
    base = loadUndici('createConnector()').buildConnector(copy) as unknown as Connector;
  }
  const guard = new Guard(p);
  const seen = new WeakSet<object>();

  // TCP gets the policy; a Unix-domain socket or a connector's own stream passes through untouched,
  // counted in guard.stats().untuned.
  function adopt(stream: object): void {
    if (seen.has(stream)) return;
    seen.add(stream);
    adoptConnection(stream, p, guard);
  }

  const connect = function socktuneConnect(options: ConnectorOptions, callback: ConnectorCallback): net.Socket | void {
    const socket = base(options, (...args: Parameters<ConnectorCallback>) => {
      // A connector that hands its connection over only here (or a TLS socket over an upgraded one).
      const made = args[1] as unknown;
      if (args[0] == null && typeof made === 'object' && made !== null) adopt(made);
      callback(...args);
    });
    if (socket instanceof net.Socket) {
      // Made and not bound yet: the pre-connect stage gives it the policy's stage options
      // (IP_BIND_ADDRESS_NO_PORT for a `localAddress` in undici's connect options).
      if (socket.connecting) prebind(socket, policyPrebind(p));
      // Ahead of undici's own 'connect' listener (its callback), so the policy is in place first;
      // TLS sockets connect TCP first and report to undici on 'secureConnect'. A socket that has
      // not started connecting is taken when the connector calls back with it.
      if (socket.connecting) socket.prependOnceListener('connect', () => adopt(socket));
      else if (!socket.destroyed && !socket.pending) adopt(socket);
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
 * `policy.poolIdleMargin` (default 2 s, undici's own: with `Keep-Alive: timeout=N`, leave that much
 * earlier; a hint not larger than the margin means the connection is not reused). A
 * `poolIdleTimeout` you give caps the idle time hint or not (undici's `keepAliveMaxTimeout`).
 *
 * Use it with undici's `fetch(url, { dispatcher })` or `request(url, { dispatcher })`, or for every
 * fetch with undici's `setGlobalDispatcher(dispatcher)` (Node's global `fetch` takes the
 * `dispatcher` option too).
 *
 * Unlike {@link createAgent}, the pool cannot check the kernel state of a connection before
 * reusing it (undici has no hook there): the eviction before the server's timeout is what keeps
 * requests off connections the server is closing.
 *
 * With `socketPath` (here or in `connect`) the connections are Unix-domain: no policy applies, and
 * the pool is undici's own (its `keepAliveTimeout` and `keepAliveTimeoutThreshold` are accepted);
 * each connection is counted in `dispatcher.guard.stats().untuned`.
 *
 * @param policy a preset or overrides
 * @param agentOptions undici `Agent` options, except `keepAliveTimeout` and
 *   `keepAliveTimeoutThreshold` (set through the policy). `connect` (an options object or a
 *   connector), `connectTimeout`, `maxCachedSessions`, `allowH2`, `autoSelectFamily`, `tls` and
 *   `socketPath` reach the connector as undici would pass them; what undici refuses (such as
 *   `connect: false`) is refused with undici's own error.
 */
export function createDispatcher(policy: Policy | PolicyOverrides, agentOptions: Agent.Options = {}): PolicyDispatcher {
  const p = toPolicy(policy);
  if (typeof agentOptions !== 'object' || agentOptions === null) throw invalidArgType('agentOptions', 'of type object', agentOptions);
  const {
    connect,
    connectTimeout,
    maxCachedSessions,
    allowH2,
    autoSelectFamily,
    autoSelectFamilyAttemptTimeout,
    socketPath,
    tls,
    keepAliveTimeout,
    keepAliveTimeoutThreshold,
    keepAliveMaxTimeout,
    ...rest
  } = readArgument('agentOptions', agentOptions, () => ({ ...agentOptions })) as Agent.Options & { tls?: object; keepAliveMaxTimeout?: number };
  const { Agent: UndiciAgent, errors } = loadUndici('createDispatcher()');
  // As undici's Agent checks it, before anything is built.
  if (connect != null && typeof connect !== 'function' && typeof connect !== 'object') {
    throw new errors.InvalidArgumentError('connect must be a function or an object');
  }
  const connectOptions = typeof connect === 'object' && connect !== null ? (connect as buildConnector.BuildOptions) : undefined;
  const unix = socketPath != null || connectOptions?.socketPath != null;
  if (!unix && (keepAliveTimeout !== undefined || keepAliveTimeoutThreshold !== undefined)) {
    throw invalidArgValue(
      'agentOptions',
      { keepAliveTimeout, keepAliveTimeoutThreshold },
      'cannot set the pool timeouts; set policy.poolIdleTimeout and policy.poolIdleMargin',
    );
  }
  // undici hands these to its own buildConnector only when `connect` is not a function.
  const connector = createConnector(
    p,
    typeof connect === 'function'
      ? (connect as unknown as Connector)
      : ({
          ...(tls as object | undefined),
          maxCachedSessions,
          allowH2,
          socketPath,
          timeout: connectTimeout,
          ...(typeof autoSelectFamily === 'boolean' ? { autoSelectFamily, autoSelectFamilyAttemptTimeout } : undefined),
          ...connectOptions,
        } as buildConnector.BuildOptions),
  );
  // Over TCP the pool timeouts are the policy's; a poolIdleTimeout the user gave caps a hint too.
  let pool: { keepAliveTimeout?: number; keepAliveTimeoutThreshold?: number; keepAliveMaxTimeout?: number } = {
    keepAliveTimeout,
    keepAliveTimeoutThreshold,
    keepAliveMaxTimeout,
  };
  if (!unix) {
    const cap = isExplicit(p, 'poolIdleTimeout') ? Math.min(keepAliveMaxTimeout ?? Infinity, p.poolIdleTimeout) : keepAliveMaxTimeout;
    pool = { keepAliveTimeout: p.poolIdleTimeout, keepAliveTimeoutThreshold: p.poolIdleMargin, keepAliveMaxTimeout: cap };
  }
  for (const key of Object.keys(pool) as Array<keyof typeof pool>) if (pool[key] === undefined) delete pool[key];
  const options = {
    ...rest,
    ...(allowH2 !== undefined ? { allowH2 } : undefined),
    // undici passes the path on to a connector function (a user's, wrapped by createConnector).
    ...(socketPath != null ? { socketPath } : undefined),
    connect: connector as unknown as buildConnector.connector,
  };
  const agent = new UndiciAgent({ ...options, ...pool });
  let retried = 0;
  Object.defineProperties(agent, {
    policy: { value: p, enumerable: false },
    guard: { value: connector.guard, enumerable: false },
    retried: { get: () => retried, enumerable: false },
  });
  if (p.poolRetry === false) return agent as PolicyDispatcher;
  // A request sent once more goes to a pool of the same connections that keeps none: a new one.
  const fresh = new UndiciAgent({ ...options, pipelining: 0 });
  for (const method of ['close', 'destroy'] as const) {
    const own = UndiciAgent.prototype[method] as (this: Agent, ...args: unknown[]) => Promise<void>;
    Object.defineProperty(agent, method, {
      value: (...args: unknown[]) => {
        const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as (err: unknown) => void) : undefined;
        // The callback form of undici's own method does the work (its promise form calls this method again).
        const mine = new Promise<void>((resolve, reject) => own.call(agent, ...args, (err: unknown) => (err ? reject(err) : resolve())));
        const done = Promise.all([mine, (fresh[method] as (...a: unknown[]) => Promise<void>).apply(fresh, args)]).then(() => undefined);
        if (callback === undefined) return done;
        done.then(() => callback(null), callback);
        return undefined;
      },
      enumerable: false,
    });
  }
  // In front of the Agent's own dispatch, not through agent.compose(): undici 7's compose wraps
  // every handler of the old API (request()'s, fetch's) in one of the new and the Agent unwraps it
  // again, parsing each response's headers into an object and copying them back into Buffers: on a
  // request that does not fail that cost more than the retry itself. The interceptor speaks both
  // APIs; a compose() of the user's on top of this dispatcher still puts it innermost.
  const dispatch = retryInterceptor({ mode: p.poolRetry, fresh, onRetry: () => retried++ })(
    UndiciAgent.prototype.dispatch.bind(agent) as (opts: object, handler: object) => unknown,
  );
  Object.defineProperty(agent, 'dispatch', { value: dispatch, enumerable: false, writable: true, configurable: true });
  return agent as PolicyDispatcher;
}
