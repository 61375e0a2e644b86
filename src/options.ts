/**
 * Socket options: validation, units, deferral until connect, all-or-nothing application, and the
 * read-back views (`readOptions`, `tcpInfo`, `sendQueue`, `receiveQueue`, `socketCookie`).
 * @module
 */
import type net from 'node:net';
import { constants, cookieSlot, infoSlots, native, slots } from './binding.js';
import { codes, invalidArgType, invalidArgValue, outOfRange, socktuneError } from './errors.js';
import { call, connectedHandle, lookupHandle, type TcpSocketLike } from './handle.js';

/** Keepalive timing. Fields left out keep the value the socket has. */
export interface KeepAliveOptions {
  /** Idle time before the first probe, in milliseconds (1 – 32 767 000). Rounded up to whole seconds (TCP_KEEPIDLE). */
  idle?: number;
  /** Time between probes, in milliseconds (1 – 32 767 000). Rounded up to whole seconds (TCP_KEEPINTVL). */
  interval?: number;
  /** Unanswered probes before the connection is dropped with ETIMEDOUT (1 – 127, TCP_KEEPCNT). */
  count?: number;
}

/** Options accepted by {@link configure}. Options left out are not touched. */
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
  /** `false` when SO_KEEPALIVE is off; otherwise the timings in force (milliseconds, probes). */
  keepAlive: false | Required<KeepAliveOptions>;
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
export const limits = {
  idle: { min: 1, max: 32767 * SECOND },
  interval: { min: 1, max: 32767 * SECOND },
  count: { min: 1, max: 127 },
  userTimeout: { min: 0, max: 2 ** 31 - 1 },
} as const;

const { layout, options: optionTable, platform } = constants;
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

/** Edit distance with transpositions, for "did you mean" hints on option names. */
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

function unknownKey(where: string, key: string, known: string[]): never {
  const hint = known.find((k) => distance(k.toLowerCase(), key.toLowerCase()) <= 2);
  throw invalidArgValue(where, key, hint ? `has no option '${key}' (did you mean '${hint}'?)` : `has no option '${key}'; known: ${known.join(', ')}`);
}

let cursor = 0;
function put(option: number, value: number): void {
  if (!optionTable[option].supported) {
    throw socktuneError(codes.UNSUPPORTED, `${optionTable[option].name} is not available on ${platform.name}`);
  }
  slots[layout.ids + cursor] = option;
  slots[layout.values + cursor] = value;
  cursor++;
}

/**
 * Validates `options` completely and writes them into the native argument slots in the order they
 * must reach the kernel (keepalive timings before SO_KEEPALIVE). Returns how many were written.
 * Throws before any syscall on the first invalid value.
 */
function encode(options: SocketOptions): number {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgType('options', 'of type object', options);
  }
  for (const key in options) if (!knownKeys.includes(key)) unknownKey('options', key, knownKeys);
  cursor = 0;
  const { keepAlive, userTimeout, linger, noDelay, reuseAddress, reusePort } = options;
  let keepAliveOn: number | undefined;
  if (keepAlive !== undefined) {
    if (typeof keepAlive === 'boolean') {
      keepAliveOn = keepAlive ? 1 : 0;
    } else if (typeof keepAlive === 'object' && keepAlive !== null && !Array.isArray(keepAlive)) {
      for (const key in keepAlive) if (!keepAliveKeys.includes(key)) unknownKey('options.keepAlive', key, keepAliveKeys);
      const { idle, interval, count } = keepAlive;
      // Seconds-based kernel values are rounded up, never down: 1500 ms waits 2 s, not 1 s.
      if (idle !== undefined) put(ID.idle, Math.ceil(integerIn('options.keepAlive.idle', idle, limits.idle) / SECOND));
      if (interval !== undefined) put(ID.interval, Math.ceil(integerIn('options.keepAlive.interval', interval, limits.interval) / SECOND));
      if (count !== undefined) put(ID.count, integerIn('options.keepAlive.count', count, limits.count));
      keepAliveOn = 1;
    } else {
      throw invalidArgType('options.keepAlive', 'a boolean or an object { idle, interval, count }', keepAlive);
    }
  }
  if (userTimeout !== undefined) put(ID.userTimeout, integerIn('options.userTimeout', userTimeout, limits.userTimeout));
  if (keepAliveOn !== undefined) put(ID.keepAlive, keepAliveOn);
  if (linger !== undefined) {
    if (linger === false) put(ID.linger, -1);
    else if (linger === 0) put(ID.linger, 0);
    else if (typeof linger === 'number') {
      throw outOfRange(
        'options.linger',
        'false or 0. A positive SO_LINGER makes close() block the event loop on Linux, even on a ' +
          'non-blocking socket. For a bounded graceful close, end() the socket and destroy() it from a timer',
        linger,
      );
    } else throw invalidArgType('options.linger', 'false or 0', linger);
  }
  if (noDelay !== undefined) put(ID.noDelay, bool('options.noDelay', noDelay) ? 1 : 0);
  if (reuseAddress !== undefined) put(ID.reuseAddress, bool('options.reuseAddress', reuseAddress) ? 1 : 0);
  if (reusePort !== undefined) put(ID.reusePort, bool('options.reusePort', reusePort) ? 1 : 0);
  return cursor;
}

