/**
 * Every error socktune throws is built here, in Node's own shapes: argument errors are
 * `TypeError`/`RangeError` with a `code`; kernel errors carry `code`, a negative `errno`,
 * `syscall` and the `option` they concern.
 * @module
 */
import { getSystemErrorMap } from 'node:util';
import { inspect, types } from 'node:util';

/** Error codes of socktune's own (Node's codes are used where one fits). */
export const codes = Object.freeze({
  /** The socket is destroyed or its handle closed. */
  SOCKET_CLOSED: 'ERR_SOCKET_CLOSED',
  /** The socket has not connected yet (and the call cannot wait for it). */
  NOT_CONNECTED: 'ERR_SOCKTUNE_NOT_CONNECTED',
  /** A Unix-domain, UDP or otherwise non-TCP socket. */
  NOT_TCP: 'ERR_SOCKTUNE_NOT_TCP',
  /** `_handle` is not a handle Node created (spoofed or foreign object). */
  INVALID_HANDLE: 'ERR_SOCKTUNE_INVALID_HANDLE',
  /** The option or view does not exist on this platform. */
  UNSUPPORTED: 'ERR_SOCKTUNE_UNSUPPORTED',
  /** An optional peer dependency (prom-client, @opentelemetry/api) is not installed. */
  MISSING_PEER: 'ERR_SOCKTUNE_MISSING_PEER',
  /** `createInstruments()` was given no MeterProvider and no global one is set. */
  NO_METER_PROVIDER: 'ERR_SOCKTUNE_NO_METER_PROVIDER',
  /**
   * A reset-on-close gave up: the peer stopped acknowledging (or the drain deadline passed) and
   * the connection was reset with bytes unacknowledged (`error.bytesAtRisk`).
   */
  DRAIN_TIMEOUT: 'ERR_SOCKTUNE_DRAIN_TIMEOUT',
  /** No native addon fits this platform or loads here (no prebuild and no source build). */
  NO_ADDON: 'ERR_SOCKTUNE_NO_ADDON',
  /**
   * The option takes effect only at another stage of a socket's life: IP_BIND_ADDRESS_NO_PORT and
   * IP_LOCAL_PORT_RANGE before bind and connect (`connect()`'s `prebind`), TCP_DEFER_ACCEPT on a
   * listener, and never SO_LINGER on a listener (every accepted connection would inherit it).
   */
  STAGE: 'ERR_SOCKTUNE_STAGE',
} as const);

/** An error from the kernel, shaped like Node's system errors. */
export interface KernelError extends Error {
  /** The errno's name, as Node names it (`'EPERM'`, `'EINVAL'`). */
  code: string;
  /** The errno, negative as in Node (`-1` for EPERM). */
  errno: number;
  /** The system call that failed (`'setsockopt'`, `'getsockopt'`, `'ioctl'`). */
  syscall: string;
  /** The kernel name of the socket option (`'TCP_KEEPCNT'`), when the call was about one. */
  option?: string;
}

/** Never runs code of the value's own (getters, Proxy traps, custom inspectors): it may be hostile. */
const safeInspect = { depth: 0, customInspect: false, showProxy: false, getters: false } as const;

/** The name of the class an object was made by, read without running any of its code. */
function className(value: object): string | undefined {
  if (types.isProxy(value)) return undefined;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === null || typeof proto !== 'object' || types.isProxy(proto)) return undefined;
  const ctor: unknown = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value;
  if (typeof ctor !== 'function' || types.isProxy(ctor)) return undefined;
  const name: unknown = Object.getOwnPropertyDescriptor(ctor, 'name')?.value;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') {
    const name: unknown = types.isProxy(value) ? undefined : Object.getOwnPropertyDescriptor(value, 'name')?.value;
    return `function ${typeof name === 'string' ? name : ''}`;
  }
  if (typeof value === 'object') {
    if (types.isProxy(value)) return 'a Proxy';
    const name = className(value);
    return name ? `an instance of ${name}` : inspect(value, safeInspect);
  }
  return `type ${typeof value} (${inspect(value, safeInspect)})`;
}

/** The errors socktune made (to tell them from what the caller's code threw while being read). */
const made = new WeakSet<object>();

function withCode<E extends Error>(err: E, code: string): E & { code: string } {
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  made.add(err);
  return err as E & { code: string };
}

/** `TypeError` ERR_INVALID_ARG_VALUE for an argument whose reading threw (a getter, a Proxy trap); what it threw is `cause`. */
export function unreadable(name: string, holder: unknown, cause: unknown): TypeError {
  const err = invalidArgValue(name, holder, 'could not be read (reading it threw; the error is its `cause`)');
  Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
  return err;
}

/**
 * Runs `read`, which touches the caller's argument `name` (getters, Proxy traps and so the
 * caller's code may run): socktune's own errors pass through; anything else the caller's code
 * threw becomes {@link unreadable} with it as `cause`.
 */
