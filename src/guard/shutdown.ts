/**
 * Draining a server for a deploy without dropping a request. A server that simply closes (Node's
 * `server.close()` destroys every idle keep-alive connection at once) races the load balancers and
 * pools that still hold those connections: a request sent on one as it closes fails (a 502 at the
 * load balancer, "socket hang up" at a client). The drain instead:
 *
 * 1. marks every response from now on `Connection: close` (and those in flight whose head is not
 *    sent yet), so each connection ends right after its response, announced to the peer, and
 *    answers the load balancer's readiness checks (`readinessPath`) 503;
 * 2. keeps accepting and answering for `delay` (a load balancer's time to take the instance out of
 *    rotation: its health checks, a Kubernetes endpoint update);
 * 3. stops accepting, and closes the idle keep-alive connections spread over `spread`, so their
 *    clients do not all reconnect elsewhere in one burst; a connection that becomes idle later
 *    (its response had begun before the drain) is closed as soon as it is;
 * 4. lets requests in flight finish, and at `timeout` after it stopped accepting closes what is
 *    left the policy's way (reason `'shutdown'`).
 *
 * HTTP specifics read Node's server internals through handle.ts (`serverConnections`).
 * @module
 */
import net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { serverConnections, type ServerConnections } from '../handle.js';
import { invalidArgType, unknownOption } from '../errors.js';

/** Options of a drain ({@link Guard.close}, `drainServer`). */
export interface ShutdownOptions {
  /**
   * How long to keep accepting and answering before stopping, in milliseconds (default 0): the
   * time a load balancer in front needs to take this instance out. Responses carry
   * `Connection: close` from the start of the drain.
   */
  delay?: number;
  /** How long, once accepting stopped, requests in flight may take, in milliseconds (default 10 000); then what is left is closed. */
  timeout?: number;
  /**
   * Over how long the idle keep-alive connections are closed once accepting stopped, in
   * milliseconds (default: a quarter of `timeout`, at most 1 000), so their clients reconnect
   * elsewhere over that time rather than at once.
   */
  spread?: number;
  /**
   * The path a load balancer checks (`'/healthz'`): from the start of the drain its requests are
   * answered `503` (whatever the application writes), so a balancer that checks it (HAProxy's
   * `option httpchk`, an ALB target group) takes the instance out during `delay`, before it stops
   * accepting. Unset: none.
   */
  readinessPath?: string;
}

/** What a drain did. */
export interface ShutdownReport {
  /** Connections that ended on their own (their response with `Connection: close`, or as idle) during the drain. */
  ended: number;
  /** Of those, idle keep-alive connections the drain closed. */
  idleClosed: number;
  /** Connections closed at the timeout (reason `'shutdown'`). */
  forced: number;
  /** Milliseconds the drain took, the delay included. */
  elapsed: number;
}

const MAX = 2 ** 31 - 1;
const POLL = 20;

function duration(options: ShutdownOptions, key: keyof ShutdownOptions, fallback: number): number {
  const value = Object.hasOwn(options, key) ? options[key] : undefined;
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX) {
    throw invalidArgType(`options.${key}`, 'an integer from 0 to 2147483647 (milliseconds)', value);
  }
  return value;
}

/** A drain's settings, validated. */
export interface ShutdownSettings {
  delay: number;
  timeout: number;
  spread: number;
  readinessPath: string | undefined;
}

const shutdownKeys = ['delay', 'timeout', 'spread', 'readinessPath'];

/** The drain's settings, validated (what `guard.close()` and socktune/register's `close()` take). */
export function shutdownSettings(options: unknown): ShutdownSettings {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgType('options', 'of type object', options);
  const o = options as ShutdownOptions;
  for (const key of Object.keys(o)) {
    if (!shutdownKeys.includes(key)) throw unknownOption('options', key, shutdownKeys);
  }
  const timeout = duration(o, 'timeout', 10_000);
  const path = o.readinessPath;
  if (path !== undefined && (typeof path !== 'string' || !path.startsWith('/')))
    throw invalidArgType('options.readinessPath', "a path starting with '/'", path);
  return { delay: duration(o, 'delay', 0), timeout, spread: duration(o, 'spread', Math.min(1000, Math.floor(timeout / 4))), readinessPath: path };
}

