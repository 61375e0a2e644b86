/**
 * Socket options: validation, units, deferral until connect, application in order, and reading
 * them back (`readOptions`). What the kernel knows beyond its options is views.ts's.
 * @module
 */
import type net from 'node:net';
import { release } from 'node:os';
import { constants, native, slots as sharedSlots } from './binding.js';
import { codes, invalidArgType, invalidArgValue, kernelError, outOfRange, socktuneError, unknownOption, unreadable, type KernelError } from './errors.js';
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
  /** SO_REUSEPORT. Matters only before bind: the listener stage (`listen()`), or `connect()`'s `prebind`. */
  reusePort?: boolean;
  /**
   * SO_RCVBUF in bytes (1 – 2 147 483 647): the receive buffer. The kernel holds twice the value
   * (its bookkeeping), caps it at `net.core.rmem_max`, and no longer autotunes this socket's
   * buffer. Set before connect (`connect()`'s `prebind`, or on a listener for what it accepts) it
   * also decides the window scale offered in the SYN. Default: the kernel's autotuning.
   */
  receiveBuffer?: number;
  /** SO_SNDBUF in bytes (1 – 2 147 483 647): the send buffer; doubled and capped (`net.core.wmem_max`) like `receiveBuffer`. */
  sendBuffer?: number;
  /** IP_TOS (IPV6_TCLASS on an IPv6 socket): the DSCP and ECN byte of every packet sent, 0 – 255. Default 0. */
  tos?: number;
  /**
   * TCP_DEFER_ACCEPT in milliseconds (0 – 2 147 483 647; 0 = off), a listener's option (Linux):
   * a connection is handed to `accept()` only once its first data has arrived, or after this
   * long. Rounded up to whole seconds; the kernel keeps it as a count of SYN-ACK retransmissions
   * and reads back the time they take (5 000 reads back as 7 000).
   */
  deferAccept?: number;
  /**
   * IP_BIND_ADDRESS_NO_PORT (Linux 4.2+), before bind only (`connect()`'s `prebind`): a client
   * that binds a source address (`localAddress`) gets its port at connect, per destination,
   * instead of reserving one at bind for every destination alike. Default under `connect()` and
   * policies: `true` whenever `localAddress` is given without `localPort`.
   */
  bindAddressNoPort?: boolean;
  /**
   * IP_LOCAL_PORT_RANGE (Linux 6.3+), before connect only (`connect()`'s `prebind`): the slice of
   * `net.ipv4.ip_local_port_range` this socket's port is chosen from, `{ min, max }` (ports, 1 –
   * 65 535, `min` < `max`), or `false` for the whole range (the default). Bounds outside the
   * system range have no effect, as the kernel defines it.
   */
  localPortRange?: false | PortRange;
}

/** A slice of the local port range, both bounds included (IP_LOCAL_PORT_RANGE). */
export interface PortRange {
  /** The lowest port, 1 – 65 535. */
  min: number;
  /** The highest port, 1 – 65 535, above `min`. */
  max: number;
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
  /** SO_RCVBUF in bytes, as the kernel holds it (twice what was set). */
  receiveBuffer: number | undefined;
  /** SO_SNDBUF in bytes, as the kernel holds it (twice what was set). */
  sendBuffer: number | undefined;
  /** IP_TOS (IPV6_TCLASS on an IPv6 socket). */
  tos: number | undefined;
  /** TCP_DEFER_ACCEPT in milliseconds (whole seconds, as the kernel rounds them; 0 = off). `undefined` off Linux. */
  deferAccept: number | undefined;
  /** IP_BIND_ADDRESS_NO_PORT. `undefined` off Linux. */
  bindAddressNoPort: boolean | undefined;
  /** IP_LOCAL_PORT_RANGE: `false` for the system's range. `undefined` off Linux and before Linux 6.3. */
  localPortRange: false | PortRange | undefined;
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
  receiveBuffer: Object.freeze({ min: 1, max: 2 ** 31 - 1 }),
  sendBuffer: Object.freeze({ min: 1, max: 2 ** 31 - 1 }),
  tos: Object.freeze({ min: 0, max: 255 }),
  deferAccept: Object.freeze({ min: 0, max: 2 ** 31 - 1 }),
  port: Object.freeze({ min: 1, max: 65535 }),
} as const);

