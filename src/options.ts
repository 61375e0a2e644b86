/**
 * Socket options: validation, units, deferral until connect, application in order, and reading
 * them back (`readOptions`). What the kernel knows beyond its options is views.ts's.
 * @module
 */
import type net from 'node:net';
import { constants, native, slots as sharedSlots } from './binding.js';
import { codes, invalidArgType, outOfRange, socktuneError, unknownOption, unreadable, type KernelError } from './errors.js';
import { call, connectedHandle, tcpHandle, type TcpSocketLike } from './handle.js';

/** Keepalive timing, a plain object like {@link SocketOptions}. Fields left out keep the value the socket has. */
export interface KeepAliveOptions {
  /** Idle time before the first probe, in milliseconds (1 – 32 767 000). Rounded up to whole seconds (TCP_KEEPIDLE). */
  idle?: number;
  /** Time between probes, in milliseconds (1 – 32 767 000). Rounded up to whole seconds (TCP_KEEPINTVL). */
  interval?: number;
  /** Unanswered probes before the connection is dropped with ETIMEDOUT (1 – 127, TCP_KEEPCNT). */
  count?: number;
}

/**
 * Options accepted by {@link configure}. Options left out (or `undefined`) are not touched. Given as
 * a plain object whose own enumerable properties are the options, each read once; inherited
 * properties are not options.
 */
export interface SocketOptions {
  /**
   * `false` turns SO_KEEPALIVE off; an object (or `true`) turns it on and sets the given timings.
   * Keepalive never fires while data is unacknowledged: pair it with `userTimeout`.
   */
  keepAlive?: boolean | KeepAliveOptions;
  /**
   * TCP_USER_TIMEOUT in milliseconds (0 – 2 147 483 647): how long written data may stay
   * unacknowledged (or keepalive probes unanswered) before the connection is dropped. 0 = kernel default.
   */
  userTimeout?: number;
  /**
   * SO_LINGER. `false` = off (normal FIN close); `0` = close() sends RST and discards unsent data.
   * A positive linger is refused: it makes close() block the event loop on Linux.
   * For a bounded graceful close, end() and destroy() from a timer instead.
   */
  linger?: false | 0;
  /** TCP_NODELAY: `true` sends small writes at once (Nagle off). */
  noDelay?: boolean;
  /** SO_REUSEADDR. Node already sets it on every listening socket; it matters before bind. */
  reuseAddress?: boolean;
  /** SO_REUSEPORT. Matters only before bind (a socket handed to `server.listen({ fd })`). */
  reusePort?: boolean;
}

/** What the kernel holds, as read by {@link readOptions}. `undefined` where the platform has no such option. */
export interface AppliedOptions {
  /**
   * `false` when SO_KEEPALIVE is off; otherwise the timings in force (milliseconds, probes), or
   * `true` where the system cannot tell them (Windows without the keepalive timing options).
   */
  keepAlive: boolean | Required<KeepAliveOptions>;
  /** Keepalive timings in force even while SO_KEEPALIVE is off. */
  keepAliveTimings: Required<KeepAliveOptions> | undefined;
  /** TCP_USER_TIMEOUT in milliseconds (0 = kernel default). */
  userTimeout: number | undefined;
  /** `false` when SO_LINGER is off, else its timeout in milliseconds (0 = RST on close). */
  linger: false | number;
  /** TCP_NODELAY. */
  noDelay: boolean;
  /** SO_REUSEADDR. */
  reuseAddress: boolean;
  /** SO_REUSEPORT. */
  reusePort: boolean | undefined;
}

/** Whether {@link configure} applied the options now or will on `'connect'`. */
export type ConfigureResult = 'applied' | 'deferred';

const SECOND = 1000;

/** The kernel's limits, in the units users give (one validation table for every option). */
export const limits = Object.freeze({
  idle: Object.freeze({ min: 1, max: 32767 * SECOND }),
  interval: Object.freeze({ min: 1, max: 32767 * SECOND }),
  count: Object.freeze({ min: 1, max: 127 }),
  userTimeout: Object.freeze({ min: 0, max: 2 ** 31 - 1 }),
} as const);

