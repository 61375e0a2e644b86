/**
 * One more try for a request whose pooled connection was closed under it. An idle keep-alive
 * connection that the server closes (its idle timeout, a deploy, a load balancer) at the moment
 * the client sends a request on it fails that request with ECONNRESET, EPIPE or "socket hang up"
 * before any byte of a response: the request never reached an application. Such a request is sent
 * once more on a new connection when doing so cannot do harm: its method is idempotent (or it
 * carries an `Idempotency-Key`), and its body was given whole (or there was none), so the bytes
 * written are the request, and they are replayed as written.
 *
 * This is the one module that reads Node's `http.ClientRequest` internals (Node 20 to 26): the
 * socket's `_httpMessage` (which request its listeners act for), the request's `outputData`
 * (bytes waiting for a socket), `onSocket` (hand a request a socket), `chunkedEncoding`,
 * `finished`, `timeoutCb` and `reusedSocket`.
 *
 * How: when an agent hands a request a pooled connection (`reuseSocket`), the bytes written for
 * it are recorded, and the connection's `'end'` and `'error'` are seen before any listener of
 * Node's. If the connection ends or fails before a response byte and the request may be replayed,
 * Node's own listeners are left to run for a stand-in (they end the dead connection as usual), and
 * the request gets a new connection from the same agent with the recorded bytes in its output
 * queue, as if it had been written before it had a socket. A second failure reaches the
 * application as Node reports it.
 *
 * What a request that does not fail pays: the connection's `write` and `emit` are wrapped once,
 * the first time it is reused; after that, arming is one object per request, and the first
 * response byte (`'data'`) disarms it. No listener is added or removed per request: on a
 * keep-alive request that did not fail, three listeners added and removed cost more than
 * everything else the retry does.
 * @module
 */
import type http from 'node:http';
import net from 'node:net';
import diagnostics from 'node:diagnostics_channel';
import type { Duplex } from 'node:stream';
import type { Policy, PoolRetry } from '../policy/presets.js';

/** Methods a request may be repeated with, by RFC 9110 (section 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Bytes of a request recorded for a replay at most: a larger request is not repeated. */
const RECORD_MAX = 1024 * 1024;
/** The errors of a connection the server closed or reset under the request. */
const CLOSED = new Set(['ECONNRESET', 'EPIPE']);

/** Messages published for every request socktune sends once more: `{ request, error, agent }`. */
export const retryChannel = diagnostics.channel('socktune:retry');

const kArmed = Symbol('socktune.retry.armed');
const kOptions = Symbol('socktune.retry.options');
const kRetried = Symbol('socktune.retry.retried');
const kWrite = Symbol('socktune.retry.write');
const kEmit = Symbol('socktune.retry.emit');

interface Chunk {
  data: string | Uint8Array;
  encoding: BufferEncoding | null | undefined;
}

/** What is recorded for the request a pooled connection was handed. */
interface Armed {
  req: ClientRequestInternals;
  agent: AgentInternals;
  mode: PoolRetry;
  /** Bytes the socket had read when it was handed the request: a response byte moves it. */
  bytesRead: number;
  chunks: Chunk[];
  bytes: number;
  /** More was written than is recorded: the request cannot be replayed. */
  overflow: boolean;
  /** Called back with what happened when the request was retried (counters). */
  onRetry: ((req: http.ClientRequest, error: Error) => void) | undefined;
}

interface ClientRequestInternals extends http.ClientRequest {
  outputData: Array<{ data: unknown; encoding: unknown; callback: unknown }>;
  outputSize: number;
  chunkedEncoding: boolean;
  finished: boolean;
  timeoutCb?: unknown;
  reusedSocket: boolean;
  /** The response, once its head was parsed. */
  res?: http.IncomingMessage | null;
  /** The request's own timeout (`options.timeout`), when given. */
  timeout?: number;
  [kOptions]?: object;
  [kRetried]?: boolean;
  onSocket(socket: Duplex, err?: Error): void;
}

interface AgentInternals extends http.Agent {
  options: { timeout?: number };
  createSocket(req: http.ClientRequest, options: object, cb: (err: Error | null, socket?: Duplex) => void): void;
}

interface SocketInternals extends net.Socket {
  _httpMessage: unknown;
  _hadError?: boolean;
  [kArmed]?: Armed;
  [kWrite]?: net.Socket['write'];
  [kEmit]?: net.Socket['emit'];
}

/**
 * Remembers the options `agent.addRequest` was given for `req` (a request is retried with them).
 * @internal
 */
export function noteRequestOptions(req: unknown, options: unknown): void {
  if (typeof options === 'object' && options !== null && typeof req === 'object' && req !== null) {
    (req as ClientRequestInternals)[kOptions] = options;
  }
}

/**
 * `agent.reuseSocket(socket, req)` happened: records what is written for `req` on `socket` and
 * watches the connection for a close before the response, under `policy`'s `poolRetry`.
 * @internal
 */
