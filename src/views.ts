/**
 * What the kernel knows of a connection, read back: TCP_INFO (`tcpInfo`, and the few fields the
 * guard reads in one call, `tcpActivity`), the state alone (`tcpState`), the queues (`sendQueue`,
 * `receiveQueue`), the socket cookie and the pending socket error. Linux; elsewhere each answers
 * ERR_SOCKTUNE_UNSUPPORTED by name (`requirePlatform`).
 * @module
 */
import { addon, constants, cookieSlot, infoSlots, native, slots as sharedSlots } from './binding.js';
import { codes, socktuneError } from './errors.js';
import { call, closingHandle, connectedHandle, type TcpSocketLike } from './handle.js';
import { microsecondFields, type TcpState } from './tables.js';

const { layout, platform } = constants;
const slots = sharedSlots;

export type { TcpState } from './tables.js';

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
  rto: number;
  ato: number;
  sndMss: number;
  rcvMss: number;
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
  advmss: number;
  reordering: number;
  rcvRtt: number;
  rcvSpace: number;
  /** Retransmitted segments over the connection's life. */
  totalRetrans: number;
  pacingRate: number;
  bytesAcked: number;
  bytesReceived: number;
  segsOut: number;
  segsIn: number;
  notsentBytes: number;
  minRtt: number;
  deliveryRate: number;
  bytesSent: number;
  bytesRetrans: number;
  /** Peer's advertised receive window, bytes. */
  sndWnd: number;
}

const infoFields = constants.infoFields.map((name, i) => ({ name, i, scale: microsecondFields.has(name) ? 1 / 1000 : 1 }));

/**
 * Throws ERR_SOCKTUNE_UNSUPPORTED when this platform lacks a kernel view (`tcpInfo`: TCP_INFO;
 * `queues`: SIOCOUTQ/SIOCINQ; `cookie`: SO_COOKIE). `what` names what needs it. Without the addon
 * it throws nothing (see the body).
 */
export function requirePlatform(feature: 'tcpInfo' | 'queues' | 'cookie', what: string): void {
  // Without the addon nothing is known of the platform: the native call that follows throws the
  // loader's coded error (ERR_SOCKTUNE_NO_ADDON), and a policy, which makes none, can still be built.
  if (addon.error !== undefined) return;
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

/** The activity the connection guard reads from TCP_INFO in one call. */
export interface TcpActivity {
  /** Kernel state name. */
  state: TcpState;
  /** Milliseconds since data was last received. */
  lastDataReceived: number;
  /** Milliseconds since data was last sent. */
  lastDataSent: number;
  /** Milliseconds since the peer last acknowledged anything (a data ACK, a probe's answer). */
  lastAckReceived: number;
  /** Bytes received over the connection's life (TCP_INFO bytes_received), counted by the kernel. */
  bytesReceived: number;
  /** Segments sent and not yet acknowledged. */
  unacked: number;
  /** Bytes written and not yet sent (the peer's window or congestion holds them). */
  notsent: number;
  /** The peer's advertised receive window, bytes (0: it has stopped reading). */
  sndWnd: number;
  /** Zero-window or keepalive probes sent since the peer last answered anything. */
  probes: number;
  /** Retransmissions of the oldest unacknowledged segment since the peer last answered. */
  retransmits: number;
  /** The retransmission timeout now (backed off), milliseconds. */
  rto: number;
}

/** A {@link TcpActivity} to read into. */
export function newActivity(): TcpActivity {
  return {
    state: 'UNKNOWN',
    lastDataReceived: 0,
    lastDataSent: 0,
    lastAckReceived: 0,
    bytesReceived: 0,
    unacked: 0,
    notsent: 0,
    sndWnd: 0,
    probes: 0,
    retransmits: 0,
    rto: 0,
  };
}

const I = Object.fromEntries(constants.infoFields.map((name, i) => [name, i])) as Record<string, number>;

/**
 * The kernel state, activity times and send-side counters of a connection (one TCP_INFO read, no
 * object for the other fields). Writes into `out` so a scan over many sockets allocates nothing.
 * Linux only.
 */
export function tcpActivity(socket: TcpSocketLike, out: TcpActivity = newActivity()): TcpActivity {
  requirePlatform('tcpInfo', 'TCP_INFO');
  call(native.tcpInfo, connectedHandle(socket));
  out.state = (constants.tcpStates[infoSlots[I.state]] ?? 'UNKNOWN') as TcpState;
  out.lastDataReceived = infoSlots[I.lastDataReceived];
  out.lastDataSent = infoSlots[I.lastDataSent];
  out.lastAckReceived = infoSlots[I.lastAckReceived];
  out.bytesReceived = infoSlots[I.bytesReceived];
  out.unacked = infoSlots[I.unacked];
  out.notsent = infoSlots[I.notsentBytes];
  out.sndWnd = infoSlots[I.sndWnd];
  out.probes = infoSlots[I.probes];
  out.retransmits = infoSlots[I.retransmits];
  out.rto = infoSlots[I.rto] / 1000;
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
  call(native.state, connectedHandle(socket));
  return (constants.tcpStates[slots[layout.state]] ?? 'UNKNOWN') as TcpState;
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

/** What the kernel holds of a connection as its fd is about to close: see {@link closingView}. */
export interface ClosingView {
  state: TcpState;
  /** Bytes received and not read (SIOCINQ); read only in ESTABLISHED and CLOSE_WAIT, else 0. */
  unread: number;
  /** SO_ERROR (taken); read only in CLOSE, else 0. */
  errno: number;
}

/**
 * The kernel's view of a TCP connection whose socket is being destroyed (Node already counts it
 * destroyed; its handle is still open): its state, and what decides how close(2) ends it (bytes
 * unread in ESTABLISHED or CLOSE_WAIT: Linux resets) or how it had ended (the error of a CLOSE
 * state). One getsockopt, plus one ioctl or getsockopt where the state calls for it. Undefined
 * where the handle is gone or the platform has no TCP_INFO. The caller has checked the socket is TCP.
 * @internal
 */
export function closingView(socket: TcpSocketLike): ClosingView | undefined {
  if (!constants.platform.tcpInfo) return undefined;
  try {
    const handle = closingHandle(socket as Parameters<typeof closingHandle>[0]);
    call(native.state, handle, false);
    const state = (constants.tcpStates[slots[layout.state]] ?? 'UNKNOWN') as TcpState;
    let unread = 0;
    let errno = 0;
    if (state === 'ESTABLISHED' || state === 'CLOSE_WAIT') {
      call(native.queues, handle, false);
      unread = slots[layout.queues + 2];
    } else if (state === 'CLOSE') {
      call(native.socketError, handle, false);
      errno = slots[layout.queues];
    }
    return { state, unread, errno };
  } catch {
    return undefined;
  }
}