/** Marks a response `Connection: close` if its head is not sent yet: its connection ends after it. */
function closeAfter(res: ServerResponse | null | undefined): void {
  if (res == null || res.headersSent) return;
  try {
    res.setHeader('connection', 'close');
    res.shouldKeepAlive = false;
  } catch {
    // The head went out meanwhile: the connection becomes idle after it and is closed then.
  }
}

/** A readiness check answered 503 whatever the application writes: the balancer takes the instance out. */
function notReady(res: ServerResponse): void {
  const writeHead = res.writeHead;
  res.statusCode = 503;
  res.writeHead = function (this: ServerResponse, _status: number, ...rest: unknown[]) {
    return (writeHead as (...args: unknown[]) => ServerResponse).call(this, 503, ...rest);
  } as ServerResponse['writeHead'];
}

/** The 'request' listener of a server being drained (prepended: ahead of the application's). */
function whileDraining(readinessPath: string | undefined): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    closeAfter(res);
    if (readinessPath !== undefined && typeof req.url === 'string' && (req.url === readinessPath || req.url.startsWith(`${readinessPath}?`))) notReady(res);
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * One server's drain: see the module. `close(socket)` closes what is left at the timeout (the
 * guard's way: its policy, reason `'shutdown'`). Resolves with the report.
 * @internal
 */
export async function drain(
  servers: readonly net.Server[],
  settings: ShutdownSettings,
  sockets: () => net.Socket[],
  close: (socket: net.Socket) => Promise<void>,
): Promise<ShutdownReport> {
  const start = performance.now();
  const http = servers
    .map((s) => ({ server: s, connections: serverConnections(s) }))
    .filter((x): x is { server: net.Server; connections: ServerConnections } => x.connections !== undefined);
  const onRequest = whileDraining(settings.readinessPath);
  for (const { server, connections } of http) {
    server.prependListener('request', onRequest);
    for (const socket of connections.all()) closeAfter(connections.response(socket));
  }
  if (settings.delay > 0) await sleep(settings.delay);

  // Stop accepting; HTTP servers without Node's own close of every idle connection at once.
  for (const server of servers) {
    if (!server.listening) continue;
    const own = http.find((x) => x.server === server);
    if (own) own.connections.stopAccepting();
    else server.close();
  }
  const stopped = performance.now();
  const open = new Set<net.Socket>([...sockets(), ...http.flatMap((x) => x.connections.all())]);
  const before = open.size;
  let idleClosed = 0;
  const closedByDrain = new WeakSet<net.Socket>();
  const idleNow = (): net.Socket[] => http.flatMap((x) => x.connections.idle());
  // Idle connections at the stop close over `spread`; any that becomes idle later, at once.
  const first = idleNow();
  const deadline = stopped + settings.timeout;
  let next = 0;
  for (;;) {
    const now = performance.now();
    const due = settings.spread === 0 ? first.length : Math.ceil((first.length * Math.min(now - stopped, settings.spread)) / settings.spread);
    for (; next < Math.min(due, first.length); next++) endIdle(first[next]);
    if (now - stopped >= settings.spread) for (const socket of idleNow()) endIdle(socket);
    // Plain (non-HTTP) connections are asked to end, once: the peer sees EOF.
    for (const socket of sockets()) {
      if (!http.some((x) => x.server === (socket as net.Socket & { server?: net.Server }).server) && !socket.writableEnded && !socket.destroyed) socket.end();
    }
    const left = [...open].filter((s) => !s.destroyed);
    if (left.length === 0 || now >= deadline) break;
    await sleep(Math.max(1, Math.min(POLL, deadline - now)));
  }
  const left = [...open].filter((s) => !s.destroyed);
  await Promise.all(left.map((socket) => close(socket)));
  for (const { server, connections } of http) {
    server.removeListener('request', onRequest);
    connections.finish();
  }
  return { ended: before - left.length, idleClosed, forced: left.length, elapsed: performance.now() - start };

  function endIdle(socket: net.Socket): void {
    if (closedByDrain.has(socket) || socket.destroyed) return;
    closedByDrain.add(socket);
    idleClosed++;
    socket.end();
    // A peer that never answers our FIN does not hold the drain: Node destroys it at the timeout.
  }
}
