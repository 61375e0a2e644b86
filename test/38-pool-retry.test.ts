// Which requests a pool sends once more when their pooled connection was closed under them, and
// which it never does. A raw HTTP server answers the first request of every connection and then
// closes the connection under the next one (FIN, no response), so every request on a reused
// connection meets the race deterministically. Checked for createAgent (Node's agent) and
// createDispatcher (undici, with undici's request() and fetch()): an idempotent request comes back
// answered, counted and published; a POST, a streamed body, a response already begun and a
// second failure reach the caller as they would without socktune. Node's own agent is checked
// under socktune/register, in an application with no socktune code.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import diagnostics from 'node:diagnostics_channel';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fetch as undiciFetch, request as undiciRequest } from 'undici';
import { createAgent, createDispatcher, presets, type PolicyAgent, type PolicyDispatcher } from '../src/index.js';
import { fileURLToPath } from 'node:url';
import { closeAll, track } from './helpers/sockets.js';
import { runToEnd } from './helpers/register.js';

/** Node 20 hands a free socket to a request in the call that queues it; 22 and later a turn of the loop later. */
const assignsAtOnce = Number(process.versions.node.split('.')[0]) < 22;

afterEach(closeAll);

type Mode = 'close-reused' | 'close-all-but-first' | 'partial-reused';

/**
 * Answers the first request of a connection with 200 and its body; on a later request of the same
 * connection, closes it without an answer (or, `partial-reused`, after half a status line). With
 * `close-all-but-first` every connection but the server's very first closes under its request.
 */
