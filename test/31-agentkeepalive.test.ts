// Coming from agentkeepalive: its options (freeSocketTimeout, socketActiveTTL, timeout on active
// sockets, the former names) and its status API (getCurrentStatus(), statusChanged, the counters)
// mean the same on createAgent / createHttpsAgent. Each case runs the same requests through
// agentkeepalive's own HttpAgent / HttpsAgent and compares. What socktune refuses instead of
// accepting ('5s' strings) is refused loudly.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAgent, createHttpsAgent, presets, type AgentStatus } from '../src/index.js';
import { track } from './helpers/sockets.js';
import { pools } from './helpers/pools.js';
import { catchError } from './helpers/errors.js';
import { certificate, freed, request, type Got } from './helpers/http.js';

const require = createRequire(import.meta.url);
const { HttpAgent, HttpsAgent } = require('agentkeepalive') as {
  HttpAgent: new (options?: object) => http.Agent & { getCurrentStatus(): AgentStatus; statusChanged: boolean };
  HttpsAgent: new (options?: object) => https.Agent & { getCurrentStatus(): AgentStatus; statusChanged: boolean };
};

const policy = presets.gracefulHeartbeat({ keepAlive: { idle: 7000, interval: 2000, count: 4 } });

type StatusAgent = http.Agent & { getCurrentStatus(): AgentStatus; readonly statusChanged: boolean };

const keep = pools();

/**
 * An HTTP(S) server on loopback without a Keep-Alive hint (agentkeepalive ignores hints; socktune
 * does not): `/` answers at once, `/slow` after 200 ms, `/hang` never.
 */