/**
 * Where options are set: on a live socket or server (`configure`), or at a stage socktune runs
 * before Node has the socket (the pre-connect stage, the listener stage). Some options take
 * effect at one stage only.
 * @internal
 */
export const enum Stage {
  Live = 0,
  Connect = 1,
  Listen = 2,
}

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
  receiveBuffer: id.SO_RCVBUF,
  sendBuffer: id.SO_SNDBUF,
  tos: id.IP_TOS,
  bindAddressNoPort: id.IP_BIND_ADDRESS_NO_PORT,
  localPortRange: id.IP_LOCAL_PORT_RANGE,
  deferAccept: id.TCP_DEFER_ACCEPT,
};
const {
  keepAlive: ID_keepAlive,
  idle: ID_idle,
  interval: ID_interval,
  count: ID_count,
  userTimeout: ID_userTimeout,
  linger: ID_linger,
  noDelay: ID_noDelay,
  reuseAddress: ID_reuseAddress,
  reusePort: ID_reusePort,
} = ID;
const knownKeys = [
  'keepAlive',
  'userTimeout',
  'linger',
  'noDelay',
  'reuseAddress',
  'reusePort',
  'receiveBuffer',
  'sendBuffer',
  'tos',
  'deferAccept',
  'bindAddressNoPort',
  'localPortRange',
];
const portRangeKeys = ['min', 'max'];
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
function encode(options: SocketOptions, stage: Stage = Stage.Live, name = 'options'): number {
  if (typeof options !== 'object' || options === null) throw invalidArgType(name, 'a plain object', options);
  let keepAlive: unknown, userTimeout: unknown, linger: unknown, noDelay: unknown, reuseAddress: unknown, reusePort: unknown;
  let idle: unknown, interval: unknown, count: unknown;
  // The options added with the stages, rarer: read into one record, off configure's hot path.
  let more: Record<string, unknown> | undefined;
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
          case 'keepAlive':
            keepAlive = value;
            break;
          case 'userTimeout':
            userTimeout = value;
            break;
          case 'linger':
            linger = value;
            break;
          case 'noDelay':
            noDelay = value;
            break;
          case 'reuseAddress':
            reuseAddress = value;
            break;
          case 'reusePort':
            reusePort = value;
            break;
          case 'receiveBuffer':
          case 'sendBuffer':
          case 'tos':
          case 'deferAccept':
          case 'bindAddressNoPort':
          case 'localPortRange':
            (more ??= {})[key] = value;
            break;
          default:
            unknown = key;
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
    const holder = keepAliveIsObject ? `${name}.keepAlive` : name;
    throw unreadable(at === undefined ? holder : `${holder}.${at}`, keepAliveIsObject ? keepAlive : options, cause);
  }
  if (!plain) throw invalidArgType(name, 'a plain object', options);
  if (unknown !== undefined) {
    if (keepAliveIsObject) unknownKey(`${name}.keepAlive`, unknown, keepAliveKeys);
    unknownKey(name, unknown, knownKeys);
  }
  // Read before anything is validated or written, like the rest (the range's bounds may be getters).
  const range = more?.localPortRange === undefined ? undefined : readPortRange(`${name}.localPortRange`, more.localPortRange);

  // Every value is the caller's no more: validate, then encode in kernel order.
  let keepAliveOn = -1;
  if (keepAlive !== undefined) {
    if (typeof keepAlive === 'boolean') keepAliveOn = keepAlive ? 1 : 0;
    else if (keepAliveIsObject) keepAliveOn = 1;
    else throw invalidArgType(`${name}.keepAlive`, 'a boolean or a plain object { idle, interval, count }', keepAlive);
  }
  // Seconds-based kernel values are rounded up, never down: 1500 ms waits 2 s, not 1 s.
  const idleS = idle === undefined ? -1 : Math.ceil(integerIn(`${name}.keepAlive.idle`, idle, limits.idle) / SECOND);
  const intervalS = interval === undefined ? -1 : Math.ceil(integerIn(`${name}.keepAlive.interval`, interval, limits.interval) / SECOND);
  const countN = count === undefined ? -1 : integerIn(`${name}.keepAlive.count`, count, limits.count);
  const userTimeoutMs = userTimeout === undefined ? -1 : integerIn(`${name}.userTimeout`, userTimeout, limits.userTimeout);
  let lingerV = -2;
  if (linger !== undefined) {
    if (stage === Stage.Listen) throw wrongStage('SO_LINGER', 'is never set on a listener: every connection it accepts would inherit it');
    if (linger === false) lingerV = -1;
    else if (linger === 0) lingerV = 0;
    else if (typeof linger === 'number') {
      throw outOfRange(
        `${name}.linger`,
        'false or 0. A positive SO_LINGER makes close() block the event loop on Linux, even on a ' +
          'non-blocking socket. For a bounded graceful close, end() the socket and destroy() it from a timer',
        linger,
      );
    } else throw invalidArgType(`${name}.linger`, 'false or 0', linger);
  }
  const noDelayV = noDelay === undefined ? -1 : bool(`${name}.noDelay`, noDelay) ? 1 : 0;
  const reuseAddressV = reuseAddress === undefined ? -1 : bool(`${name}.reuseAddress`, reuseAddress) ? 1 : 0;
  const reusePortV = reusePort === undefined ? -1 : bool(`${name}.reusePort`, reusePort) ? 1 : 0;
  // -1: not given. IP_LOCAL_PORT_RANGE's value is a 32-bit pattern: given or not is `range`.
  let receiveBufferV = -1,
    sendBufferV = -1,
    tosV = -1,
    deferAcceptS = -1,
    noPortV = -1,
    rangeV = 0;
  if (more !== undefined) {
    if (more.receiveBuffer !== undefined) receiveBufferV = integerIn(`${name}.receiveBuffer`, more.receiveBuffer, limits.receiveBuffer);
    if (more.sendBuffer !== undefined) sendBufferV = integerIn(`${name}.sendBuffer`, more.sendBuffer, limits.sendBuffer);
    if (more.tos !== undefined) tosV = integerIn(`${name}.tos`, more.tos, limits.tos);
    if (more.deferAccept !== undefined) {
      deferAcceptS = Math.ceil(integerIn(`${name}.deferAccept`, more.deferAccept, limits.deferAccept) / SECOND);
      if (stage === Stage.Connect) throw wrongStage('TCP_DEFER_ACCEPT', "is a listener's option: give it to listen() or configure() a listening server");
    }
    if (more.bindAddressNoPort !== undefined) {
      noPortV = bool(`${name}.bindAddressNoPort`, more.bindAddressNoPort) ? 1 : 0;
      if (stage !== Stage.Connect) throw beforeBindOnly('IP_BIND_ADDRESS_NO_PORT', 'bind', stage);
    }
    if (range !== undefined) {
      rangeV = range === false ? 0 : encodePortRange(`${name}.localPortRange`, range);
      if (stage !== Stage.Connect) throw beforeBindOnly('IP_LOCAL_PORT_RANGE', 'connect', stage);
    }
  }

  let n = 0;
  let used = 0;
  if (idleS >= 0) {
    slots[IDS + n] = ID_idle;
    slots[VALUES + n++] = idleS;
    used |= 1 << ID_idle;
  }
  if (intervalS >= 0) {
    slots[IDS + n] = ID_interval;
    slots[VALUES + n++] = intervalS;
    used |= 1 << ID_interval;
  }
  if (countN >= 0) {
    slots[IDS + n] = ID_count;
    slots[VALUES + n++] = countN;
    used |= 1 << ID_count;
  }
  if (userTimeoutMs >= 0) {
    slots[IDS + n] = ID_userTimeout;
    slots[VALUES + n++] = userTimeoutMs;
    used |= 1 << ID_userTimeout;
  }
  if (keepAliveOn >= 0) {
    slots[IDS + n] = ID_keepAlive;
    slots[VALUES + n++] = keepAliveOn;
    used |= 1 << ID_keepAlive;
  }
  if (lingerV >= -1) {
    slots[IDS + n] = ID_linger;
    slots[VALUES + n++] = lingerV;
    used |= 1 << ID_linger;
  }
  if (noDelayV >= 0) {
    slots[IDS + n] = ID_noDelay;
    slots[VALUES + n++] = noDelayV;
    used |= 1 << ID_noDelay;
  }
  if (reuseAddressV >= 0) {
    slots[IDS + n] = ID_reuseAddress;
    slots[VALUES + n++] = reuseAddressV;
    used |= 1 << ID_reuseAddress;
  }
  if (reusePortV >= 0) {
    slots[IDS + n] = ID_reusePort;
    slots[VALUES + n++] = reusePortV;
    used |= 1 << ID_reusePort;
  }
  if (more !== undefined) {
    if (receiveBufferV >= 0) {
      slots[IDS + n] = ID.receiveBuffer;
      slots[VALUES + n++] = receiveBufferV;
      used |= 1 << ID.receiveBuffer;
    }
    if (sendBufferV >= 0) {
      slots[IDS + n] = ID.sendBuffer;
      slots[VALUES + n++] = sendBufferV;
      used |= 1 << ID.sendBuffer;
    }
    if (tosV >= 0) {
      slots[IDS + n] = ID.tos;
      slots[VALUES + n++] = tosV;
      used |= 1 << ID.tos;
    }
    if (deferAcceptS >= 0) {
      slots[IDS + n] = ID.deferAccept;
      slots[VALUES + n++] = deferAcceptS;
      used |= 1 << ID.deferAccept;
    }
    if (noPortV >= 0) {
      slots[IDS + n] = ID.bindAddressNoPort;
      slots[VALUES + n++] = noPortV;
      used |= 1 << ID.bindAddressNoPort;
    }
    if (range !== undefined) {
      slots[IDS + n] = ID.localPortRange;
      slots[VALUES + n++] = rangeV;
      used |= 1 << ID.localPortRange;
    }
  }
  if ((used & unsupportedMask) !== 0) unsupported(used & unsupportedMask);
  if (range !== undefined && range !== false && !kernelAtLeast(6, 3)) {
    throw socktuneError(codes.UNSUPPORTED, `IP_LOCAL_PORT_RANGE needs Linux 6.3 or later; this kernel is ${release()}`);
  }
  return n;
}