export function readArgument<T>(name: string, holder: unknown, read: () => T): T {
  try {
    return read();
  } catch (cause) {
    if (typeof cause === 'object' && cause !== null && made.has(cause)) throw cause;
    throw unreadable(name, holder, cause);
  }
}

/** `TypeError` ERR_INVALID_ARG_TYPE, worded like Node's. */
export function invalidArgType(name: string, expected: string, actual: unknown): TypeError {
  return withCode(new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`), 'ERR_INVALID_ARG_TYPE');
}

/** `TypeError` ERR_INVALID_ARG_VALUE, worded like Node's, with an optional reason. */
export function invalidArgValue(name: string, value: unknown, reason: string): TypeError {
  return withCode(new TypeError(`The argument '${name}' ${reason}. Received ${inspect(value, safeInspect)}`), 'ERR_INVALID_ARG_VALUE');
}

/** `RangeError` ERR_OUT_OF_RANGE, worded like Node's. */
export function outOfRange(name: string, range: string, actual: unknown): RangeError {
  return withCode(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${inspect(actual, safeInspect)}`), 'ERR_OUT_OF_RANGE');
}

/** An `Error` (or `TypeError`) with one of socktune's `codes`. */
export function socktuneError(code: string, message: string, type: 'Error' | 'TypeError' = 'Error'): Error & { code: string } {
  return withCode(type === 'TypeError' ? new TypeError(message) : new Error(message), code);
}

const systemErrors = getSystemErrorMap();

/** The one place a negative errno becomes an Error. */
export function kernelError(errno: number, syscall: string, option?: string): KernelError {
  const [code, text] = systemErrors.get(errno) ?? [`Unknown system error ${errno}`, 'unknown error'];
  const what = option ? `${syscall} ${option}` : syscall;
  const err = new Error(`${what} ${code}: ${text}`) as KernelError;
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  if (option) err.option = option;
  return err;
}

/**
 * A kernel error about an address, shaped as Node's own for the same call: `bind` of a connecting
 * socket as net.js's ExceptionWithHostPort (`bind EADDRNOTAVAIL 10.0.0.9`), `listen` as its
 * UVExceptionWithHostPort (`listen EADDRINUSE: address already in use 0.0.0.0:8080`), with `code`,
 * `errno`, `syscall`, `address` and `port` (when not 0).
 */
export function addressError(errno: number, syscall: 'bind' | 'listen', address: string, port: number): KernelError & { address: string; port?: number } {
  const [code, text] = systemErrors.get(errno) ?? [`Unknown system error ${errno}`, 'unknown error'];
  const where = `${address}${port > 0 || syscall === 'listen' ? `:${port}` : ''}`;
  const err = new Error(syscall === 'listen' ? `${syscall} ${code}: ${text} ${where}` : `${syscall} ${code} ${where}`) as KernelError & {
    address: string;
    port?: number;
  };
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  err.address = address;
  if (port > 0 || syscall === 'listen') err.port = port;
  return err;
}

/** Edit distance with transpositions (optimal string alignment), for "did you mean" hints. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** Letters and digits only, lower case: `graceful-heartbeat`, `gracefulHeartbeat` and `GRACEFUL_HEARTBEAT` are one word. */
const squash = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]/g, '');

/**
 * The one "did you mean" of socktune (options, agent options, configuration, CLI flags and
 * commands): the known name a mistyped `word` most likely meant, or undefined. Case, dashes and
 * underscores do not count (`graceful-heartbeat` is `gracefulHeartbeat`); then a word that starts
 * exactly one known name (`graceful`); then the fewest edits (a swap of two letters is one), at
 * most a third of the word's length (2 for short words). `aliases` maps other spellings to a known
 * name (a preset's policy name to the preset).
 */
export function didYouMean(word: string, known: readonly string[], aliases: Readonly<Record<string, string>> = {}): string | undefined {
  const w = squash(word);
  if (w === '') return undefined;
  const spellings: Array<[string, string]> = [
    ...known.map((k) => [squash(k), k] as [string, string]),
    ...Object.entries(aliases).map(([alias, k]) => [squash(alias), k] as [string, string]),
  ];
  const exact = spellings.find(([s]) => s === w);
  if (exact) return exact[1];
  const starts = [...new Set(spellings.filter(([s]) => w.length >= 3 && s.startsWith(w)).map(([, k]) => k))];
  if (starts.length === 1) return starts[0];
  let best: [string, number] | undefined;
  for (const [s, k] of spellings) {
    const d = distance(w, s);
    if (best === undefined || d < best[1]) best = [k, d];
  }
  return best && best[1] <= Math.max(2, Math.floor(w.length / 3)) ? best[0] : undefined;
}

/** `ERR_INVALID_ARG_VALUE` for an unknown option `key` of `where`, with a "did you mean" hint or the known names. */
export function unknownOption(where: string, key: string, known: readonly string[]): TypeError {
  const hint = didYouMean(key, known);
  return invalidArgValue(where, key, hint ? `has no option '${key}' (did you mean '${hint}'?)` : `has no option '${key}'; known: ${known.join(', ')}`);
}
