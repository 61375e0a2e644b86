/**
 * One more try for an undici request (and so a fetch) whose pooled connection was closed under it:
 * the same rule as integrations/retry.ts for Node's agents, as an undici interceptor. A request
 * that fails on a reused connection before any byte of its response (UND_ERR_SOCKET "other side
 * closed", ECONNRESET, EPIPE) is dispatched once more, on a connection of its own, when its method
 * is idempotent (or it carries an `Idempotency-Key`) and its body can be replayed (none, a string,
 * bytes, a Blob or FormData, or a body of known length, which fetch always hands undici as a
 * one-shot generator: it is recorded as undici reads it, up to 1 MiB).
 *
 * What undici tells: `undici:client:sendHeaders` is published synchronously right after undici
 * called the handler's start callback for the same request, with the socket it is written on, so a
 * mark on a socket that carried a head before says whether the connection was reused;
 * `onResponseStarted` is called on the first byte of a response. The interceptor must be innermost
 * (nothing between it and undici's core), and speaks the handler API it is given: the old one
 * (onConnect, ...), which undici's request() and fetch use and which reach it as they are in front
 * of createDispatcher's Agent and under the undici 6 that Node 20 and 22 bundle for their global
 * fetch; the new one (onRequestStart, ...) for a handler that comes through undici 7's compose. The
 * downstream handler sees one start, one controller, and either the second attempt's response or
 * its error, unchanged.
 * @module
 */
import diagnostics from 'node:diagnostics_channel';
import type net from 'node:net';
import { Readable } from 'node:stream';
import type { PoolRetry } from '../policy/presets.js';
import { retryChannel } from './retry.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
const CLOSED = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);
const RECORD_MAX = 1024 * 1024;

/** What the interceptor is told. */
export interface RetryConfig {
  /** The policy's `poolRetry`: which requests may be sent again. */
  mode: Exclude<PoolRetry, false>;
  /** Where a second attempt goes: a dispatcher that keeps no connection (a new one for sure). */
  fresh: { dispatch(opts: object, handler: object): unknown } | undefined;
  /** Called for every request sent once more. */
  onRetry?: (error: Error) => void;
}

/** One attempt of a request: the socket it was written on, and what was seen of it. */
interface Attempt {
  method: string;
  socket: net.Socket | undefined;
  reused: boolean;
  h2: boolean;
  responseStarted: boolean;
  bytesReadAtSend: number;
  done: boolean;
  abort: (reason?: unknown) => void;
}

/**
 * Set on a socket once undici wrote a request head on it: a later head goes out on a reused
 * connection. A property of the socket, read and written once per request (a WeakMap cost a
 * lookup and an insert on every request).
 */
const kCarried = Symbol('socktune.retry.carried');
/** The attempt whose start callback is on the stack: the one undici is about to write. */
let starting: Attempt | undefined;
let subscribed = false;

function onSendHeaders(message: unknown): void {
  const { request, socket } = (message ?? {}) as { request?: { method?: string }; socket?: net.Socket };
  if (typeof socket !== 'object' || socket === null) return;
  const s = socket as net.Socket & { [kCarried]?: true };
  const reused = s[kCarried] === true;
  if (!reused) s[kCarried] = true;
  const a = starting;
  starting = undefined;
  if (a === undefined || a.done || a.socket !== undefined || request?.method !== a.method) return;
  a.socket = socket;
  a.reused = reused;
  a.h2 = (socket as net.Socket & { alpnProtocol?: unknown }).alpnProtocol === 'h2';
  // On plain TCP a response byte moves bytesRead; on TLS, records such as close_notify do too.
  a.bytesReadAtSend = (socket as net.Socket & { encrypted?: boolean }).encrypted === true ? -1 : socket.bytesRead;
}

function subscribe(): void {
  if (subscribed) return;
  subscribed = true;
  diagnostics.subscribe('undici:client:sendHeaders', onSendHeaders);
}