const { layout, options: optionTable, platform } = constants;
// The slots and their offsets as constants of this module, which TurboFan folds into configure's
// code (an imported binding is loaded and checked on every access).
const slots = sharedSlots;
const IDS = layout.ids;
const VALUES = layout.values;
const COUNT = layout.count;
const APPLIED = layout.applied;
const KEEP_SHORTER = layout.keepShorter;
const id = Object.fromEntries(optionTable.map((o) => [o.name, o.id])) as Record<string, number>;
const ID = {
  keepAlive: id.SO_KEEPALIVE,
  idle: id.TCP_KEEPIDLE,
  interval: id.TCP_KEEPINTVL,
  count: id.TCP_KEEPCNT,
  userTimeout: id.TCP_USER_TIMEOUT,
  linger: id.SO_LINGER,
  noDelay: id.TCP_NODELAY,
  reuseAddress: id.SO_REUSEADDR,
  reusePort: id.SO_REUSEPORT,
};
const { keepAlive: ID_keepAlive, idle: ID_idle, interval: ID_interval, count: ID_count, userTimeout: ID_userTimeout, linger: ID_linger, noDelay: ID_noDelay, reuseAddress: ID_reuseAddress, reusePort: ID_reusePort } = ID;
const knownKeys = ['keepAlive', 'userTimeout', 'linger', 'noDelay', 'reuseAddress', 'reusePort'];
const keepAliveKeys = ['idle', 'interval', 'count'];

function integerIn(name: string, value: unknown, range: { min: number; max: number }): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw outOfRange(name, `an integer >= ${range.min} and <= ${range.max}`, value);
  }
  return value;
}

function bool(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value);
  return value;
}

function unknownKey(where: string, key: string, known: string[]): never {
  throw unknownOption(where, key, known);
}

const hasOwnProperty = Object.prototype.hasOwnProperty;
const toStringTag = Object.prototype.toString;

/**
 * Whether `o` holds options the way an object literal does. A Map, a Date or a boxed number has no
 * own enumerable options, so taking it would ignore what the caller meant; the tag check keeps
 * objects of another realm (a vm context, a test runner's sandbox) and null-prototype ones working.
 */
function isPlainObject(o: object): boolean {
  // `constructor` first: a property load TurboFan folds for object literals, where
  // Object.getPrototypeOf would call into the runtime on every call.
  return (o as { constructor?: unknown }).constructor === Object || toStringTag.call(o) === '[object Object]';
}

// Options this platform lacks, as a bit mask over option ids: asking for one is
// ERR_SOCKTUNE_UNSUPPORTED, never a silent no-op.
const unsupportedMask = optionTable.reduce((m, o) => (o.supported ? m : m | (1 << o.id)), 0);

function unsupported(mask: number): never {
  const o = optionTable.find((row) => (mask & (1 << row.id)) !== 0)!;
  throw socktuneError(codes.UNSUPPORTED, `${o.name} is not available on ${platform.name}`);
}

/**
 * Reads `options`, validates every value, and only then writes them into the native argument
 * slots in the order they must reach the kernel (keepalive timings before SO_KEEPALIVE). Returns
 * how many were written. Throws before any syscall on the first invalid value.
 *
 * Options are the own enumerable properties (inherited ones are not options: a polluted
 * `Object.prototype.linger` is ignored), each read exactly once. Reading may run the caller's code
 * (getters, Proxy traps), which may itself call socktune: nothing is written to the shared slots
 * until every value has been read, so such a call cannot leak into this one. Whatever that code
 * throws becomes ERR_INVALID_ARG_VALUE with it as `cause`.
 */