async function appServer(secure: boolean): Promise<{ port: number; peers: net.Socket[] }> {
  const peers: net.Socket[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (req.url === '/hang') return;
    if (req.url === '/slow') setTimeout(() => res.end('ok'), 200);
    else res.end('ok');
  };
  const server = track(secure ? https.createServer(certificate(), handler) : http.createServer(handler));
  server.keepAliveTimeout = 0;
  server.on(secure ? 'secureConnection' : 'connection', (s: net.Socket) => peers.push(track(s)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, peers };
}

/** The two drop-in pairs: agentkeepalive's class and socktune's factory with the same options. */
const pairs = [
  {
    kind: 'http',
    secure: false,
    client: http,
    theirs: (o: object) => new HttpAgent(o) as StatusAgent,
    ours: (o: object) => createAgent(policy, o) as StatusAgent,
  },
  {
    kind: 'https',
    secure: true,
    client: https,
    theirs: (o: object) => new HttpsAgent(o) as StatusAgent,
    ours: (o: object) => createHttpsAgent(policy, o) as StatusAgent,
  },
] as const;

type Pair = (typeof pairs)[number];

/** Runs `scenario` on agentkeepalive's agent, then on socktune's, against one server; returns both results. */
async function both<T>(
  pair: Pair,
  options: object,
  scenario: (agent: StatusAgent, get: (path?: string, hooks?: Parameters<typeof request>[2]) => Promise<Got>, peers: net.Socket[]) => Promise<T>,
): Promise<{ theirs: T; ours: T }> {
  const out: Partial<{ theirs: T; ours: T }> = {};
  const { port, peers } = await appServer(pair.secure);
  for (const side of ['theirs', 'ours'] as const) {
    for (const peer of peers.splice(0)) peer.destroy();
    const agent = keep(pair[side]({ ...options }));
    const get = (path = '/', hooks: Parameters<typeof request>[2] = {}): Promise<Got> =>
      request({ host: '127.0.0.1', port, path, agent, rejectUnauthorized: false }, pair.client, hooks);
    out[side] = await scenario(agent, get, peers);
  }
  return out as { theirs: T; ours: T };
}

describe('options', () => {
  it.each(pairs)('$kind: freeSocketTimeout, socketActiveTTL and the former names land in agent.options as in agentkeepalive', ({ theirs, ours }) => {
    for (const given of [{ freeSocketTimeout: 1500, socketActiveTTL: 800 }, { keepAliveTimeout: 1500 }, { freeSocketKeepAliveTimeout: 1500 }]) {
      const a = keep(theirs({ ...given })) as unknown as { options: Record<string, unknown> };
      const b = keep(ours({ ...given })) as unknown as { options: Record<string, unknown> };
      expect(b.options.freeSocketTimeout).toBe(a.options.freeSocketTimeout);
      expect(b.options.keepAliveTimeout).toBeUndefined();
      expect(b.options.freeSocketKeepAliveTimeout).toBeUndefined();
      if ('socketActiveTTL' in given) expect(b.options.socketActiveTTL).toBe(a.options.socketActiveTTL);
    }
  });

  const refused: Array<[string, object, string]> = [
    ["a humanized string (agentkeepalive's '5s')", { freeSocketTimeout: '5s' }, 'ERR_INVALID_ARG_TYPE'],
    ['a numeric string', { socketActiveTTL: '500' }, 'ERR_INVALID_ARG_TYPE'],
    ['a fraction', { freeSocketTimeout: 1.5 }, 'ERR_OUT_OF_RANGE'],
    ['a negative value', { socketActiveTTL: -1 }, 'ERR_OUT_OF_RANGE'],
    ['NaN', { freeSocketTimeout: Number.NaN }, 'ERR_OUT_OF_RANGE'],
    ['null', { socketActiveTTL: null }, 'ERR_INVALID_ARG_TYPE'],
    ['a former name that disagrees with freeSocketTimeout', { freeSocketTimeout: 1000, keepAliveTimeout: 2000 }, 'ERR_INVALID_ARG_VALUE'],
  ];
  it.each(refused)('%s is refused with a code, before any socket exists', (_name, options, code) => {
    for (const make of [createAgent, createHttpsAgent]) {
      expect(catchError(() => make(policy, options as never))).toMatchObject({ code });
    }
  });
});

describe('freeSocketTimeout', () => {
  it.each(pairs)('$kind: a free socket waits freeSocketTimeout (300 ms), then leaves; the next request connects anew; counted as a timeout', async (pair) => {
    const r = await both(pair, { freeSocketTimeout: 300, timeout: 5000 }, async (agent, get, peers) => {
      const first = await get();
      await freed(agent, first.socket);
      const timeout = first.socket.timeout;
      await once(first.socket, 'close');
      const second = await get();
      return { timeout, reused: second.reused, connections: peers.length, timeouts: agent.getCurrentStatus().timeoutSocketCount };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ timeout: 300, reused: false, connections: 2, timeouts: 1 });
  });

  it.each(pairs)("$kind: a socket's own freeSocketTimeout property (agentkeepalive's per-socket override) takes its place", async (pair) => {
    const r = await both(pair, { freeSocketTimeout: 5000 }, async (agent, get) => {
      const got = await get('/', { onSocket: (s) => Object.assign(s, { freeSocketTimeout: 700 }) });
      await freed(agent, got.socket);
      return got.socket.timeout;
    });
    expect(r.ours).toBe(r.theirs);
    expect(r.ours).toBe(700);
  });

  it.each(pairs)("$kind: in use, the socket has the agent's timeout again", async (pair) => {
    const r = await both(pair, { freeSocketTimeout: 300, timeout: 2000 }, async (agent, get) => {
      const first = await get();
      await freed(agent, first.socket);
      let inUse: number | undefined;
      const second = await get('/', { onSocket: (s) => (inUse = s.timeout) });
      return { reused: second.reused, inUse };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ reused: true, inUse: 2000 });
  });
});

describe('socketActiveTTL', () => {
  it.each(pairs)('$kind: a free socket past its TTL is not reused: TTL 300 ms, next request after 400 ms connects anew', async (pair) => {
    const r = await both(pair, { socketActiveTTL: 300, freeSocketTimeout: 5000 }, async (agent, get, peers) => {
      const first = await get();
      await freed(agent, first.socket);
      const bounded = (first.socket.timeout ?? 0) > 0 && (first.socket.timeout ?? 0) <= 300;
      await sleep(400);
      const second = await get();
      return { bounded, reused: second.reused, connections: peers.length };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ bounded: true, reused: false, connections: 2 });
  });

  it.each(pairs)('$kind: a socket in use is never cut: TTL 100 ms, a 200 ms response completes, then the socket is not pooled', async (pair) => {
    const r = await both(pair, { socketActiveTTL: 100 }, async (agent, get) => {
      const got = await get('/slow');
      return { body: got.body, after: await freed(agent, got.socket) };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ body: 'ok', after: 'dropped' });
  });

  it.each(pairs)('$kind: within its TTL a socket is reused, its free time bounded by freeSocketTimeout (TTL 2 s, free 500 ms)', async (pair) => {
    const r = await both(pair, { socketActiveTTL: 2000, freeSocketTimeout: 500 }, async (agent, get) => {
      const first = await get();
      await freed(agent, first.socket);
      const timeout = first.socket.timeout;
      const second = await get();
      return { timeout, same: second.socket === first.socket };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ timeout: 500, same: true });
  });
});

describe('timeout on sockets in use', () => {
  it.each(pairs)("$kind: nobody listens for 'timeout': the request fails with ERR_SOCKET_TIMEOUT 'Socket timeout' at `timeout` (200 ms)", async (pair) => {
    const r = await both(pair, { timeout: 200 }, async (agent, get) => {
      const err = await get('/hang').then(
        () => undefined,
        (e: NodeJS.ErrnoException & { timeout?: number }) => e,
      );
      await sleep(10);
      const status = agent.getCurrentStatus();
      return {
        code: err?.code,
        message: err?.message,
        timeout: err?.timeout,
        timeouts: status.timeoutSocketCount,
        errors: status.errorSocketCount,
        closed: status.closeSocketCount,
      };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ code: 'ERR_SOCKET_TIMEOUT', message: 'Socket timeout', timeout: 200, timeouts: 1, errors: 1, closed: 1 });
  });

  it.each(pairs)("$kind: the application listens for 'timeout' and aborts: its handler decides, the request sees 'socket hang up'", async (pair) => {
    const r = await both(pair, { timeout: 200 }, async (agent, get) => {
      let timedOut = 0;
      const err = await get('/hang', {
        onRequest: (req) =>
          req.on('timeout', () => {
            timedOut++;
            req.destroy();
          }),
      }).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      );
      return { timedOut, code: err?.code, message: err?.message, timeouts: agent.getCurrentStatus().timeoutSocketCount };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual({ timedOut: 1, code: 'ECONNRESET', message: 'socket hang up', timeouts: 1 });
  });

  it("control: Node's http.Agent with the same timeout leaves such a request waiting (the intended difference)", async () => {
    const { port } = await appServer(false);
    const agent = keep(new http.Agent({ keepAlive: true, timeout: 200 }));
    let settled = false;
    let socket: net.Socket | undefined;
    request({ host: '127.0.0.1', port, path: '/hang', agent }, http, { onSocket: (s) => (socket = s) }).then(
      () => (settled = true),
      () => (settled = true),
    );
    await sleep(600);
    expect(settled).toBe(false);
    expect(socket?.destroyed).toBe(false);
  });
});

describe('status API', () => {
  it.each(pairs)("$kind: getCurrentStatus() has agentkeepalive's fields in its order, and the same values after the same requests", async (pair) => {
    const r = await both(pair, { timeout: 5000, freeSocketTimeout: 5000 }, async (agent, get, peers) => {
      const initial = agent.getCurrentStatus();
      const first = await get();
      await freed(agent, first.socket);
      const second = await get();
      await freed(agent, second.socket);
      const pooled = agent.getCurrentStatus();
      // The server ends the pooled connection: the agent sees it close.
      peers[0].destroy();
      await once(first.socket, 'close');
      const afterClose = agent.getCurrentStatus();
      // Two at once: two connections, both pooled.
      const [a, b] = await Promise.all([get(), get()]);
      await freed(agent, a.socket);
      await freed(agent, b.socket);
      const [name] = Object.keys(agent.freeSockets);
      return { keys: Object.keys(initial), initial, pooled, afterClose, final: agent.getCurrentStatus(), name };
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours.keys).toEqual([
      'createSocketCount',
      'createSocketErrorCount',
      'closeSocketCount',
      'errorSocketCount',
      'timeoutSocketCount',
      'requestCount',
      'freeSockets',
      'sockets',
      'requests',
    ]);
    expect(r.ours.final).toMatchObject({ createSocketCount: 3, closeSocketCount: 1, requestCount: 4 });
  });

  it.each(pairs)('$kind: statusChanged is false until a counter moves, true once, then false again', async (pair) => {
    const r = await both(pair, {}, async (agent, get) => {
      const seen = [agent.statusChanged, agent.statusChanged];
      const got = await get();
      await freed(agent, got.socket);
      seen.push(agent.statusChanged, agent.statusChanged);
      return seen;
    });
    expect(r.ours).toEqual(r.theirs);
    expect(r.ours).toEqual([false, false, true, false]);
  });

  it("createSocketErrorCount: Node's createConnection calling back an error (patched, as agentkeepalive's tests do) is counted; the request fails with it", async () => {
    const counts: number[] = [];
    const original = http.Agent.prototype.createConnection;
    http.Agent.prototype.createConnection = ((_o: unknown, cb?: (err: Error | null) => void) => {
      setImmediate(() => cb?.(new Error('mock createConnection error')));
      return undefined;
    }) as never;
    try {
      for (const agent of [keep(new HttpAgent({})), keep(createAgent(policy))]) {
        const err = await request({ host: '127.0.0.1', port: 9, agent }).then(
          () => undefined,
          (e: Error) => e,
        );
        expect(err?.message).toBe('mock createConnection error');
        counts.push((agent as StatusAgent).getCurrentStatus().createSocketErrorCount);
      }
    } finally {
      http.Agent.prototype.createConnection = original;
    }
    expect(counts).toEqual([1, 1]);
  });
});