function applyLinger(handle: object): void {
  slots[layout.ids] = ID.linger;
  slots[layout.values] = 0;
  applyEncoded(handle, 1);
}

function applyEncoded(handle: object, n: number): void {
  slots[layout.count] = n;
  call(native.apply, handle);
}

/**
 * Sets TCP options on a live socket, all or nothing: if the kernel refuses one, the ones already
 * set are put back and the kernel's error is thrown (`code`, `errno`, `syscall`, `option`).
 *
 * Every value is validated before any syscall. On a socket that is still connecting, the options
 * are applied on `'connect'`; if the kernel refuses them then, the socket is destroyed with that
 * error. Works on `net.Socket`, `tls.TLSSocket` and listening `net.Server`s (accepted sockets
 * inherit keepalive settings on Linux).
 *
 * @param socket a TCP socket or server
 * @param options the options to set; the ones left out are not touched
 * @returns `'applied'`, or `'deferred'` for a connecting socket
 */
export function configure(socket: TcpSocketLike, options: SocketOptions): ConfigureResult {
  const found = lookupHandle(socket);
  const n = encode(options);
  if ('handle' in found) {
    if (n > 0) applyEncoded(found.handle, n);
    return 'applied';
  }
  // Nothing to set (a policy without kernel options, such as rstOnClose): nothing to defer either.
  if (n === 0) return 'deferred';
  const ids = slots.slice(layout.ids, layout.ids + n);
  const values = slots.slice(layout.values, layout.values + n);
  (socket as net.Socket).once('connect', () => {
    try {
      const { handle } = lookupHandle(socket) as { handle: object };
      slots.set(ids, layout.ids);
      slots.set(values, layout.values);
      applyEncoded(handle, n);
    } catch (err) {
      (socket as net.Socket).destroy(err as Error);
    }
  });
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
  // Windows: Node's handles expose no socket (fd -1), so there is nothing to read; say so rather
  // than blame a closed socket.
  if (!optionTable.some((o) => o.supported)) throw socktuneError(codes.UNSUPPORTED, `socket options are not available on ${platform.name}`);
  call(native.read, handle);
  const r = layout.read;
  const timings = supported('TCP_KEEPIDLE')
    ? { idle: slots[r + ID.idle] * SECOND, interval: slots[r + ID.interval] * SECOND, count: slots[r + ID.count] }
    : undefined;
  const linger = slots[r + ID.linger];
  return {
    keepAlive: slots[r + ID.keepAlive] === 1 && timings ? timings : false,
    keepAliveTimings: timings,
    userTimeout: supported('TCP_USER_TIMEOUT') ? slots[r + ID.userTimeout] : undefined,
    linger: linger < 0 ? false : linger * SECOND,
    noDelay: slots[r + ID.noDelay] === 1,
    reuseAddress: slots[r + ID.reuseAddress] === 1,
    reusePort: supported('SO_REUSEPORT') ? slots[r + ID.reusePort] === 1 : undefined,
  };
}

/** Kernel TCP state names (`'ESTABLISHED'`, `'CLOSE_WAIT'`, ...), as `ss` and /proc spell them. */
export type TcpState =
  | 'ESTABLISHED' | 'SYN_SENT' | 'SYN_RECV' | 'FIN_WAIT1' | 'FIN_WAIT2' | 'TIME_WAIT' | 'CLOSE'
  | 'CLOSE_WAIT' | 'LAST_ACK' | 'LISTEN' | 'CLOSING' | 'NEW_SYN_RECV' | 'UNKNOWN';

/**
 * TCP_INFO of one connection. Times are milliseconds (fractional where the kernel counts
 * microseconds: `rtt`, `rttvar`, `minRtt`, `rto`, `ato`, `rcvRtt`); sizes are bytes; counts are
 * segments or events; rates are bytes per second.
 */