export function armRetry(
  agent: http.Agent,
  socket: Duplex,
  req: http.ClientRequest,
  policy: Policy | undefined,
  onRetry?: (req: http.ClientRequest, error: Error) => void,
): void {
  const mode = policy?.poolRetry ?? false;
  if (mode === false || !(socket instanceof net.Socket)) return;
  const r = req as ClientRequestInternals;
  if (r[kOptions] === undefined || r[kRetried] === true || r.method === 'CONNECT') return;
  const s = socket as SocketInternals;
  s[kArmed] = {
    req: r,
    agent: agent as AgentInternals,
    mode,
    bytesRead: s.bytesRead,
    chunks: [],
    bytes: 0,
    overflow: false,
    onRetry,
  };
  if (s[kWrite] === undefined) {
    s[kWrite] = s.write;
    s.write = recordingWrite as net.Socket['write'];
  }
  if (s[kEmit] === undefined) {
    s[kEmit] = s.emit;
    s.emit = watchingEmit as net.Socket['emit'];
  }
}

/** The socket's own `write`, recording what is written for the armed request. */
function recordingWrite(this: SocketInternals, data: unknown, encoding?: unknown, callback?: unknown): boolean {
  const armed = this[kArmed];
  if (armed !== undefined && this._httpMessage === armed.req && !armed.overflow) {
    const chunk = data as string | Uint8Array;
    const length =
      typeof chunk === 'string' ? Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : chunk.byteLength;
    if (armed.bytes + length > RECORD_MAX) {
      armed.overflow = true;
      armed.chunks.length = 0;
    } else {
      armed.chunks.push({ data: chunk, encoding: typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined });
      armed.bytes += length;
    }
  }
  return (this[kWrite] as (...args: unknown[]) => boolean).call(this, data, encoding, callback);
}

/**
 * The socket's own `emit`, seeing its events before any listener while a request is armed: the
 * first response byte disarms it (nothing is repeated from then on), an end or a closed
 * connection's error is looked at before Node's listeners act on it. Unarmed, it only passes the
 * event on, so a socket between requests, out of the pool or taken over behaves as Node's (with
 * no `'error'` listener of socktune's, an error no one listens for is thrown as Node throws it).
 */
function watchingEmit(this: SocketInternals, type: string | symbol, err?: unknown): boolean {
  const armed = this[kArmed];
  if (armed !== undefined) {
    // Bytes read since the request was armed: closedUnder() would refuse now, and for good.
    if (type === 'data') {
      if (this.bytesRead !== armed.bytesRead) this[kArmed] = undefined;
    } else if (type === 'end') closedUnder(this, undefined);
    else if (type === 'error') {
      if (CLOSED.has((err as NodeJS.ErrnoException | null)?.code ?? '')) closedUnder(this, err as Error);
      else this[kArmed] = undefined;
    }
  }
  // `arguments` as it came: V8 passes it on without making an array.
  return (this[kEmit] as (...args: unknown[]) => boolean).apply(this, arguments as unknown as unknown[]);
}

/** Whether the request may be sent again, as written. */
function replayable(armed: Armed): boolean {
  const req = armed.req;
  if (armed.overflow || !req.finished || req.outputData.length > 0) return false;
  if (armed.mode === 'any') return true;
  const idempotent = IDEMPOTENT.has(req.method) || req.hasHeader('idempotency-key');
  // A body given whole to end() has a Content-Length; one written in pieces (a stream) is chunked.
  return idempotent && !req.chunkedEncoding;
}

/** The connection ended or failed under the armed request: repeat it, or let Node report it. */
function closedUnder(socket: SocketInternals, err: Error | undefined): void {
  const armed = socket[kArmed]!;
  socket[kArmed] = undefined;
  const req = armed.req;
  if (socket._httpMessage !== req || req.res != null || socket.bytesRead !== armed.bytesRead || req.destroyed || !replayable(armed)) return;
  // Node's listeners on this connection act for the request they find on it: give them a stand-in,
  // so they close the connection as usual without failing the request, which goes on elsewhere.
  socket._httpMessage = standIn(req, socket);
  socket._hadError = true;
  const error = err ?? Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  req[kRetried] = true;
  req.reusedSocket = false;
  req.outputData = armed.chunks.map((c) => ({ data: c.data, encoding: c.encoding, callback: null }));
  req.outputSize = 0;
  // The request's timeout listens on its socket: listened for again on the new one.
  req.timeoutCb = null;
  armed.onRetry?.(req, error);
  if (retryChannel.hasSubscribers) retryChannel.publish({ request: req, error, agent: armed.agent });
  armed.agent.createSocket(req, req[kOptions]!, (e, fresh) => {
    if (e) return req.onSocket(fresh as Duplex, e);
    req.onSocket(fresh!);
    // As Node's agent does for a request whose own timeout differs from the agent's.
    const agentTimeout = armed.agent.options.timeout || 0;
    if (req.timeout !== undefined && req.timeout !== agentTimeout) (fresh as net.Socket).setTimeout(req.timeout);
  });
}

/**
 * What Node's socket listeners find on a connection the request has left: enough of a request for
 * them to close the connection (`res`, `socket`, `emit`), a request to nobody.
 */
function standIn(req: ClientRequestInternals, socket: net.Socket): object {
  return {
    __proto__: null,
    method: req.method,
    path: req.path,
    host: req.host,
    protocol: req.protocol,
    res: null,
    socket,
    destroyed: false,
    outputData: [],
    emit: () => false,
  };
}

/** Whether `req` was sent once more after its pooled connection closed under it. */
export function wasRetried(req: http.ClientRequest): boolean {
  return (req as ClientRequestInternals)[kRetried] === true;
}