function encode(options: SocketOptions): number {
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'a plain object', options);
  let keepAlive: unknown, userTimeout: unknown, linger: unknown, noDelay: unknown, reuseAddress: unknown, reusePort: unknown;
  let idle: unknown, interval: unknown, count: unknown;
  // Where reading stands, for the error if the caller's code throws: the key being read, and
  // whether it is one of options.keepAlive's (set once keepAlive is known to be an object).
  let at: string | undefined;
  let keepAliveIsObject = false;
  let unknown: string | undefined;
  let plain = true;
  try {
    if (!isPlainObject(options)) plain = false;
    else {
      for (const key in options) {
        at = key;
        if (!hasOwnProperty.call(options, key)) continue;
        const value: unknown = (options as Record<string, unknown>)[key];
        switch (key) {
          case 'keepAlive': keepAlive = value; break;
          case 'userTimeout': userTimeout = value; break;
          case 'linger': linger = value; break;
          case 'noDelay': noDelay = value; break;
          case 'reuseAddress': reuseAddress = value; break;
          case 'reusePort': reusePort = value; break;
          default: unknown = key;
        }
        if (unknown !== undefined) break;
      }
      at = undefined;
      if (unknown === undefined && typeof keepAlive === 'object' && keepAlive !== null && isPlainObject(keepAlive)) {
        keepAliveIsObject = true;
        for (const key in keepAlive) {
          at = key;
          if (!hasOwnProperty.call(keepAlive, key)) continue;
          const value: unknown = (keepAlive as Record<string, unknown>)[key];
          if (key === 'idle') idle = value;
          else if (key === 'interval') interval = value;
          else if (key === 'count') count = value;
          else {
            unknown = key;
            break;
          }
        }
      }
    }
  } catch (cause) {
    const holder = keepAliveIsObject ? 'options.keepAlive' : 'options';
    throw unreadable(at === undefined ? holder : `${holder}.${at}`, keepAliveIsObject ? keepAlive : options, cause);
  }
  if (!plain) throw invalidArgType('options', 'a plain object', options);
  if (unknown !== undefined) {
    if (keepAliveIsObject) unknownKey('options.keepAlive', unknown, keepAliveKeys);
    unknownKey('options', unknown, knownKeys);
  }

  // Every value is the caller's no more: validate, then encode in kernel order.
  let keepAliveOn = -1;
  if (keepAlive !== undefined) {
    if (typeof keepAlive === 'boolean') keepAliveOn = keepAlive ? 1 : 0;
    else if (keepAliveIsObject) keepAliveOn = 1;
    else throw invalidArgType('options.keepAlive', 'a boolean or a plain object { idle, interval, count }', keepAlive);
  }
  // Seconds-based kernel values are rounded up, never down: 1500 ms waits 2 s, not 1 s.
  const idleS = idle === undefined ? -1 : Math.ceil(integerIn('options.keepAlive.idle', idle, limits.idle) / SECOND);
  const intervalS = interval === undefined ? -1 : Math.ceil(integerIn('options.keepAlive.interval', interval, limits.interval) / SECOND);
  const countN = count === undefined ? -1 : integerIn('options.keepAlive.count', count, limits.count);
  const userTimeoutMs = userTimeout === undefined ? -1 : integerIn('options.userTimeout', userTimeout, limits.userTimeout);
  let lingerV = -2;
  if (linger !== undefined) {
    if (linger === false) lingerV = -1;
    else if (linger === 0) lingerV = 0;
    else if (typeof linger === 'number') {
      throw outOfRange(
        'options.linger',
        'false or 0. A positive SO_LINGER makes close() block the event loop on Linux, even on a ' +
          'non-blocking socket. For a bounded graceful close, end() the socket and destroy() it from a timer',
        linger,
      );
    } else throw invalidArgType('options.linger', 'false or 0', linger);
  }
  const noDelayV = noDelay === undefined ? -1 : bool('options.noDelay', noDelay) ? 1 : 0;
  const reuseAddressV = reuseAddress === undefined ? -1 : bool('options.reuseAddress', reuseAddress) ? 1 : 0;
  const reusePortV = reusePort === undefined ? -1 : bool('options.reusePort', reusePort) ? 1 : 0;

  let n = 0;
  let used = 0;
  if (idleS >= 0) { slots[IDS + n] = ID_idle; slots[VALUES + n++] = idleS; used |= 1 << ID_idle; }
  if (intervalS >= 0) { slots[IDS + n] = ID_interval; slots[VALUES + n++] = intervalS; used |= 1 << ID_interval; }
  if (countN >= 0) { slots[IDS + n] = ID_count; slots[VALUES + n++] = countN; used |= 1 << ID_count; }
  if (userTimeoutMs >= 0) { slots[IDS + n] = ID_userTimeout; slots[VALUES + n++] = userTimeoutMs; used |= 1 << ID_userTimeout; }
  if (keepAliveOn >= 0) { slots[IDS + n] = ID_keepAlive; slots[VALUES + n++] = keepAliveOn; used |= 1 << ID_keepAlive; }
  if (lingerV >= -1) { slots[IDS + n] = ID_linger; slots[VALUES + n++] = lingerV; used |= 1 << ID_linger; }
  if (noDelayV >= 0) { slots[IDS + n] = ID_noDelay; slots[VALUES + n++] = noDelayV; used |= 1 << ID_noDelay; }
  if (reuseAddressV >= 0) { slots[IDS + n] = ID_reuseAddress; slots[VALUES + n++] = reuseAddressV; used |= 1 << ID_reuseAddress; }
  if (reusePortV >= 0) { slots[IDS + n] = ID_reusePort; slots[VALUES + n++] = reusePortV; used |= 1 << ID_reusePort; }
  if ((used & unsupportedMask) !== 0) unsupported(used & unsupportedMask);
  return n;
}

