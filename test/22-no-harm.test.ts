// Do no harm: a policy or the guard never hurts a connection it cannot help. Connections a policy
// cannot apply to pass through untouched; only real policies are accepted, read once.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { Guard, compose, guardOf, presets, tune, tuneServer } from '../src/index.js';
import { closeAll, pair, track } from './helpers/sockets.js';
import { catchError } from './helpers/errors.js';

afterEach(closeAll);

/** GET `path` over the Unix-domain socket `socketPath` with `agent`; resolves with status and body. */
function get(socketPath: string, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(`${res.statusCode} ${body}`));
    });
    req.on('error', reject);
  });
}

describe('connections a policy cannot apply to pass through untouched', () => {
  it('tuneServer on an HTTP server listening on a Unix-domain socket: every request is served, each connection counted as untuned', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'socktune-'));
    const socketPath = join(dir, 'http.sock');
    const server = track(http.createServer((_req, res) => res.end('ok')));
    const guard = tuneServer(server, presets.gracefulHeartbeat(presets.rstOnClose()));
    server.listen(socketPath);
    await once(server, 'listening');
    const agent = new http.Agent({ keepAlive: false });
    try {
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) answers.push(await get(socketPath, agent));
      expect(answers).toEqual(Array(5).fill('200 ok'));
      expect(guard.stats()).toMatchObject({ tracked: 0, untuned: 5 });
      expect(Object.values(guard.stats().closed).every((n) => n === 0)).toBe(true);
    } finally {
      agent.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a Unix-domain net.Server keeps its half-open connections as the application handles them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'socktune-'));
    const socketPath = join(dir, 'net.sock');
    const server = track(
      net.createServer({ allowHalfOpen: true }, (s) => {
        track(s).resume();
        s.on('end', () => s.end('bye'));
      }),
    );
    const guard = tuneServer(server, presets.gracefulHeartbeat({ halfCloseTimeout: 100, scanInterval: 50 }));
    server.listen(socketPath);
    await once(server, 'listening');
    try {
      const client = track(net.connect(socketPath));
      await once(client, 'connect');
      let got = '';
      client.setEncoding('utf8').on('data', (d: string) => (got += d));
      client.end('hi');
      await once(client, 'end');
      expect(got).toBe('bye');
      expect(guard.stats()).toMatchObject({ untuned: 1, tracked: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tune() called directly on a Unix-domain socket is an error for the caller, and the socket is untouched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'socktune-'));
    const socketPath = join(dir, 'direct.sock');
    const server = track(net.createServer((s) => track(s).end('x')));
    server.listen(socketPath);
    await once(server, 'listening');
    try {
      const client = track(net.connect(socketPath));
      await once(client, 'connect');
      expect(catchError(() => tune(client, presets.gracefulHeartbeat()))).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
      expect(client.destroyed).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('only real policies are accepted, read once', () => {
  const lookalikes: Array<[string, unknown]> = [
    ['an empty object', {}],
    ['a frozen look-alike', Object.freeze({ name: 'graceful-heartbeat', scanInterval: 5000 })],
    ['a copy of a preset', { ...presets.gracefulHeartbeat() }],
    ['null', null],
    ['undefined', undefined],
    ['a string', 'gracefulHeartbeat'],
  ];
  it.each(lookalikes)('new Guard(%s) throws ERR_INVALID_ARG_TYPE at the call', (_name, value) => {
    expect(catchError(() => new Guard(value as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });

  it('tune(socket, undefined) and tune(socket, a frozen look-alike) throw coded errors, and the socket keeps working', async () => {
    const { client } = await pair();
    expect(catchError(() => tune(client, undefined as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    // Not a policy: treated as overrides and validated like any, so its unknown fields are refused.
    expect(catchError(() => tune(client, Object.freeze({ name: 'x', scanInterval: 5000, bogus: 1 }) as never))).toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    expect(client.destroyed).toBe(false);
  });

  it('each field is read once: a getter cannot answer validation one thing and the policy another', () => {
    let reads = 0;
    const overrides = {
      get halfCloseTimeout() {
        reads++;
        return reads === 1 ? 1000 : 'never';
      },
    };
    expect(presets.gracefulHeartbeat(overrides as never).halfCloseTimeout).toBe(1000);
    expect(reads).toBe(1);
  });

  it('userTimeout given through a getter is read once and kept (not replaced by the keepalive budget)', () => {
    let reads = 0;
    const overrides = {
      get userTimeout() {
        reads++;
        return 7000;
      },
    };
    expect(presets.gracefulHeartbeat(overrides as never).userTimeout).toBe(7000);
    expect(reads).toBe(1);
  });

  it('an inherited field (a polluted Object.prototype) is not a field of the policy', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto.idleTimeout = 1;
    proto.reset = 'always';
    try {
      const p = compose({ halfCloseTimeout: 1000 });
      expect([p.idleTimeout, p.reset, p.halfCloseTimeout]).toEqual([false, false, 1000]);
      expect(presets.gracefulHeartbeat().idleTimeout).toBe(false);
    } finally {
      delete proto.idleTimeout;
      delete proto.reset;
    }
  });

  it("what the caller's getter or Proxy throws while a policy is read is ERR_INVALID_ARG_VALUE with it as cause", () => {
    const thrown = new Error('from the caller');
    const getter = {
      get idleTimeout(): number {
        throw thrown;
      },
    };
    const proxy = new Proxy(
      {},
      {
        ownKeys() {
          throw thrown;
        },
      },
    );
    for (const value of [getter, proxy]) {
      const err = catchError(() => compose(value as never));
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      expect((err as Error & { cause?: unknown }).cause).toBe(thrown);
    }
  });

  const bad: Array<[string, unknown, string]> = [
    ['a Symbol timeout', { idleTimeout: Symbol('x') }, 'ERR_INVALID_ARG_TYPE'],
    ['a Symbol name', { name: Symbol('x') }, 'ERR_INVALID_ARG_TYPE'],
    ['an unknown keepAlive field', { keepAlive: { idel: 1000 } }, 'ERR_INVALID_ARG_VALUE'],
    ['an unknown heartbeat field', { heartbeat: { interval: 1000, timeout: 1000, ping() {}, pong: 1 } }, 'ERR_INVALID_ARG_VALUE'],
    ['a BigInt deadline', { finWaitTimeout: 5n }, 'ERR_INVALID_ARG_TYPE'],
    ['an array', [], 'ERR_INVALID_ARG_TYPE'],
  ];
  it.each(bad)('%s is a coded error where the policy is built', (_name, overrides, code) => {
    expect(catchError(() => presets.gracefulHeartbeat(overrides as never))).toMatchObject({ code });
  });

  it('every field given a Symbol, a null-prototype object, a BigInt or a function: a coded error from every preset and compose, never accepted', () => {
    const fields = [
      'name',
      'keepAlive',
      'userTimeout',
      'noDelay',
      'idleTimeout',
      'readerIdleTimeout',
      'writerIdleTimeout',
      'heartbeat',
      'halfCloseTimeout',
      'finWaitTimeout',
      'scanInterval',
      'reset',
      'resetAccepted',
      'drainTimeout',
      'drainDeadline',
      'onDrainTimeout',
      'poolIdleTimeout',
      'poolIdleMargin',
    ];
    const values = [Symbol('x'), Object.create(null), 5n, () => 1, [], NaN];
    const codeless: string[] = [];
    for (const field of fields) {
      for (const value of values) {
        for (const build of [compose, presets.gracefulHeartbeat, presets.rstOnClose]) {
          // An empty keepAlive object is a valid override of gracefulHeartbeat's timings (it changes none).
          if (field === 'keepAlive' && build === presets.gracefulHeartbeat && typeof value === 'object' && !Array.isArray(value)) continue;
          try {
            build({ [field]: value } as never);
            codeless.push(`${build.name} ${field}: accepted ${typeof value}`);
          } catch (err) {
            if (typeof (err as { code?: unknown }).code !== 'string') codeless.push(`${build.name} ${field}: ${(err as Error).message}`);
          }
        }
      }
    }
    expect(codeless).toEqual([]);
  });
});

describe("end() under rstOnClose keeps Writable's events", () => {
  async function exchange(resetOnBye: boolean): Promise<{ events: string[]; atFinish?: { destroyed: boolean; remoteAddress?: string } }> {
    const server = track(
      net.createServer((s) => {
        s.on('error', () => {});
        // A few round trips first (the peer's kernel then delays its ACKs, so the drain waits). On
        // 'bye' the peer resets, or stays open: a peer that closed first would get a FIN, not a reset
        // (test/26-reset-no-harm.test.ts).
        s.on('data', (d) => {
          if (!String(d).includes('bye')) s.write('pong');
          else if (resetOnBye) s.resetAndDestroy();
        });
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    const events: string[] = [];
    let atFinish: { destroyed: boolean; remoteAddress?: string } | undefined;
    c.on('finish', () => {
      events.push('finish');
      atFinish = { destroyed: c.destroyed, remoteAddress: c.remoteAddress };
    });
    c.on('error', (e: NodeJS.ErrnoException) => events.push(`error:${e.code}`));
    const closed = new Promise((resolve) => c.on('close', resolve));
    tune(c, presets.rstOnClose());
    await once(c, 'connect');
    for (let k = 0; k < 5; k++) {
      c.write('ping');
      await once(c, 'data');
    }
    c.end('bye');
    await closed;
    events.push('close');
    return { events, atFinish };
  }

  it("the peer resets while the drain waits: 'finish' (every byte reached the kernel), then ECONNRESET, then 'close', 10 of 10", async () => {
    for (let i = 0; i < 10; i++) {
      const { events } = await exchange(true);
      expect(events[0]).toBe('finish');
      expect(events.at(-1)).toBe('close');
    }
  });

  it("'finish' is emitted while the socket is still open (not destroyed, address known), the reset follows it", async () => {
    for (let i = 0; i < 5; i++) {
      const { events, atFinish } = await exchange(false);
      expect(events).toEqual(['finish', 'close']);
      expect(atFinish).toEqual({ destroyed: false, remoteAddress: '127.0.0.1' });
    }
  });
});

describe('guardOf(socket)', () => {
  it('names the guard tracking a connection while it tracks it, whichever integration made it, and nothing after', async () => {
    const server = track(net.createServer());
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    const [socket] = (await accepted) as [net.Socket];
    expect(guardOf(socket)).toBe(guard);
    expect(guardOf(client)).toBeUndefined();
    const other = new Guard(presets.gracefulHeartbeat());
    other.track(socket);
    expect([guardOf(socket), guard.stats().tracked]).toEqual([other, 0]);
    socket.destroy();
    await once(socket, 'close');
    expect(guardOf(socket)).toBeUndefined();
    for (const v of [undefined, null, 1, 'x']) expect(guardOf(v as never)).toBeUndefined();
    await other.close();
  });
});

describe("a peer's reset is not a dead peer", () => {
  /** A server tuned with a fast-scanning guard, `n` connected clients, and the accepted sockets. */
  async function connected(n: number, onConnection: (s: net.Socket) => void) {
    const server = track(net.createServer(onConnection));
    const guard = tuneServer(server, presets.gracefulHeartbeat({ scanInterval: 50 }));
    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(track(s)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const clients = await Promise.all(
      Array.from({ length: n }, async () => {
        const c = track(net.connect(port, '127.0.0.1'));
        await once(c, 'connect');
        return c;
      }),
    );
    while (accepted.length < n) await once(server, 'connection');
    return { guard, clients, accepted };
  }

  it('200 peers reset while the event loop is busy: a scan that sees the kernel close them first counts none as dead', async () => {
    const { guard, clients, accepted } = await connected(200, (s) => s.resume());
    const errors: string[] = [];
    for (const s of accepted) s.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? ''));
    for (const c of clients) c.resetAndDestroy();
    // The RSTs are in the kernel now; Node has not read them (the loop is ours until we yield).
    const until = performance.now() + 100;
    while (performance.now() < until) {
      /* busy, as a loaded server is */
    }
    const seen = guard.scanNow();
    expect(seen.states.CLOSE).toBe(200); // the kernel closed them all, before Node knew
    await expect.poll(() => guard.stats().tracked, { timeout: 2000, interval: 20 }).toBe(0);
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { dead: 0, reset: 0 } });
    // Node read each reset itself, as without socktune.
    expect(errors).toEqual(Array(200).fill('ECONNRESET'));
  });

  it('a paused socket (its buffer full, so Node stopped reading) whose peer reset: ended with ECONNRESET (reason reset), not counted dead', async () => {
    const { guard, clients, accepted } = await connected(3, (s) => s.pause());
    const errors: string[] = [];
    for (const s of accepted) s.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? ''));
    // Fill each server socket's buffer: Node stops reading the kernel then, and cannot see the RST.
    for (const c of clients) c.write(Buffer.alloc(1024 * 1024));
    await expect.poll(() => accepted.every((s) => s.readableLength >= s.readableHighWaterMark), { timeout: 2000, interval: 20 }).toBe(true);
    for (const c of clients) c.resetAndDestroy();
    await expect.poll(() => guard.stats().tracked, { timeout: 2000, interval: 20 }).toBe(0);
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { dead: 0, reset: 3 } });
    expect(errors).toEqual(['ECONNRESET', 'ECONNRESET', 'ECONNRESET']);
    expect(accepted.every((s) => s.destroyed)).toBe(true);
  });
});