/** A header's value from undici's header shapes (an object, a flat array, pairs, an iterable). */
function header(headers: unknown, name: string): unknown {
  if (headers == null || typeof headers !== 'object') return undefined;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const [k, v] of headers as unknown[][]) if (String(k).toLowerCase() === name) return v;
      return undefined;
    }
    for (let i = 0; i + 1 < headers.length; i += 2) if (String(headers[i]).toLowerCase() === name) return headers[i + 1];
    return undefined;
  }
  if (Object.getPrototypeOf(headers) !== Object.prototype && typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const [k, v] of headers as Iterable<[unknown, unknown]>) if (String(k).toLowerCase() === name) return v;
    return undefined;
  }
  for (const k of Object.keys(headers)) if (k.toLowerCase() === name) return (headers as Record<string, unknown>)[k];
  return undefined;
}

type BodyKind = 'none' | 'whole' | 'stream';

function bodyKind(body: unknown): BodyKind {
  if (body == null) return 'none';
  if (typeof body === 'string' || ArrayBuffer.isView(body) || body instanceof ArrayBuffer) return 'whole';
  // undici reads a Blob (body.stream()) and serialises FormData afresh for every write.
  if (typeof Blob !== 'undefined' && body instanceof Blob) return 'whole';
  if (typeof body === 'object' && (body as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag] === 'FormData') return 'whole';
  return 'stream';
}

/**
 * A one-shot body (a stream, an iterable, fetch's generator) recorded as undici reads it, so the
 * bytes can be sent again. Each attempt gets its own iterable over the one source: undici ending
 * its loop over an attempt's iterable does not close the source.
 */
class Replay {
  readonly #chunks: Array<string | Uint8Array> = [];
  #bytes = 0;
  #iterator: AsyncIterator<string | Uint8Array> | Iterator<string | Uint8Array> | undefined;
  #ended = false;
  overflow = false;

  constructor(private readonly source: unknown) {}

  async #pull(): Promise<IteratorResult<string | Uint8Array>> {
    if (this.#iterator === undefined) {
      let src = this.source as { [Symbol.asyncIterator]?: () => AsyncIterator<string | Uint8Array>; [Symbol.iterator]?: () => Iterator<string | Uint8Array> };
      if (typeof src[Symbol.asyncIterator] !== 'function' && typeof (src as { pipe?: unknown }).pipe === 'function') src = Readable.from(src as Readable);
      this.#iterator = typeof src[Symbol.asyncIterator] === 'function' ? src[Symbol.asyncIterator]!() : src[Symbol.iterator]!();
    }
    const r = await this.#iterator.next();
    if (r.done === true) {
      this.#ended = true;
      return r;
    }
    const chunk = r.value;
    const n = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength;
    if (!this.overflow) {
      if (this.#bytes + n > RECORD_MAX) {
        this.overflow = true;
        this.#chunks.length = 0;
      } else {
        this.#chunks.push(chunk);
        this.#bytes += n;
      }
    }
    return r;
  }

  /** The body of one attempt: what was recorded, then the rest of the source. */
  attempt(): AsyncGenerator<string | Uint8Array> {
    const chunks = this.#chunks;
    const pull = () => this.#pull();
    const ended = () => this.#ended;
    return (async function* replay() {
      for (let i = 0; i < chunks.length; i++) yield chunks[i];
      while (!ended()) {
        const r = await pull();
        if (r.done === true) break;
        yield r.value;
      }
    })();
  }

  close(): void {
    if (this.#iterator !== undefined && !this.#ended) {
      this.#ended = true;
      try {
        const done = this.#iterator.return?.();
        if (done instanceof Promise) done.catch(() => {});
      } catch {
        // the source's own end: nothing to do
      }
    }
    this.#chunks.length = 0;
  }
}

function abortError(reason: unknown): Error {
  if (reason instanceof Error) return reason;
  return Object.assign(new Error('Request aborted'), { name: 'AbortError', code: 'UND_ERR_ABORTED' });
}