/**
 * SO_LINGER {on, 0} on `handle` (the next close sends RST), through the same path as configure.
 * @internal the reset path's (policy/linger.ts)
 */
export function applyLingerZero(handle: object): void {
  slots[IDS] = ID_linger;
  slots[VALUES] = 0;
  applyEncoded(handle, 1);
}

/** A kernel refusal from {@link configure}: the kernel's error plus the options set before it. */
export interface ConfigureError extends KernelError {
  /**
   * Kernel names of the options set before the refusal, in the order they were set (for example
   * `['TCP_KEEPIDLE', 'TCP_KEEPINTVL']` when TCP_KEEPCNT was refused). They stay set: nothing is
   * rolled back. `[]` when the first one was refused.
   */
  applied: string[];
}

/**
 * Whether `err` is a kernel refusal from {@link configure} (or a policy that applied options): an
 * `Error` with the kernel's `code`, `errno` and `syscall` and the `applied` list. For `catch (err)`
 * blocks, where `err` is `unknown`. Never throws.
 */
export function isConfigureError(err: unknown): err is ConfigureError {
  try {
    if (!(err instanceof Error)) return false;
    const e = err as Partial<ConfigureError>;
    return typeof e.code === 'string' && typeof e.errno === 'number' && typeof e.syscall === 'string' && Array.isArray(e.applied);
  } catch {
    return false; // a hostile value (a revoked Proxy, a throwing getter) is not one
  }
}

/** What a policy leaves in place when the socket already has it shorter (see {@link configurePolicy}). */
export const enum KeepShorter {
  /** Nothing: the options are set as given. */
  None = 0,
  /** A shorter keepalive budget (the user timeout then follows it). */
  KeepAlive = 1,
  /** That, and a shorter non-zero user timeout set by someone else. */
  Both = 3,
}

/**
 * Applies the `n` options `encode` wrote; a kernel refusal is thrown with `applied` on it. With
 * `keepShorter` (a policy's options) what the socket already has shorter is left in place.
 */
function applyEncoded(handle: object, n: number, keepShorter: KeepShorter = KeepShorter.None): void {
  slots[COUNT] = n;
  slots[KEEP_SHORTER] = keepShorter;
  try {
    call(native.apply, handle);
  } catch (err) {
    if (typeof (err as KernelError).errno === 'number') {
      // A getsockopt failed in the TCP check, before any option: nothing was applied.
      const done = (err as KernelError).syscall === 'setsockopt' ? slots[APPLIED] : 0;
      const applied: string[] = [];
      for (let i = 0; i < done; i++) applied.push(optionTable[slots[IDS + i]].name);
      (err as ConfigureError).applied = applied;
    }
    throw err;
  }
}

/**
 * Sets TCP options on a live socket, in order. If the kernel refuses one, the kernel's error is
 * thrown (`code`, `errno`, `syscall`, `option`) with `applied`, the options set before it, which
 * stay set: nothing is read beforehand or rolled back (see {@link ConfigureError}).
 *
 * Every value is validated before any syscall. Options are the own enumerable properties of
 * `options` and of `options.keepAlive`, each read once; inherited properties are ignored. On a
 * socket that is still connecting, the options are applied on `'connect'`; if the kernel refuses
 * them then, the socket is destroyed with that error. Works on `net.Socket`, `tls.TLSSocket` and
 * listening `net.Server`s (accepted sockets inherit keepalive settings on Linux).
 *
 * @param socket a TCP socket or server
 * @param options the options to set; the ones left out are not touched
 * @returns `'applied'`, or `'deferred'` for a connecting socket
 * @throws {TypeError | RangeError} with `code` for invalid arguments, before any syscall
 * @throws {ConfigureError} when the kernel refuses an option
 */