export interface TcpInfo {
  /** Kernel state name. */
  state: TcpState;
  /** Congestion-avoidance state (0 Open, 1 Disorder, 2 CWR, 3 Recovery, 4 Loss). */
  caState: number;
  /** Retransmissions of the current unacknowledged segment (resets on ACK). */
  retransmits: number;
  /** Zero-window or keepalive probes sent without answer. */
  probes: number;
  /** Exponential backoff count of the retransmission timer. */
  backoff: number;
  /** Negotiated TCP options bitmask (TCPI_OPT_*). */
  options: number;
  rto: number; ato: number; sndMss: number; rcvMss: number;
  /** Segments sent and not yet acknowledged. */
  unacked: number;
  sacked: number;
  /** Segments considered lost. */
  lost: number;
  retrans: number;
  /** Milliseconds since data was last sent. */
  lastDataSent: number;
  /** Milliseconds since data was last received. */
  lastDataReceived: number;
  /** Milliseconds since an ACK was last received. */
  lastAckReceived: number;
  /** Path MTU in bytes. */
  pmtu: number;
  rcvSsthresh: number;
  /** Smoothed round-trip time, milliseconds. */
  rtt: number;
  /** Round-trip time variance, milliseconds. */
  rttvar: number;
  sndSsthresh: number;
  /** Congestion window, segments. */
  sndCwnd: number;
  advmss: number; reordering: number; rcvRtt: number; rcvSpace: number;
  /** Retransmitted segments over the connection's life. */
  totalRetrans: number;
  pacingRate: number; bytesAcked: number; bytesReceived: number; segsOut: number; segsIn: number;
  notsentBytes: number; minRtt: number; deliveryRate: number; bytesSent: number; bytesRetrans: number;
  /** Peer's advertised receive window, bytes. */
  sndWnd: number;
}

const microsecondFields = new Set(['rto', 'ato', 'rtt', 'rttvar', 'rcvRtt', 'minRtt']);
const infoFields = constants.infoFields.map((name, i) => ({ name, i, scale: microsecondFields.has(name) ? 1 / 1000 : 1 }));

/**
 * Throws ERR_SOCKTUNE_UNSUPPORTED when this platform lacks a kernel view (`tcpInfo`: TCP_INFO;
 * `queues`: SIOCOUTQ/SIOCINQ; `cookie`: SO_COOKIE). `what` names what needs it.
 */
export function requirePlatform(feature: 'tcpInfo' | 'queues' | 'cookie', what: string): void {
  if (!platform[feature]) throw socktuneError(codes.UNSUPPORTED, `${what} is not available on ${platform.name}`);
}

/** Reads TCP_INFO: state, round-trip times, retransmissions, queues, last activity. Linux only. */
export function tcpInfo(socket: TcpSocketLike): TcpInfo {
  requirePlatform('tcpInfo', 'TCP_INFO');
  const handle = connectedHandle(socket);
  call(native.tcpInfo, handle);
  const out: Record<string, number | string> = {};
  for (const f of infoFields) out[f.name] = infoSlots[f.i] * f.scale;
  out.state = constants.tcpStates[infoSlots[0]] ?? 'UNKNOWN';
  return out as unknown as TcpInfo;
}

/** Bytes in the kernel send queue. */
export interface SendQueue {
  /** Sent but not yet acknowledged by the peer. */
  unacked: number;
  /** Written by the application but not yet sent. */
  unsent: number;
}

/** Bytes written but not yet acknowledged, split into sent and unsent (SIOCOUTQ, SIOCOUTQNSD). Linux only. */
export function sendQueue(socket: TcpSocketLike): SendQueue {
  requirePlatform('queues', 'SIOCOUTQ');
  call(native.queues, connectedHandle(socket));
  const outq = slots[layout.queues];
  const unsent = slots[layout.queues + 1];
  return { unacked: outq - unsent, unsent };
}

/**
 * Bytes the kernel still holds for sending, sent or not (SIOCOUTQ): 0 once the peer has
 * acknowledged everything written. One ioctl; the reset path polls it.
 */
export function sendQueueBytes(socket: TcpSocketLike): number {
  requirePlatform('queues', 'SIOCOUTQ');
  call(native.queues, connectedHandle(socket));
  return slots[layout.queues];
}