interface DispatchOptions {
  method: string;
  headers?: unknown;
  body?: unknown;
  upgrade?: unknown;
  idempotent?: boolean;
}

/** One request's decision and bookkeeping, whatever the handler API. */
class RetryState {
  retried = false;
  attempt: Attempt | undefined;
  userAbort: { reason: unknown } | undefined;
  readonly replay: Replay | undefined;
  /** Why this request can never be sent again, decided at dispatch. */
  readonly refusal: string | undefined;
  readonly opts: DispatchOptions;

  constructor(opts: DispatchOptions, mode: RetryConfig['mode']) {
    let refusal: string | undefined;
    if (opts.upgrade || opts.method === 'CONNECT') refusal = 'upgrade';
    // The headers are searched only when the method does not decide it (fetch gives every request several).
    else if (mode !== 'any' && !IDEMPOTENT.has(opts.method) && opts.idempotent !== true && header(opts.headers, 'idempotency-key') == null)
      refusal = 'not-idempotent';
    let replay: Replay | undefined;
    let given = opts;
    if (refusal === undefined && bodyKind(opts.body) === 'stream') {
      // fetch hands undici every body as a one-shot generator; a Content-Length says it knew the
      // whole body (a string, bytes, a Blob, FormData, URLSearchParams). A body of unknown length
      // is a stream: sent again only under 'any'.
      const length = Number(header(opts.headers, 'content-length'));
      if (mode === 'any' || (Number.isFinite(length) && length <= RECORD_MAX)) {
        replay = new Replay(opts.body);
        given = { ...opts, body: replay.attempt() };
      } else {
        refusal = 'stream';
      }
    }
    this.refusal = refusal;
    this.replay = replay;
    this.opts = given;
  }

  begin(abort: (reason?: unknown) => void): Attempt {
    const a: Attempt = {
      method: this.opts.method,
      socket: undefined,
      reused: false,
      h2: false,
      responseStarted: false,
      bytesReadAtSend: -1,
      done: false,
      abort,
    };
    this.attempt = a;
    return a;
  }

  /** Whether `err` on the current attempt lets the request be sent again. */
  may(err: unknown): boolean {
    const a = this.attempt;
    if (this.userAbort !== undefined || this.retried || this.refusal !== undefined) return false;
    if (a === undefined || a.socket === undefined || a.h2 || !a.reused || a.responseStarted) return false;
    if (a.bytesReadAtSend >= 0 && a.socket.bytesRead > a.bytesReadAtSend) return false;
    if (!CLOSED.has((err as { code?: string } | null)?.code ?? '')) return false;
    return this.replay === undefined || !this.replay.overflow;
  }

  next(): DispatchOptions {
    return this.replay === undefined ? this.opts : { ...this.opts, body: this.replay.attempt() };
  }

  finish(): void {
    if (this.attempt !== undefined) this.attempt.done = true;
    this.replay?.close();
  }
}

interface Controller {
  pause(): void;
  resume(): void;
  abort(reason?: unknown): void;
  readonly aborted: boolean;
  readonly reason: unknown;
}