export function configure(socket: TcpSocketLike, options: SocketOptions): ConfigureResult {
  return configureWith(socket, options, KeepShorter.None);
}

/**
 * {@link configure} for a policy: a keepalive budget (idle + interval × count) the socket already
 * has that is shorter than the one `options` would leave, set by Node (`setKeepAlive`, its agents),
 * a library or the application, is kept, and the user timeout follows it (Linux's keepalive waits
 * out a user timeout before dropping an idle connection); with `KeepShorter.Both` a shorter
 * non-zero user timeout is kept too. A policy never makes a dead peer slower to notice.
 * `KeepShorter.None` applies the options as given (socktune's own pools, whose keepalive is the
 * policy's to decide).
 * @internal
 */
export function configurePolicy(socket: TcpSocketLike, options: SocketOptions, keepShorter: KeepShorter): ConfigureResult {
  return configureWith(socket, options, keepShorter);
}

function configureWith(socket: TcpSocketLike, options: SocketOptions, keepShorter: KeepShorter): ConfigureResult {
  const handle = tcpHandle(socket);
  const n = encode(options);
  if (handle !== undefined) {
    if (n > 0) applyEncoded(handle, n, keepShorter);
    return 'applied';
  }
  // Nothing to set (a policy without kernel options, such as rstOnClose): nothing to defer either.
  if (n === 0) return 'deferred';
  // Copied before anything else runs: the slots are shared by every call on this thread.
  const ids = slots.slice(IDS, IDS + n);
  const values = slots.slice(VALUES, VALUES + n);
  const onConnect = (): void => {
    try {
      const live = connectedHandle(socket);
      slots.set(ids, IDS);
      slots.set(values, VALUES);
      applyEncoded(live, n, keepShorter);
    } catch (err) {
      try {
        (socket as net.Socket).destroy(err as Error);
      } catch {
        // A spoofed object that emitted 'connect' but cannot be destroyed: nothing to close.
      }
    }
  };
  try {
    (socket as net.Socket).once('connect', onConnect);
  } catch (cause) {
    throw unreadable('socket', socket, cause);
  }
  return 'deferred';
}

function supported(name: string): boolean {
  return optionTable[id[name]].supported;
}

/**
 * Reads every option back from the kernel, in {@link configure}'s units (what the kernel holds,
 * which may differ from what was asked: 1500 ms of keepalive idle reads back as 2000).
 */
export function readOptions(socket: TcpSocketLike): AppliedOptions {
  const handle = connectedHandle(socket);
  // A platform without any option: say so rather than blame the socket.
  if (!optionTable.some((o) => o.supported)) throw socktuneError(codes.UNSUPPORTED, `socket options are not available on ${platform.name}`);
  call(native.read, handle);
  const r = layout.read;
  const timings = supported('TCP_KEEPIDLE')
    ? { idle: slots[r + ID.idle] * SECOND, interval: slots[r + ID.interval] * SECOND, count: slots[r + ID.count] }
    : undefined;
  const linger = slots[r + ID.linger];
  return {
    keepAlive: slots[r + ID.keepAlive] === 1 ? (timings ?? true) : false,
    keepAliveTimings: timings,
    userTimeout: supported('TCP_USER_TIMEOUT') ? slots[r + ID.userTimeout] : undefined,
    linger: linger < 0 ? false : linger * SECOND,
    noDelay: slots[r + ID.noDelay] === 1,
    reuseAddress: slots[r + ID.reuseAddress] === 1,
    reusePort: supported('SO_REUSEPORT') ? slots[r + ID.reusePort] === 1 : undefined,
  };
}

/**
 * Validates `options` as {@link configure} would, without touching any socket: throws the same
 * errors. Policies use it so a bad preset fails where it is built, not on the first connection.
 */
export function checkOptions(options: SocketOptions): void {
  encode(options);
}

/** Validates a duration or count against `range`: an integer, or the same errors `configure` throws. */
export function checkInteger(name: string, value: unknown, range: { min: number; max: number }): number {
  return integerIn(name, value, range);
}

/** The option table of this platform: names and whether each exists. */
export function supportedOptions(): Array<{ name: string; supported: boolean }> {
  return optionTable.map(({ name, supported }) => ({ name, supported }));
}
