/**
 * `connect(options)`: `net.connect` with the pre-connect stage (options set on the socket before
 * bind and connect, see prebind.ts) and, optionally, a policy. Usable wherever Node takes a
 * `createConnection` (an `http.Agent`'s, `http.request`'s) and as the socket under `tls.connect`.
 * @module
 */
import net from 'node:net';
import { invalidArgType, readArgument, socktuneError, codes } from '../errors.js';
import { mergeEncoded, withDefault, type EncodedOptions, type SocketOptions } from '../options.js';
import { toPolicy, type Policy, type PolicyOverrides } from '../policy/presets.js';
import { tune } from '../integrations/tune.js';
import { policyPrebind, prebind, prebindOptions } from './prebind.js';

/** Options of {@link connect}: those of `net.connect` for a TCP connection, plus the stage's and a policy. */
export interface ConnectOptions extends net.TcpNetConnectOpts {
  /**
   * Options set on the socket before it binds and connects (the pre-connect stage): every option
   * of `configure`, and those that take effect only here: `bindAddressNoPort`
   * (IP_BIND_ADDRESS_NO_PORT; default `true` when `localAddress` is given without `localPort`),
   * `localPortRange` (IP_LOCAL_PORT_RANGE, Linux 6.3+), and the buffers' window scale
   * (`receiveBuffer`). TCP_DEFER_ACCEPT is a listener's option and is refused here.
   */
  prebind?: SocketOptions;
  /** A policy applied as `tune(socket, policy)` does; its stage fields (`bindAddressNoPort`, `localPortRange`) apply at the stage, `prebind` over them. */
  policy?: Policy | PolicyOverrides;
}

/**
 * Opens a TCP connection as `net.connect(options, connectListener)` does, with the socket made
 * by socktune (socket, the `prebind` options, then Node's own bind and connect), so options that
 * decide port allocation take effect: with `localAddress` pinned, the port is chosen per
 * destination at connect (IP_BIND_ADDRESS_NO_PORT), not reserved at bind. Everything after
 * connect (events, errors, `tls.connect({ socket })` on top, a policy) is as for a socket Node
 * made. Returns the `net.Socket` at once; options are validated first (nothing is opened on a
 * validation error), and a kernel refusal at the stage destroys the socket with that error
 * (`option`, `applied`), emitted as `'error'`.
 *
 * Works as an agent's `createConnection` (`agent.createConnection = connect`) and for
 * `http.request({ createConnection: connect })`; `createAgent` and `createDispatcher` use the
 * stage by themselves.
 *
 * @param options `net.connect`'s TCP options (`host`, `port`, `localAddress`, `family`, `lookup`,
 *   `timeout`, ...), with `prebind` and `policy`
 * @param connectListener added as a `'connect'` listener, as `net.connect` does
 * @throws {TypeError | RangeError} for invalid `prebind` or `policy` values, before anything is opened
 * @throws {Error} `ERR_SOCKTUNE_UNSUPPORTED` for an option this platform lacks, and on Windows for
 *   any `prebind` option (Node there takes no socket by descriptor; without them this is `net.connect`)
 */
export function connect(options: ConnectOptions, connectListener?: () => void): net.Socket {
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options);
  // Every own option read once, into a copy (the caller's getters and Proxy traps run here only).
  const copy = readArgument('options', options, () => ({ ...options }));
  const { prebind: given, policy: policyGiven, ...netOptions } = copy;
  // As net.connect decides: a truthy `path` is a Unix-domain socket (an agent passes `path: null`).
  if ((netOptions as { path?: unknown }).path) {
    throw socktuneError(codes.NOT_TCP, 'connect() opens TCP connections; got options.path (a Unix-domain socket): use net.connect', 'TypeError');
  }
  if (connectListener !== undefined && typeof connectListener !== 'function') throw invalidArgType('connectListener', 'of type function', connectListener);
  const policy = policyGiven === undefined ? undefined : toPolicy(policyGiven, 'options.policy');
  const pinned = Boolean(netOptions.localAddress) && !netOptions.localPort;
  let encoded: EncodedOptions;
  if (given === undefined && policy === undefined) {
    // The common call (an agent's): worked out once.
    encoded = pinned ? (pinnedDefault ??= withDefault(prebindOptions({}), 'IP_BIND_ADDRESS_NO_PORT', 1)) : (noOptions ??= prebindOptions({}));
  } else {
    encoded = prebindOptions(given ?? {}, 'options.prebind');
    if (policy !== undefined) encoded = encoded.ids.length === 0 ? policyPrebind(policy) : mergeEncoded(policyPrebind(policy), encoded);
    if (pinned) encoded = withDefault(encoded, 'IP_BIND_ADDRESS_NO_PORT', 1);
  }
  // Inherited properties are not options: Node reads these from the object it is given, inherited
  // ones too (a polluted `Object.prototype.handle` would become the socket's handle), so each one
  // that is there only by inheritance is given as undefined.
  for (const key of nodeOptions) if (key in netOptions && !Object.hasOwn(netOptions, key)) (netOptions as Record<string, unknown>)[key] = undefined;
  const socket = net.connect(netOptions, connectListener);
  prebind(socket, encoded);
  if (policy !== undefined) tune(socket, policy);
  return socket;
}

let noOptions: EncodedOptions | undefined;
let pinnedDefault: EncodedOptions | undefined;

/** What net.Socket's constructor and connect() read from their options (Node 20 to 26). */
const nodeOptions = [
  'fd',
  'handle',
  'allowHalfOpen',
  'readable',
  'writable',
  'signal',
  'onread',
  'noDelay',
  'keepAlive',
  'keepAliveInitialDelay',
  'highWaterMark',
  'pauseOnCreate',
  'manualStart',
  'blockList',
  'path',
  'host',
  'port',
  'localAddress',
  'localPort',
  'family',
  'hints',
  'lookup',
  'timeout',
  'autoSelectFamily',
  'autoSelectFamilyAttemptTimeout',
];

/** `net.createConnection`'s name for {@link connect}. */
export const createConnection = connect;