async function rawServer(mode: Mode): Promise<{ port: number; requests: string[]; connections: () => number }> {
  const requests: string[] = [];
  let connections = 0;
  const server = track(
    net.createServer((socket) => {
      const index = connections++;
      let buffered = '';
      let answered = 0;
      socket.on('error', () => {});
      socket.on('data', (d) => {
        buffered += d.toString('latin1');
        for (;;) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buffered.slice(0, end);
          const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          const chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
          let bodyEnd = end + 4 + length;
          if (chunked) {
            const last = buffered.indexOf('\r\n0\r\n\r\n', end);
            if (last < 0) return;
            bodyEnd = last + 7;
          }
          if (buffered.length < bodyEnd) return;
          const line = head.split('\r\n')[0];
          buffered = buffered.slice(bodyEnd);
          const closeIt = mode === 'close-all-but-first' ? index > 0 || answered > 0 : answered > 0;
          if (closeIt) {
            if (mode === 'partial-reused') socket.write('HTTP/1.1 2');
            socket.end();
            return;
          }
          requests.push(line);
          answered++;
          const body = line.startsWith('HEAD ') ? '' : 'ok';
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n${body}`);
        }
      });
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, requests, connections: () => connections };
}

/** A request through `agent`: 'ok' or the error's code or message. */
function viaAgent(
  agent: http.Agent,
  port: number,
  init: { method?: string; headers?: Record<string, string>; body?: string; streamed?: boolean } = {},
): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent, method: init.method ?? 'GET', headers: init.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    if (init.streamed) {
      req.write(init.body ?? '');
      setImmediate(() => req.end());
    } else req.end(init.body);
  });
}

describe('createAgent', () => {
  const agents: PolicyAgent[] = [];
  afterEach(() => {
    for (const a of agents.splice(0)) a.destroy();
  });
  const agent = (overrides = {}) => {
    const a = createAgent(presets.gracefulHeartbeat(overrides));
    agents.push(a);
    return a;
  };

  it('an idempotent request whose pooled connection closed under it is sent again on a new connection: answered, counted, an event and a channel message', async () => {
    const server = await rawServer('close-reused');
    const a = agent();
    const events: unknown[] = [];
    const published: unknown[] = [];
    a.on('retry', (e) => events.push(e));
    const onRetry = (m: unknown) => published.push(m);
    diagnostics.subscribe('socktune:retry', onRetry);
    try {
      expect(await viaAgent(a, server.port)).toBe('ok');
      await sleep(20);
      for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) expect(await viaAgent(a, server.port, { method }), method).toBe(method === 'HEAD' ? '' : 'ok');
      expect(await viaAgent(a, server.port, { method: 'PUT', body: 'whole' })).toBe('ok');
      expect(a.retried).toBe(5);
      expect(events).toHaveLength(5);
      expect(published).toHaveLength(5);
      // Each was answered once: the failed attempts never reached an application.
      expect(server.requests).toEqual(['GET / HTTP/1.1', 'GET / HTTP/1.1', 'HEAD / HTTP/1.1', 'DELETE / HTTP/1.1', 'OPTIONS / HTTP/1.1', 'PUT / HTTP/1.1']);
    } finally {
      diagnostics.unsubscribe('socktune:retry', onRetry);
    }
  });

  it('never sent again: a POST, a body written in pieces, a response already begun, or with poolRetry false; a POST with an Idempotency-Key is', async () => {
    const server = await rawServer('close-reused');
    const a = agent();
    expect(await viaAgent(a, server.port)).toBe('ok');
    const post = await viaAgent(a, server.port, { method: 'POST', body: 'x' });
    expect(['ECONNRESET', 'socket hang up']).toContain(post);
    expect(await viaAgent(a, server.port)).toBe('ok');
    const streamed = await viaAgent(a, server.port, { method: 'PUT', body: 'x', streamed: true });
    expect(['ECONNRESET', 'socket hang up']).toContain(streamed);
    expect(await viaAgent(a, server.port)).toBe('ok');
    expect(await viaAgent(a, server.port, { method: 'POST', body: 'x', headers: { 'idempotency-key': 'k1' } })).toBe('ok');
    expect(a.retried).toBe(1);

    const begun = await rawServer('partial-reused');
    const b = agent();
    expect(await viaAgent(b, begun.port)).toBe('ok');
    expect(await viaAgent(b, begun.port)).not.toBe('ok');
    expect(b.retried).toBe(0);

    const off = agent({ poolRetry: false });
    expect(await viaAgent(off, server.port)).toBe('ok');
    expect(await viaAgent(off, server.port)).not.toBe('ok');
    expect(off.retried).toBe(0);
  });

  it("a second failure reaches the caller as Node reports it; poolRetry 'any' sends a POST again", async () => {
    const server = await rawServer('close-all-but-first');
    const a = agent();
    expect(await viaAgent(a, server.port)).toBe('ok');
    expect(['ECONNRESET', 'socket hang up']).toContain(await viaAgent(a, server.port));
    expect(a.retried).toBe(1);

    const again = await rawServer('close-reused');
    const any = agent({ poolRetry: 'any' });
    expect(await viaAgent(any, again.port)).toBe('ok');
    expect(await viaAgent(any, again.port, { method: 'POST', body: 'x' })).toBe('ok');
    expect(any.retried).toBe(1);
  });
});

describe('createDispatcher', () => {
  const dispatchers: PolicyDispatcher[] = [];
  afterEach(async () => {
    await Promise.all(dispatchers.splice(0).map((d) => d.close()));
  });
  const dispatcher = (overrides = {}) => {
    const d = createDispatcher(presets.gracefulHeartbeat(overrides));
    dispatchers.push(d);
    return d;
  };

  async function viaUndici(
    d: PolicyDispatcher,
    port: number,
    init: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
  ): Promise<string> {
    try {
      const res = await undiciRequest(`http://127.0.0.1:${port}/`, {
        dispatcher: d,
        method: (init.method ?? 'GET') as 'GET',
        headers: init.headers,
        body: init.body as string,
      });
      return await res.body.text();
    } catch (err) {
      return (err as { code?: string }).code ?? (err as Error).message;
    }
  }

  async function viaFetch(d: PolicyDispatcher, port: number, init: RequestInit & { duplex?: 'half' } = {}): Promise<string> {
    try {
      const res = await undiciFetch(`http://127.0.0.1:${port}/`, { ...init, dispatcher: d } as never);
      return await res.text();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      return cause?.code ?? (err as Error).message;
    }
  }

  /** `attempt` on a reused connection: a request answered on a new one first. (A retry goes out on a connection of its own, which is not pooled.) */
  async function reused(d: PolicyDispatcher, port: number, attempt: () => Promise<string>): Promise<string> {
    expect(await viaUndici(d, port)).toBe('ok');
    // undici's pool takes the connection back a moment after the response (before, it opens another).
    await sleep(20);
    return attempt();
  }

  it('request() and fetch(): idempotent requests and bodies given whole are sent again on a new connection; streams and POSTs are not', async () => {
    const server = await rawServer('close-reused');
    const d = dispatcher();
    const port = server.port;
    expect(await reused(d, port, () => viaUndici(d, port))).toBe('ok');
    expect(await reused(d, port, () => viaUndici(d, port, { method: 'PUT', body: 'whole' }))).toBe('ok');
    expect(await reused(d, port, () => viaFetch(d, port))).toBe('ok');
    expect(await reused(d, port, () => viaFetch(d, port, { method: 'PUT', body: 'fetch knows its length' }))).toBe('ok');
    expect(d.retried).toBe(4);
    expect(await reused(d, port, () => viaUndici(d, port, { method: 'POST', body: 'x' }))).toBe('UND_ERR_SOCKET');
    expect(await reused(d, port, () => viaUndici(d, port, { method: 'PUT', body: Readable.from(['a', 'b']) }))).toBe('UND_ERR_SOCKET');
    expect(
      await reused(d, port, () => viaFetch(d, port, { method: 'PUT', body: Readable.toWeb(Readable.from(['a'])) as unknown as BodyInit, duplex: 'half' })),
    ).toBe('UND_ERR_SOCKET');
    expect(await reused(d, port, () => viaUndici(d, port, { method: 'POST', body: 'x', headers: { 'idempotency-key': 'k2' } }))).toBe('ok');
    expect(d.retried).toBe(5);
  });

  it("under a compose() of the user's (undici 7 hands the interceptor the new handler API) the same requests are sent again", async () => {
    const server = await rawServer('close-reused');
    const d = dispatcher();
    // An interceptor of the user's on top: compose wraps request()'s and fetch's handlers in the new API.
    const composed = d.compose((dispatch) => (opts, handler) => dispatch(opts, handler)) as unknown as PolicyDispatcher;
    const port = server.port;
    expect(await reused(composed, port, () => viaUndici(composed, port))).toBe('ok');
    expect(await reused(composed, port, () => viaFetch(composed, port, { method: 'PUT', body: 'fetch knows its length' }))).toBe('ok');
    expect(d.retried).toBe(2);
    expect(await reused(composed, port, () => viaUndici(composed, port, { method: 'POST', body: 'x' }))).toBe('UND_ERR_SOCKET');
    expect(d.retried).toBe(2);
  });

  it('a second failure reaches the caller unchanged', async () => {
    const server = await rawServer('close-all-but-first');
    const d = dispatcher();
    expect(await reused(d, server.port, () => viaUndici(d, server.port))).toBe('UND_ERR_SOCKET');
    expect(d.retried).toBe(1);
  });
});

