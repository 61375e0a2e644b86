/**
 * The listener stage: `listen(server, options)` makes the listening socket natively (socket, the
 * options that act before bind, bind) and hands it to `server.listen({ fd })`, which calls listen(2)
 * on it and accepts as usual. What this reaches that Node's own `listen()` does not: SO_REUSEPORT on
 * Node 20 (`listen({ reusePort })` exists from Node 22.12/23.1, nodejs/node#55408; before that Node
 * refused it, nodejs/node#12228), so several processes share a port and the kernel spreads the
 * connections; SO_REUSEADDR off; TCP_DEFER_ACCEPT; and the options every accepted connection
 * inherits from its listener on Linux (keepalive, TCP_USER_TIMEOUT, TCP_NODELAY, buffers, IP_TOS).
 * @module
 */
import dns from 'node:dns';
import net from 'node:net';
import { addressError, codes, invalidArgType, outOfRange, readArgument, socktuneError, unknownOption, type KernelError } from '../errors.js';
import { Stage, assertStagesAvailable, createSocket, encodeFor, withDefault, type EncodedOptions, type SocketOptions } from '../options.js';
import { parseAddress } from '../diagnose/address.js';
import { listenOn } from '../handle.js';

/** Options of {@link listen}. */
export interface ListenOptions {
  /** The port, 0 – 65 535 (default 0: one the kernel picks). */
  port?: number;
  /**
   * The address or host name to listen on. Default: every address, IPv6 and IPv4 (`::` with
   * IPV6_V6ONLY off), or `0.0.0.0` where the host has no IPv6, as Node's `listen()` does.
   */
  host?: string;
  /** The accept queue's length, as `listen(2)` takes it (default: Node's, 511). */
  backlog?: number;
  /** Only IPv6 on an IPv6 address (IPV6_V6ONLY), as Node's `ipv6Only`. Default `false`. */
  ipv6Only?: boolean;
  /**
   * Options set on the listening socket before it binds: `reusePort` (SO_REUSEPORT: several
   * processes listen on one port), `reuseAddress` (SO_REUSEADDR, default `true` as Node sets it),
   * `deferAccept` (TCP_DEFER_ACCEPT), and what accepted connections inherit from their listener on
   * Linux (`keepAlive`, `userTimeout`, `noDelay`, `receiveBuffer`, `sendBuffer`, `tos`). Never
   * `linger` (every accepted connection would inherit it), nor the options of a client's stage.
   */
  prebind?: SocketOptions;
}

const listenKeys = ['port', 'host', 'backlog', 'ipv6Only', 'prebind'];

/**
 * Listens on a socket socktune makes: socket, the `prebind` options, bind, then
 * `server.listen({ fd }, backlog)` (Node calls listen(2) and accepts as for any server). Returns
 * `server`; `'listening'` (and `callback`) follow as with `server.listen()`, and a refusal (the
 * address in use, an option the kernel refuses, a host name that does not resolve) is emitted as
 * `'error'` on the server, shaped as Node's (`listen EADDRINUSE: address already in use
 * 0.0.0.0:8080`, with `option` and `applied` for a refused option).
 *
 * Not in a cluster worker: the fd would be sent to the primary, where it means nothing (use
 * `reusePort` instead of cluster). Linux and macOS; Windows answers ERR_SOCKTUNE_UNSUPPORTED.
 *
 * @throws {TypeError | RangeError} for invalid options, before anything is opened
 */
