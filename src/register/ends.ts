/**
 * Who closed each connection, for every TCP connection the process opens or accepts under
 * `socktune/register` (not only those socktune closes): who closed first (`peer-fin`, `peer-rst`,
 * `local-end`, `local-destroy`, `local-rst`), why (socktune's reason, a socket timeout, an error
 * code, the application, the peer), its lifetime and bytes. Counted by cause and published on the
 * `socktune:close` channel as a {@link ConnectionEndMessage}.
 *
 * The kernel decides, not JavaScript's order of events: the connection's TCP state is read at the
 * two moments that matter, as this side sends its FIN (Node's `_final`, just before shutdown(2))
 * and as its fd is about to close (`_destroy`). CLOSE_WAIT or LAST_ACK there means the peer's FIN
 * came first, whether or not Node read it; FIN_WAIT or TIME_WAIT that ours did; a connection still
 * ESTABLISHED at close(2) is closed by this side, with RST when SO_LINGER is 0 (a reset by
 * socktune or `resetAndDestroy()`) or when bytes are left unread in the kernel (Linux resets then),
 * with FIN otherwise; a CLOSE state carries the peer's reset or the kernel's timeout as its error.
 * Where Node already knows (it read the peer's FIN, or the reset), no system call is made: most
 * connections cost one TCP_INFO read, some none.
 *
 * The shutdown and destroy of every `net.Socket` pass through two functions on its prototype that
 * call Node's own; connections the registration did not see (before it started, Unix-domain
 * sockets) are passed through at the cost of one property read.
 * @module
 */
import net from 'node:net';
import { closingView, tcpState } from '../views.js';
import { isTcpSocket, peerEnded, resetAndClosing } from '../handle.js';
import {
  closeChannel,
  isResetting,
  type CloseMessage,
  type ConnectionEnd,
  type ConnectionEndMessage,
  type ConnectionInitiator,
  type TypedChannel,
} from '../policy/reset.js';
import { kernelError } from '../errors.js';
import { originOf } from '../guard/origin.js';
import type { Direction } from './config.js';

const kEnd = Symbol('socktune.end');

/** What is known of a connection before it closes. */
interface Watched {
  born: number;
  direction: Direction;
  /** Who sent the first FIN, as seen at this side's shutdown. */
  first?: ConnectionInitiator;
  /** A socket timeout (`'timeout'`) came before the close. */
  timedOut?: boolean;
  /** socktune's own close of it: its reason and whether it reset. */
  socktune?: { reason: string; rst: boolean };
}

interface Marked {
  [kEnd]?: Watched;
}

/** What `_destroy` saw, finished into a message once socktune's own close report is in. */
interface Seen {
  socket: net.Socket;
  watched: Watched;
  state: string | undefined;
  unread: boolean;
  /** Node's own reset (`resetAndDestroy()`): SO_LINGER 0 as the handle closes. */
  reset: boolean;
  code: string | undefined;
  error: Error | undefined;
  at: number;
}

let started = false;
let trace = false;
const counts = new Map<string, number>();
let pending: Seen[] = [];
let flushing = false;
const channel = closeChannel as unknown as TypedChannel<CloseMessage | ConnectionEndMessage>;

/** Connection ends counted since the registration started, by `direction initiator cause`. */
export function connectionEnds(): ReadonlyMap<string, number> {
  return counts;
}

/**
 * Pauses (false) or resumes attribution for connections settled from now on: the benchmark's A/B
 * in one process (scripts/bench/ends.mjs). @internal
 */
export function setAttributing(on: boolean): void {
  paused = !on;
}
let paused = false;

/** Whether connection ends are being attributed (socktune/register started it). */
export function attributing(): boolean {
  return started;
}

/** Starts watching the connections {@link watchConnection} is given. Once per process (thread). */
export function startEnds(options: { trace: boolean }): void {
  if (started) return;
  started = true;
  trace = options.trace;
  const proto = net.Socket.prototype as unknown as {
    _final: (this: net.Socket, cb: (err?: Error | null) => void) => void;
    _destroy: (this: net.Socket, err: Error | null, cb: (err?: Error | null) => void) => void;
    _onTimeout: (this: net.Socket) => void;
  };
  const final = proto._final;
  const destroy = proto._destroy;
  const onTimeout = proto._onTimeout;
  proto._final = function _final(this: net.Socket & Marked, cb: (err?: Error | null) => void): void {
    const w = this[kEnd];
    if (w !== undefined && w.first === undefined) w.first = atShutdown(this);
    return final.call(this, cb);
  };
  proto._destroy = function _destroy(this: net.Socket & Marked, err: Error | null, cb: (err?: Error | null) => void): void {
    const w = this[kEnd];
    if (w !== undefined) {
      this[kEnd] = undefined; // once per connection
      atDestroy(this, w, err ?? undefined);
    }
    return destroy.call(this, err, cb);
  };
  if (typeof onTimeout === 'function') {
    proto._onTimeout = function _onTimeout(this: net.Socket & Marked): void {
      const w = this[kEnd];
      if (w !== undefined) w.timedOut = true;
      return onTimeout.call(this);
    };
  }
  // socktune's own closes say why and how; they are published before or just after the destroy.
  channel.subscribe((message) => {
    const m = message as Partial<CloseMessage>;
    if (typeof m !== 'object' || m === null || typeof m.reason !== 'string' || !(m.socket instanceof net.Socket)) return;
    const w = (m.socket as net.Socket & Marked)[kEnd] ?? pending.find((p) => p.socket === m.socket)?.watched;
    if (w !== undefined) w.socktune = { reason: m.reason, rst: m.report?.method === 'rst' };
  });
}