// Node's own keep-alive agent in an application with no socktune code: under socktune/register a
// pooled connection whose server's FIN is already in the kernel is dropped before Node hands it out,
// and a request whose pooled connection is closed under it is sent once more; the same
// application without register is the control.
describe("Node's http.Agent under socktune/register", () => {
  const script = fileURLToPath(new URL('./fixtures/register-pool-app.mjs', import.meta.url));
  const run = async (nodeArgs: string[], env: Record<string, string>) => {
    const r = await runToEnd([...nodeArgs, script], env);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<
      'stale' | 'race' | 'post',
      { ok: boolean; error?: string; state?: string; sameSocket?: boolean; stats: { stale?: number; retried?: number } }
    > & { listeners: Record<string, number> };
  };

  it('a pooled connection the server closed (CLOSE_WAIT) is not handed out, one closed under its request is retried, a POST is not', async () => {
    const r = await run(['--import', 'socktune/register'], { SOCKTUNE_POLICY: 'gracefulHeartbeat' });
    const control = await run([], {});
    // The retry watches the connection through its own emit, not listeners: a reused connection
    // has exactly the listeners Node gives it (Node's test-http-agent-keepalive counts them).
    expect(r.listeners).toEqual(control.listeners);
    expect(r.listeners.error).toBe(1);
    expect(r.stale).toMatchObject({ state: 'CLOSE_WAIT', ok: true, sameSocket: false, stats: { stale: 1, retried: 0 } });
    expect(r.race).toMatchObject({ ok: true, stats: { stale: 1, retried: 1 } });
    expect(r.post).toMatchObject({ ok: false, error: 'ECONNRESET', stats: { stale: 1, retried: 1 } });
  });

  it(`control: without socktune the ${assignsAtOnce ? 'CLOSE_WAIT connection is handed out and its request fails' : 'agent (Node 22+) reads the FIN first'}, and the request raced fails`, async () => {
    const r = await run([], {});
    expect(r.stale.state).toBe('CLOSE_WAIT');
    if (assignsAtOnce) expect(r.stale).toMatchObject({ ok: false, error: 'ECONNRESET' });
    else expect(r.stale.ok).toBe(true);
    expect(r.race).toMatchObject({ ok: false, error: 'ECONNRESET' });
  });
});