export function listen(server: net.Server, options: ListenOptions, callback?: () => void): net.Server {
  if (!readArgument('server', server, () => server instanceof net.Server))
    throw invalidArgType('server', 'an instance of net.Server (http, https and tls servers are)', server);
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options);
  if (callback !== undefined && typeof callback !== 'function') throw invalidArgType('callback', 'of type function', callback);
  const o = readArgument('options', options, () => {
    const copy: Record<string, unknown> = {};
    for (const key of Object.keys(options)) {
      if (!listenKeys.includes(key)) throw unknownOption('options', key, listenKeys);
      copy[key] = (options as Record<string, unknown>)[key];
    }
    return copy as ListenOptions;
  });
  const port = o.port === undefined ? 0 : portNumber(o.port);
  if (o.host !== undefined && (typeof o.host !== 'string' || o.host === '')) throw invalidArgType('options.host', 'a non-empty string', o.host);
  if (o.backlog !== undefined && (typeof o.backlog !== 'number' || !Number.isInteger(o.backlog) || o.backlog < 0 || o.backlog > 2 ** 31 - 1)) {
    throw outOfRange('options.backlog', 'an integer >= 0 and <= 2147483647', o.backlog);
  }
  if (o.ipv6Only !== undefined && typeof o.ipv6Only !== 'boolean') throw invalidArgType('options.ipv6Only', 'of type boolean', o.ipv6Only);
  // SO_REUSEADDR as Node sets it on every listener, unless the caller says otherwise.
  const encoded = withDefault(encodeFor(Stage.Listen, o.prebind ?? {}, 'options.prebind'), 'SO_REUSEADDR', 1);
  // Validated first, then refused by name where the stage cannot make its socket (Windows).
  assertStagesAvailable('listen()');
  if (process.env.NODE_UNIQUE_ID !== undefined) {
    throw socktuneError(
      codes.UNSUPPORTED,
      "listen() cannot hand a socket to a cluster worker's server (the primary would get the fd); use reusePort across processes instead of cluster",
    );
  }
  if (server.listening) throw socktuneError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
  if (callback !== undefined) server.once('listening', callback);
  const v6only = o.ipv6Only === true ? 1 : 0;
  if (o.host === undefined) {
    // Every address: IPv6 and IPv4 on one socket, or IPv4 alone where the host has no IPv6.
    const any6 = parseAddress('::')!;
    const fd = tryCreate(server, 6, encoded, any6.bytes, port, v6only, '::', true);
    if (fd !== undefined) return handOver(server, fd, o.backlog);
    const any4 = parseAddress('0.0.0.0')!;
    const fd4 = tryCreate(server, 4, encoded, any4.bytes, port, -1, '0.0.0.0', false);
    if (fd4 !== undefined) handOver(server, fd4, o.backlog);
    return server;
  }
  const literal = parseAddress(o.host);
  if (literal !== undefined) {
    const fd = tryCreate(server, literal.family, encoded, literal.bytes, port, literal.family === 6 ? v6only : -1, o.host, false, scopeOf(o.host));
    if (fd !== undefined) handOver(server, fd, o.backlog);
    return server;
  }
  // A host name, looked up first (as Node's listen() does).
  dns.lookup(o.host, (err, address, family) => {
    if (err) return void server.emit('error', err);
    const parsed = parseAddress(address)!;
    const fd = tryCreate(server, family === 6 ? 6 : 4, encoded, parsed.bytes, port, family === 6 ? v6only : -1, address, false);
    if (fd !== undefined) handOver(server, fd, o.backlog);
  });
  return server;
}

function portNumber(value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType('options.port', 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > 65535) throw outOfRange('options.port', 'an integer >= 0 and <= 65535', value);
  return value;
}

/** The scope id of `fe80::1%3` (a numeric zone); a named zone (`%eth0`) is refused: there is no if_nametoindex here. */
function scopeOf(host: string): number {
  const zone = host.indexOf('%');
  if (zone < 0) return 0;
  const id = host.slice(zone + 1);
  if (!/^\d+$/.test(id)) throw invalidArgType('options.host', 'an address whose zone is an interface number (fe80::1%2), not a name', host);
  return Number(id);
}

/**
 * Makes the listening socket; on failure emits the error on `server` on the next tick, as Node's
 * listen() does, and returns undefined. With `quietFamily`, a host without IPv6 returns undefined
 * without an error (the caller tries IPv4).
 */
function tryCreate(
  server: net.Server,
  ip: 4 | 6,
  encoded: EncodedOptions,
  bytes: Uint8Array,
  port: number,
  v6only: number,
  address: string,
  quietFamily: boolean,
  scope = 0,
): number | undefined {
  try {
    return createSocket(ip, encoded, { bytes, port, scope }, v6only);
  } catch (err) {
    const e = err as { code?: string; syscall?: string };
    if (quietFamily && e.syscall === 'socket' && e.code === 'EAFNOSUPPORT') return undefined;
    // A refused bind is reported as Node reports it from listen(); a refused option names it.
    process.nextTick(() => server.emit('error', e.syscall === 'bind' ? addressError((err as KernelError).errno, 'listen', address, port) : err));
    return undefined;
  }
}

function handOver(server: net.Server, fd: number, backlog: number | undefined): net.Server {
  listenOn(server, fd, backlog);
  return server;
}