/** `options.localPortRange` as given: `false`, or the own `min` and `max` of a plain object, each read once. */
function readPortRange(name: string, value: unknown): false | { min: unknown; max: unknown } {
  if (value === false) return false;
  if (typeof value !== 'object' || value === null) throw invalidArgType(name, 'false or a plain object { min, max }', value);
  const out: { min: unknown; max: unknown } = { min: undefined, max: undefined };
  let at: string | undefined;
  let plain: boolean;
  try {
    plain = isPlainObject(value);
  } catch (cause) {
    throw unreadable(name, value, cause);
  }
  if (!plain) throw invalidArgType(name, 'false or a plain object { min, max }', value);
  try {
    for (const key in value) {
      at = key;
      if (!hasOwnProperty.call(value, key)) continue;
      if (key !== 'min' && key !== 'max') unknownKey(name, key, portRangeKeys);
      out[key] = (value as Record<string, unknown>)[key];
    }
  } catch (cause) {
    if ((cause as { code?: unknown })?.code === 'ERR_INVALID_ARG_VALUE' && at !== undefined && at !== 'min' && at !== 'max') throw cause;
    throw unreadable(at === undefined ? name : `${name}.${at}`, value, cause);
  }
  return out;
}

/** IP_LOCAL_PORT_RANGE's value: the upper bound in the high 16 bits, the lower in the low 16 (as a signed 32-bit slot). */
function encodePortRange(name: string, range: { min: unknown; max: unknown }): number {
  if (range.min === undefined || range.max === undefined) throw invalidArgValue(name, range, 'needs both min and max');
  const min = integerIn(`${name}.min`, range.min, limits.port);
  const max = integerIn(`${name}.max`, range.max, limits.port);
  if (min >= max) throw outOfRange(`${name}.max`, `an integer above min (${min}) and <= ${limits.port.max}`, max);
  return (max << 16) | min | 0;
}