/** The one controller the downstream keeps, whatever attempt runs. */
class StableController implements Controller {
  #target: Controller | undefined;
  #paused = false;
  constructor(private readonly state: RetryState) {}
  set target(c: Controller) {
    this.#target = c;
    if (this.#paused) c.pause();
  }
  pause(): void {
    this.#paused = true;
    this.#target?.pause();
  }
  resume(): void {
    this.#paused = false;
    this.#target?.resume();
  }
  abort(reason?: unknown): void {
    this.state.userAbort ??= { reason };
    this.#target?.abort(reason);
  }
  get aborted(): boolean {
    return this.state.userAbort !== undefined || (this.#target?.aborted ?? false);
  }
  get reason(): unknown {
    return this.state.userAbort?.reason ?? this.#target?.reason ?? null;
  }
  get paused(): boolean {
    return this.#paused;
  }
  get rawHeaders(): unknown {
    return (this.#target as { rawHeaders?: unknown } | undefined)?.rawHeaders;
  }
  get rawTrailers(): unknown {
    return (this.#target as { rawTrailers?: unknown } | undefined)?.rawTrailers;
  }
}

type Dispatch = (opts: object, handler: object) => unknown;
type AnyHandler = Record<string, ((...args: unknown[]) => unknown) | undefined>;

/** Sends the request once more, on the next microtask (not from inside undici's close handling). */
function again(state: RetryState, cfg: RetryConfig, dispatch: Dispatch, self: object, fail: (err: unknown) => void, err: Error): void {
  state.retried = true;
  state.attempt!.done = true;
  cfg.onRetry?.(err);
  if (retryChannel.hasSubscribers) retryChannel.publish({ request: state.opts, error: err, socket: state.attempt!.socket });
  queueMicrotask(() => {
    if (state.userAbort !== undefined) return fail(abortError(state.userAbort.reason));
    try {
      (cfg.fresh !== undefined ? cfg.fresh.dispatch.bind(cfg.fresh) : dispatch)(state.next(), self);
    } catch (e) {
      fail(e);
    }
  });
}

/** Under undici 7's compose: the new handler API. */
class Handler {
  readonly state: RetryState;
  readonly #controller: StableController;
  #started = false;

  constructor(
    opts: DispatchOptions,
    private readonly dispatch: Dispatch,
    private readonly handler: AnyHandler,
    private readonly cfg: RetryConfig,
  ) {
    this.state = new RetryState(opts, cfg.mode);
    this.#controller = new StableController(this.state);
  }

  onRequestStart(controller: Controller, context: unknown): void {
    const a = this.state.begin((r) => controller.abort(r));
    this.#controller.target = controller;
    if (!this.#started) {
      this.#started = true;
      this.handler.onRequestStart?.(this.#controller, context);
    } else if (this.state.userAbort !== undefined) {
      controller.abort(this.state.userAbort.reason);
    }
    if (!controller.aborted) starting = a;
  }

  onResponseStarted(): unknown {
    if (this.state.attempt !== undefined) this.state.attempt.responseStarted = true;
    return this.handler.onResponseStarted?.();
  }

  onRequestUpgrade(_c: unknown, status: unknown, headers: unknown, socket: unknown): unknown {
    this.state.finish();
    return this.handler.onRequestUpgrade?.(this.#controller, status, headers, socket);
  }

  onResponseStart(_c: unknown, status: unknown, headers: unknown, message: unknown): unknown {
    if (this.state.attempt !== undefined) this.state.attempt.responseStarted = true;
    return this.handler.onResponseStart?.(this.#controller, status, headers, message);
  }

  onResponseData(_c: unknown, chunk: unknown): unknown {
    return this.handler.onResponseData?.(this.#controller, chunk);
  }

  onResponseEnd(_c: unknown, trailers: unknown): unknown {
    this.state.finish();
    return this.handler.onResponseEnd?.(this.#controller, trailers);
  }

  onResponseError(_c: unknown, err: Error): unknown {
    const fail = (e: unknown) => {
      this.state.finish();
      return this.handler.onResponseError?.(this.#controller, e);
    };
    if (!this.state.may(err)) return fail(err);
    again(this.state, this.cfg, this.dispatch, this, fail, err);
    return undefined;
  }
}

/** Under undici 6's compose (Node 20 and 22's global fetch): the old handler API. */
class LegacyHandler {
  readonly state: RetryState;
  readonly #abort: (reason?: unknown) => void;
  #started = false;

  constructor(
    opts: DispatchOptions,
    private readonly dispatch: Dispatch,
    private readonly handler: AnyHandler,
    private readonly cfg: RetryConfig,
  ) {
    this.state = new RetryState(opts, cfg.mode);
    const state = this.state;
    // The abort the downstream keeps: aborts whichever attempt runs, remembered across the gap.
    this.#abort = (reason) => {
      state.userAbort ??= { reason };
      state.attempt?.abort(reason);
    };
  }

  onConnect(abort: (reason?: unknown) => void, context: unknown): void {
    const a = this.state.begin(abort);
    if (!this.#started) {
      this.#started = true;
      this.handler.onConnect?.(this.#abort, context);
    } else if (this.state.userAbort !== undefined) {
      abort(this.state.userAbort.reason);
      return;
    }
    if (this.state.userAbort === undefined) starting = a;
  }

  onResponseStarted(): unknown {
    if (this.state.attempt !== undefined) this.state.attempt.responseStarted = true;
    return this.handler.onResponseStarted?.();
  }

  onHeaders(status: unknown, headers: unknown, resume: unknown, text: unknown): unknown {
    if (this.state.attempt !== undefined) this.state.attempt.responseStarted = true;
    return this.handler.onHeaders?.(status, headers, resume, text);
  }

  onData(chunk: unknown): unknown {
    return this.handler.onData?.(chunk);
  }

  onBodySent(chunk: unknown): unknown {
    return this.handler.onBodySent?.(chunk);
  }

  onRequestSent(): unknown {
    return this.handler.onRequestSent?.();
  }

  onUpgrade(status: unknown, headers: unknown, socket: unknown): unknown {
    this.state.finish();
    return this.handler.onUpgrade?.(status, headers, socket);
  }

  onComplete(trailers: unknown): unknown {
    this.state.finish();
    return this.handler.onComplete?.(trailers);
  }

  onError(err: Error): unknown {
    const fail = (e: unknown) => {
      this.state.finish();
      return this.handler.onError?.(e);
    };
    if (!this.state.may(err)) return fail(err);
    again(this.state, this.cfg, this.dispatch, this, fail, err);
    return undefined;
  }
}

/**
 * The interceptor, for `dispatcher.compose()`: innermost, in the handler API it is given.
 * @internal
 */
export function retryInterceptor(cfg: RetryConfig): (dispatch: Dispatch) => Dispatch {
  subscribe();
  return (dispatch) =>
    function socktuneRetry(opts: object, handler: object): unknown {
      const h =
        typeof (handler as AnyHandler).onRequestStart === 'function'
          ? new Handler(opts as DispatchOptions, dispatch, handler as AnyHandler, cfg)
          : new LegacyHandler(opts as DispatchOptions, dispatch, handler as AnyHandler, cfg);
      return dispatch(h.state.opts, h);
    };
}

interface Composable {
  compose(...interceptors: Array<(dispatch: Dispatch) => Dispatch>): object;
  constructor: new (options: object) => { dispatch(opts: object, handler: object): unknown };
}

let globalInstalled = false;

/**
 * Wraps the dispatcher behind Node's global fetch in place (Node loads its bundled undici and makes
 * its default Agent on first use): requests sent once more go to an Agent of the same class that
 * keeps no connection. Once per process; returns false where there is no composable dispatcher.
 * @internal
 */
export function retryGlobalFetch(mode: RetryConfig['mode'], onRetry: (error: Error) => void): boolean {
  if (globalInstalled) return true;
  const key = Symbol.for('undici.globalDispatcher.1');
  const g = globalThis as unknown as Record<symbol, unknown>;
  // Touching a fetch global loads Node's undici, which sets its default dispatcher.
  if (g[key] === undefined) void (globalThis as { Headers?: unknown }).Headers;
  const current = g[key] as Composable | undefined;
  if (current === undefined || typeof current.compose !== 'function') return false;
  const fresh = new current.constructor({ pipelining: 0 });
  const composed = current.compose(retryInterceptor({ mode, fresh, onRetry }));
  g[key] = composed;
  const legacy = Symbol.for('undici.globalDispatcher.2');
  if (g[legacy] === current) g[legacy] = composed;
  globalInstalled = true;
  return true;
}