/**
 * The reset path's fast step, in one native call: reads SIOCOUTQ and, when it is 0 (the peer has
 * acknowledged every byte written), sets SO_LINGER to 0 so the next close() sends RST. Returns the
 * bytes still in the kernel send queue: 0 means the linger is set. Linux only.
 */
export function lingerIfDrained(socket: TcpSocketLike): number {
  requirePlatform('queues', 'SIOCOUTQ');
  // Socket-level only (SIOCOUTQ, SO_LINGER): no TCP-type check needed, which keeps a reset of a
  // fresh connection at two syscalls.
  call(native.lingerIfDrained, connectedHandle(socket), false);
  return slots[layout.queues];
}

/**
 * The reset path on a handle (see `closingHandle`): bytes still in the kernel send queue
 * (SIOCOUTQ), without the TCP-type check (socket-level requests).
 * @internal
 */
export function handleSendQueue(handle: object): number {
  call(native.queues, handle, false);
  return slots[layout.queues];
}

/**
 * The reset path on a handle: SIOCOUTQ, and SO_LINGER 0 when it is empty (one native call).
 * Returns the bytes still queued: 0 means the next close sends RST.
 * @internal
 */
export function handleLingerIfDrained(handle: object): number {
  call(native.lingerIfDrained, handle, false);
  return slots[layout.queues];
}

/**
 * The reset path on a handle: SO_LINGER 0 now, whatever is queued (the next close sends RST and
 * discards it).
 * @internal
 */
export function handleLingerZero(handle: object): void {
  applyLinger(handle);
}

/** The activity the connection guard reads from TCP_INFO in one call. */
export interface TcpActivity {
  /** Kernel state name. */
  state: TcpState;
  /** Milliseconds since data was last received. */
  lastDataReceived: number;
  /** Milliseconds since data was last sent. */
  lastDataSent: number;
  /** Bytes received over the connection's life (TCP_INFO bytes_received), counted by the kernel. */
  bytesReceived: number;
}

const I = Object.fromEntries(constants.infoFields.map((name, i) => [name, i])) as Record<string, number>;

/**
 * The kernel state and last-activity times of a connection (one TCP_INFO read, no object for the
 * other fields). Writes into `out` so a scan over many sockets allocates nothing. Linux only.
 */
export function tcpActivity(socket: TcpSocketLike, out: TcpActivity = { state: 'UNKNOWN', lastDataReceived: 0, lastDataSent: 0, bytesReceived: 0 }): TcpActivity {
  requirePlatform('tcpInfo', 'TCP_INFO');
  call(native.tcpInfo, connectedHandle(socket));
  out.state = (constants.tcpStates[infoSlots[I.state]] ?? 'UNKNOWN') as TcpState;
  out.lastDataReceived = infoSlots[I.lastDataReceived];
  out.lastDataSent = infoSlots[I.lastDataSent];
  out.bytesReceived = infoSlots[I.bytesReceived];
  return out;
}

/**
 * Takes the socket's pending error (SO_ERROR) as a positive errno, 0 for none. Reading it clears
 * it: only for a socket the caller is about to destroy itself (the guard, for a connection the
 * kernel closed while Node was not reading it).
 */
export function takeSocketError(socket: TcpSocketLike): number {
  call(native.socketError, connectedHandle(socket));
  return slots[layout.queues];
}

/** The kernel state of a connection (`'ESTABLISHED'`, `'CLOSE_WAIT'`, ...), from TCP_INFO. Linux only. */
export function tcpState(socket: TcpSocketLike): TcpState {
  requirePlatform('tcpInfo', 'TCP_INFO');
  call(native.tcpInfo, connectedHandle(socket));
  return (constants.tcpStates[infoSlots[I.state]] ?? 'UNKNOWN') as TcpState;
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

/** Bytes received by the kernel and not yet read by the application (SIOCINQ). Linux only. */
export function receiveQueue(socket: TcpSocketLike): number {
  requirePlatform('queues', 'SIOCINQ');
  call(native.queues, connectedHandle(socket));
  return slots[layout.queues + 2];
}

/** SO_COOKIE: the kernel's identity of this socket, unique while the system runs (matches `ss -e`). Linux only. */
export function socketCookie(socket: TcpSocketLike): bigint {
  requirePlatform('cookie', 'SO_COOKIE');
  call(native.cookie, connectedHandle(socket));
  return cookieSlot[0];
}

/** The option table of this platform: names and whether each exists. */
export function supportedOptions(): Array<{ name: string; supported: boolean }> {
  return optionTable.map(({ name, supported }) => ({ name, supported }));
}