/** The kernel's version, read once (IP_LOCAL_PORT_RANGE exists from Linux 6.3). */
let kernel: [number, number] | undefined;
function kernelAtLeast(major: number, minor: number): boolean {
  if (platform.name !== 'linux') return true; // the option is unsupported there, said by name above
  if (kernel === undefined) {
    const m = /^(\d+)\.(\d+)/.exec(release());
    kernel = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  }
  return kernel[0] > major || (kernel[0] === major && kernel[1] >= minor);
}

function wrongStage(option: string, why: string): Error {
  return socktuneError(codes.STAGE, `${option} ${why}`, 'TypeError');
}

function beforeBindOnly(option: string, before: 'bind' | 'connect', stage: Stage): Error {
  const where = stage === Stage.Listen ? 'a listener, which binds a port of its own' : 'a socket Node has bound and connected already';
  return wrongStage(option, `takes effect only before ${before}, never on ${where}: give it to socktune's connect() as \`prebind\` (the pre-connect stage)`);
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
    ...readStageOptions(r, slots[layout.readMissing]),
  };
}

/** The options added with the stages, from the values `native.read` left at `r` (`missing`: those this kernel lacks). */
function readStageOptions(
  r: number,
  missing: number,
): Pick<AppliedOptions, 'receiveBuffer' | 'sendBuffer' | 'tos' | 'deferAccept' | 'bindAddressNoPort' | 'localPortRange'> {
  const has = (name: string) => supported(name) && (missing & (1 << id[name])) === 0;
  const range = slots[r + ID.localPortRange] >>> 0;
  return {
    receiveBuffer: has('SO_RCVBUF') ? slots[r + ID.receiveBuffer] : undefined,
    sendBuffer: has('SO_SNDBUF') ? slots[r + ID.sendBuffer] : undefined,
    tos: has('IP_TOS') ? slots[r + ID.tos] : undefined,
    deferAccept: has('TCP_DEFER_ACCEPT') ? slots[r + ID.deferAccept] * SECOND : undefined,
    bindAddressNoPort: has('IP_BIND_ADDRESS_NO_PORT') ? slots[r + ID.bindAddressNoPort] === 1 : undefined,
    localPortRange: !has('IP_LOCAL_PORT_RANGE') ? undefined : range === 0 ? false : { min: range & 0xffff, max: range >>> 16 },
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

/** Whether this platform has the option named `name` (its kernel name). @internal */
export function isSupported(name: (typeof optionTable)[number]['name']): boolean {
  return supported(name);
}

/** The option table of this platform: names and whether each exists. */
export function supportedOptions(): Array<{ name: string; supported: boolean }> {
  return optionTable.map(({ name, supported }) => ({ name, supported }));
}

/** Options validated and encoded once for a stage, applied to every socket made with them. @internal */
export interface EncodedOptions {
  /** Option ids, in the order they reach the kernel. */
  readonly ids: Int32Array;
  /** Their values, in the core's units. */
  readonly values: Int32Array;
}

/**
 * Validates `options` for `stage` (the errors of {@link configure}, and ERR_SOCKTUNE_STAGE for an
 * option of another stage) and encodes them once. `name` is the argument's name in errors.
 * @internal
 */
export function encodeFor(stage: Stage, options: SocketOptions, name: string): EncodedOptions {
  const n = encode(options, stage, name);
  if (n > 0 && !stagesAvailable) assertStagesAvailable(`${name} (${Array.from(slots.subarray(IDS, IDS + n), (i) => optionTable[i].name).join(', ')})`);
  return Object.freeze({ ids: slots.slice(IDS, IDS + n), values: slots.slice(VALUES, VALUES + n) });
}

/** The value `encoded` gives the option named `option` (its kernel name), or undefined. @internal */
export function encodedValue(encoded: EncodedOptions, option: (typeof optionTable)[number]['name']): number | undefined {
  const at = encoded.ids.indexOf(id[option]);
  return at < 0 ? undefined : encoded.values[at];
}

/** `encoded` with `option` set to `value` when it does not give it already. @internal */
export function withDefault(encoded: EncodedOptions, option: (typeof optionTable)[number]['name'], value: number): EncodedOptions {
  if (encodedValue(encoded, option) !== undefined || !optionTable[id[option]].supported) return encoded;
  const ids = new Int32Array(encoded.ids.length + 1);
  const values = new Int32Array(encoded.values.length + 1);
  ids.set(encoded.ids);
  values.set(encoded.values);
  ids[encoded.ids.length] = id[option];
  values[encoded.values.length] = value;
  return Object.freeze({ ids, values });
}

/** Where a socket the listener stage makes is bound: an address as the kernel takes it, and a port. @internal */
export interface BindAddress {
  /** 16 bytes, network order (an IPv4 address in the first 4). */
  bytes: Uint8Array;
  port: number;
  /** The scope id of a link-local IPv6 address (0 for none). */
  scope: number;
}

const scratchBytes = new Uint8Array(slots.buffer, slots.byteOffset, slots.byteLength);

/**
 * Makes a TCP socket of IP version `ip` with the `encoded` options set in order (and IPV6_V6ONLY
 * first when `v6only` is 0 or 1), bound to `bind` when given, in one native call. Returns its fd,
 * which the binding holds until the caller hands it over to Node or gives it back
 * (`native.releaseSocket`, in handle.ts). A kernel refusal is thrown with `syscall` (`socket`,
 * `setsockopt` with the `option`, `bind`) and `applied`, as {@link configure} throws them; nothing
 * is left open then.
 * @internal
 */
export function createSocket(ip: 4 | 6, encoded: EncodedOptions, bind: BindAddress | undefined, v6only = -1): number {
  slots.set(encoded.ids, IDS);
  slots.set(encoded.values, VALUES);
  slots[COUNT] = encoded.ids.length;
  slots[layout.newFamily] = ip;
  slots[layout.bindV6Only] = v6only;
  slots[layout.bindPort] = bind === undefined ? -1 : bind.port;
  slots[layout.bindScope] = bind === undefined ? 0 : bind.scope;
  scratchBytes.set(bind === undefined ? emptyAddress : bind.bytes, layout.bindAddr * 4);
  native.createSocket();
  const rc = slots[layout.result];
  if (rc === 0) return slots[layout.newFd];
  assertStagesAvailable('a socket made before Node');
  const option = slots[layout.failedOption];
  const syscall = constants.syscalls[slots[layout.failedSyscall]] ?? 'unknown';
  const err = kernelError(rc, syscall, option >= 0 ? optionTable[option].name : undefined) as ConfigureError;
  const applied: string[] = [];
  if (syscall === 'setsockopt') for (let i = 0; i < slots[APPLIED]; i++) applied.push(optionTable[encoded.ids[i]].name);
  else if (syscall === 'bind') for (const i of encoded.ids) applied.push(optionTable[i].name);
  err.applied = applied;
  throw err;
}

const emptyAddress = new Uint8Array(16);

const stagesAvailable = platform.name !== 'win32';

/**
 * Throws ERR_SOCKTUNE_UNSUPPORTED, naming `what`, where the stages cannot make their sockets: on
 * Windows they would hand Node a socket by descriptor (opened into the connecting handle,
 * `listen({ fd })`), which Node there does not take (native/core_win.cc answers -ENOTSUP). Asked
 * when the options are validated, so nothing is opened and no option is accepted to be dropped.
 * @internal
 */
export function assertStagesAvailable(what: string): void {
  if (stagesAvailable) return;
  throw socktuneError(
    codes.UNSUPPORTED,
    `${what}: the stages before Node (connect()'s prebind, listen()) are not available on ${platform.name}, where Node takes no socket by descriptor; ` +
      'set live-socket options with configure() or a policy once the socket is connected',
  );
}

/** `encoded` without `option`. @internal */
export function without(encoded: EncodedOptions, option: (typeof optionTable)[number]['name']): EncodedOptions {
  const at = encoded.ids.indexOf(id[option]);
  if (at < 0) return encoded;
  const keep = (_: number, i: number) => i !== at;
  return Object.freeze({ ids: encoded.ids.filter(keep), values: encoded.values.filter(keep) });
}

/** Sets `encoded` on a handle that has its socket already, in order, as {@link configure} does. @internal */
export function applyEncodedTo(handle: object, encoded: EncodedOptions): void {
  slots.set(encoded.ids, IDS);
  slots.set(encoded.values, VALUES);
  applyEncoded(handle, encoded.ids.length);
}

/** `base` with the options of `over` added, `over` deciding where both give one. @internal */
export function mergeEncoded(base: EncodedOptions, over: EncodedOptions): EncodedOptions {
  const ids: number[] = [];
  const values: number[] = [];
  for (let i = 0; i < base.ids.length; i++) {
    if (over.ids.includes(base.ids[i])) continue;
    ids.push(base.ids[i]);
    values.push(base.values[i]);
  }
  return Object.freeze({ ids: Int32Array.from([...ids, ...over.ids]), values: Int32Array.from([...values, ...over.values]) });
}