/** Watches `socket` (just connected or accepted) until it closes. */
export function watchConnection(socket: net.Socket, direction: Direction): void {
  if (!started || paused || !isTcpSocket(socket)) return;
  const w: Watched = { born: performance.now(), direction };
  (socket as net.Socket & Marked)[kEnd] = w;
  // Ended before Node published it (a server's 'connection' listener that ends at once): judged
  // as at shutdown (libuv sends the FIN on its next turn, or did: FIN_WAIT, LAST_ACK).
  if (socket.writableEnded) {
    const state = peerEnded(socket) ? 'CLOSE_WAIT' : stateOf(socket);
    if (state === 'ESTABLISHED' || (state !== undefined && LOCAL_FIN.has(state))) w.first = 'local-end';
    else if (state !== undefined && PEER_FIN.has(state)) w.first = 'peer-fin';
  }
}

/** Who sent the first FIN, as this side is about to send its own. */
function atShutdown(socket: net.Socket): ConnectionInitiator | undefined {
  // Node read the peer's EOF: its FIN came first.
  if (peerEnded(socket)) return 'peer-fin';
  const state = stateOf(socket);
  if (state === 'ESTABLISHED') return 'local-end';
  if (state === 'CLOSE_WAIT') return 'peer-fin';
  return undefined; // not connected, or closed under it: the destroy decides
}

function stateOf(socket: net.Socket): string | undefined {
  try {
    return tcpState(socket);
  } catch {
    return undefined; // no fd (closed, never connected), or no TCP_INFO on this platform
  }
}

function atDestroy(socket: net.Socket, watched: Watched, error: Error | undefined): void {
  const errored = (socket as { errored?: (Error & { code?: unknown }) | null }).errored ?? error;
  const errCode = (errored as { code?: unknown } | undefined)?.code;
  let code = typeof errCode === 'string' ? errCode : undefined;
  let state: string | undefined;
  let unread = false;
  const reset = resetAndClosing(socket);
  // Where Node knows already (it read the peer's FIN or reset, or this side's FIN was judged at
  // shutdown), no system call.
  const known = watched.first !== undefined || (code !== undefined && PEER_RESET.has(code)) || peerEnded(socket);
  if (!known) {
    const view = closingView(socket);
    if (view !== undefined) {
      state = view.state;
      unread = view.unread > 0;
      if (view.errno !== 0 && code === undefined) code = kernelError(-view.errno, 'close').code;
    }
  }
  const seen: Seen = { socket, watched, state, unread, reset, code, error: errored ?? undefined, at: performance.now() };
  // A close socktune makes reports its reason and method just after this destroy (a microtask
  // later, or at once after it): its end is told once that is in. Any other is told now.
  if (!isResetting(socket)) return finish(seen);
  pending.push(seen);
  if (!flushing) {
    flushing = true;
    setImmediate(flush);
  }
}

const PEER_RESET = new Set(['ECONNRESET', 'EPIPE']);
const LOCAL_FIN = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSING']);
const PEER_FIN = new Set(['CLOSE_WAIT', 'LAST_ACK']);

function initiatorOf(s: Seen): ConnectionInitiator {
  const { watched: w, state, code, socket } = s;
  if (w.first !== undefined) return w.first;
  if (state !== undefined && PEER_FIN.has(state)) return 'peer-fin';
  if (state !== undefined && LOCAL_FIN.has(state)) return 'local-end';
  if (code !== undefined && PEER_RESET.has(code)) return 'peer-rst';
  if (peerEnded(socket)) return 'peer-fin';
  // This side closes a connection still open both ways: RST when SO_LINGER is 0 or bytes are unread.
  if (s.reset || w.socktune?.rst === true || s.unread) return 'local-rst';
  // The kernel gave up on the peer (keepalive or the user timeout): this side ended it.
  if (code === 'ETIMEDOUT') return 'local-rst';
  return 'local-destroy';
}

function causeOf(s: Seen, initiator: ConnectionInitiator): string {
  const w = s.watched;
  if (w.socktune !== undefined) return w.socktune.reason === 'close' ? 'application' : w.socktune.reason;
  if (s.code !== undefined) return s.code;
  if (w.timedOut === true) return 'timeout';
  if (initiator === 'local-rst' && s.unread && !s.reset) return 'unread-data';
  return initiator.startsWith('peer') ? 'peer' : 'application';
}

function flush(): void {
  const batch = pending;
  pending = [];
  flushing = false;
  for (const s of batch) finish(s);
}

/** Counts one connection's end and publishes it. */
function finish(s: Seen): void {
  const initiator = initiatorOf(s);
  const cause = causeOf(s, initiator);
  const key = `${s.watched.direction} ${initiator} ${cause}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
  const end: ConnectionEnd = {
    initiator,
    cause,
    direction: s.watched.direction,
    lifetime: s.at - s.watched.born,
    bytesRead: s.socket.bytesRead,
    bytesWritten: s.socket.bytesWritten,
    state: s.state,
  };
  if (trace) {
    const origin = originOf(s.socket);
    if (origin !== undefined) end.origin = origin;
  }
  channel.publish({ socket: s.socket, end, error: s.error });
}
