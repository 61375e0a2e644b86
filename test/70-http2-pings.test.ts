// Policies on HTTP/2 sessions, 3: gRPC's keepalive rules (gRFC A8). A server policy sets the
// shortest time it accepts between a client's PINGs when it sent no data between them
// (`http2.minPingInterval`); a client that pings faster gets GOAWAY ENHANCE_YOUR_CALM with
// `too_many_pings` after `maxPingStrikes`, as gRPC servers do, and grpc-js doubles its keepalive
// time on it. socktune's own client side backs off the same way: the time between its PINGs to a
// server that sent too_many_pings doubles, until that server accepts it.
//
// Peers: grpc-js servers and clients (a server unchanged under socktune/register) in a namespace
// of this file's own across a veth pair, and node:http2 sessions here on loopback.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { presets, tune, tuneServer, type Guard } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { VethPeer } from './helpers/veth.js';
import { fixtures, startApp, type App } from './helpers/register.js';

const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
const apps: App[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.stop().catch(() => {});
});

interface Goaway {
  code: number;
  data: string;
}

describe.runIf(canUse('ip'))('a socktune server enforces the minimum time between PINGs (grpc-js clients)', () => {
  const peer = new VethPeer('h2pg', 75);
  /** What the server accepts: one PING a second without data, two strikes. */
  const minPingInterval = 1000;
  const serverEnv = (limit: boolean) => ({
    NODE_OPTIONS: '--import=socktune/register',
    SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', ...(limit ? { http2: { minPingInterval, maxPingStrikes: 2 } } : {}) }),
  });

  beforeAll(() => {
    peer.create();
  });
  afterAll(async () => {
    await peer.destroy();
  });

  async function grpcServer(env: Record<string, string>, options?: object): Promise<{ app: App; target: string }> {
    const app = await startApp(join(fixtures, 'h2-grpc.mjs'), {
      ns: peer.ns.name,
      env,
      args: ['server', peer.peerAddr, '0', ...(options ? [JSON.stringify(options)] : [])],
    });
    apps.push(app);
    return { app, target: `${peer.peerAddr}:${app.ready.port as number}` };
  }

  /**
   * A grpc-js client with `options` and a subscription (a streaming call, opened again when it
   * fails): grpc-js pings only while calls are open, by default.
   */
  async function grpcClient(target: string, options: object, env: Record<string, string> = {}): Promise<App> {
    const app = await startApp(join(fixtures, 'h2-grpc.mjs'), { env, args: ['client', target, JSON.stringify(options)] });
    apps.push(app);
    expect(await app.send('subscribe')).toEqual({ watching: true });
    return app;
  }

  const stats = async (app: App) => (await app.send('stats')) as { sessions: number; goaways: Goaway[]; register?: { sessions: number } };

  it(`grpc-js with keepalive_time_ms 200 against a socktune server allowing ${minPingInterval} ms: GOAWAY ENHANCE_YOUR_CALM too_many_pings, then grpc-js doubles its time until it is accepted; a plain grpc-js server sends none`, async () => {
    const limited = await grpcServer(serverEnv(true));
    const plain = await grpcServer({});
    const fast = { 'grpc.keepalive_time_ms': 200, 'grpc.keepalive_timeout_ms': 5000 };
    const client = await grpcClient(limited.target, fast);
    const control = await grpcClient(plain.target, fast);
    // 200 → 400 → 800 → 1600 ms: three complaints, each after the fourth PING of a session.
    await sleep(4 * (200 + 400 + 800) + 2000);
    const seen = await stats(client);
    const closed = ((await limited.app.send('stats')) as { closed: Record<string, number> }).closed;
    console.log(
      JSON.stringify({
        tooManyPings: {
          clientKeepaliveMs: 200,
          minPingInterval,
          goaways: seen.goaways.length,
          sessions: seen.sessions,
          serverClosed: closed['too-many-pings'],
        },
      }),
    );
    for (const g of seen.goaways) expect(g).toMatchObject({ code: NGHTTP2_ENHANCE_YOUR_CALM, data: 'too_many_pings' });
    expect(closed['too-many-pings']).toBe(seen.goaways.length);
    // grpc-js doubled its keepalive time on each (a new session each time): at 1600 ms the server
    // accepts it, and no more come.
    expect(seen.goaways).toHaveLength(3);
    expect(seen.sessions).toBe(4);
    const later = (await stats(client)).goaways.length;
    await sleep(3 * 1600);
    expect((await stats(client)).goaways.length).toBe(later);
    // grpc-js servers enforce no limit (their source has no ping strike): the control sees nothing.
    expect(await stats(control)).toMatchObject({ goaways: [], sessions: 1 });
  }, 40_000);

  it(`a grpc-js client within the limit (keepalive_time_ms 1500 ≥ ${minPingInterval}) is never sent GOAWAY`, async () => {
    const limited = await grpcServer(serverEnv(true));
    const client = await grpcClient(limited.target, { 'grpc.keepalive_time_ms': 1500 });
    await sleep(5 * 1500);
    expect(await stats(client)).toMatchObject({ goaways: [], sessions: 1 });
  }, 20_000);

  it('a socktune client (grpc-js under socktune/register, PING after 250 ms idle) against a socktune server allowing 900 ms: too_many_pings twice, then its PINGs to that server come 1 s apart and are accepted', async () => {
    const limited = await grpcServer({
      NODE_OPTIONS: '--import=socktune/register',
      SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', http2: { minPingInterval: 900 } }),
    });
    const env = {
      NODE_OPTIONS: '--import=socktune/register',
      SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', keepAlive: { idle: 250, interval: 1000, count: 2 } }),
    };
    const client = await grpcClient(limited.target, {}, env);
    // 250 → 500 → 1000 ms: each session is told after its fourth PING.
    await sleep(4 * (250 + 500) + 1000 + 5 * 1000);
    const seen = await stats(client);
    console.log(
      JSON.stringify({ socktuneClientBackoff: { idle: 250, minPingInterval: 900, goaways: seen.goaways.map((g) => g.data), sessions: seen.sessions } }),
    );
    expect(seen.goaways).toEqual([
      expect.objectContaining({ code: NGHTTP2_ENHANCE_YOUR_CALM, data: 'too_many_pings' }),
      expect.objectContaining({ code: NGHTTP2_ENHANCE_YOUR_CALM, data: 'too_many_pings' }),
    ]);
    expect(seen.sessions).toBe(3);
  }, 30_000);

  it('a socktune client (grpc-js under socktune/register, PING after 1 s idle) against a grpc-js server (keepalive_permit_without_calls 0, the 5-minute default minimum): no GOAWAY, one session', async () => {
    const server = await grpcServer({}, { 'grpc.keepalive_permit_without_calls': 0 });
    const env = {
      NODE_OPTIONS: '--import=socktune/register',
      SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', keepAlive: { idle: 1000, interval: 1000, count: 2 } }),
    };
    const client = await grpcClient(server.target, {}, env);
    await sleep(8000);
    const seen = await stats(client);
    expect(seen).toMatchObject({ goaways: [], sessions: 1 });
    expect(seen.register?.sessions).toBe(1);
  }, 20_000);
});

describe('socktune on both sides: the server limit and the client backoff (node:http2)', () => {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const c of closers.splice(0)) c();
  });

  /** A node:http2 server under a policy with the PING limit; records when each session received each PING. */
  async function limitedServer(
    minPingInterval: number,
    stream?: (s: http2.ServerHttp2Stream) => void,
  ): Promise<{ url: string; guard: Guard; pings: number[][] }> {
    const server = http2.createServer();
    const guard = tuneServer(server, presets.gracefulHeartbeat({ http2: { minPingInterval, maxPingStrikes: 2 } }));
    const pings: number[][] = [];
    const sessions: http2.ServerHttp2Session[] = [];
    server.on('session', (session: http2.ServerHttp2Session) => {
      sessions.push(session);
      const mine: number[] = [];
      pings.push(mine);
      session.on('ping', () => mine.push(performance.now()));
      session.on('error', () => {});
    });
    server.on('stream', (s) => {
      s.on('error', () => {});
      s.respond({ ':status': 200 });
      if (stream) stream(s);
      else s.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => {
      for (const s of sessions) s.destroy();
      server.close();
    });
    return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, guard, pings };
  }

  it('a socktune client pinging faster than the server allows: too_many_pings, and the time between its PINGs to that server doubles until accepted (250 → 500 → 1000 ms ≥ 900)', async () => {
    const minPingInterval = 900;
    const { url, guard, pings } = await limitedServer(minPingInterval);
    const policy = presets.gracefulHeartbeat({ keepAlive: { idle: 250, interval: 1000, count: 2 } });
    const outcomes: Array<{ goaway?: Goaway }> = [];
    // The application opens a new session when the server closed the last one (as gRPC and undici do).
    for (let i = 0; i < 3; i++) {
      const session = http2.connect(url);
      session.on('error', () => {});
      closers.push(() => session.destroy());
      tune(session, policy);
      const outcome: { goaway?: Goaway } = {};
      outcomes.push(outcome);
      session.on('goaway', (code: number, _last: number, data?: Buffer) => (outcome.goaway ??= { code, data: data?.toString() ?? '' }));
      const closed = new Promise((resolve) => session.once('close', resolve));
      const stayed = await Promise.race([closed.then(() => false), sleep(6000).then(() => true)]);
      if (stayed) break;
    }
    const intervals = pings.map((times) => times.slice(1).map((t, k) => Math.round(t - times[k])));
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(
      JSON.stringify({
        backoff: {
          minPingInterval,
          sessions: outcomes.length,
          goaways: outcomes.map((o) => o.goaway?.data ?? null),
          medianPingIntervalMs: intervals.map(median),
        },
      }),
    );
    expect(outcomes.map((o) => o.goaway)).toEqual([
      { code: NGHTTP2_ENHANCE_YOUR_CALM, data: 'too_many_pings' },
      { code: NGHTTP2_ENHANCE_YOUR_CALM, data: 'too_many_pings' },
      undefined,
    ]);
    expect(guard.stats().closed['too-many-pings']).toBe(2);
    // Each session pinged at about twice the pace of the one before (the idle time, doubled).
    const [first, second, third] = intervals.map(median);
    expect(first).toBeGreaterThanOrEqual(250);
    expect(second).toBeGreaterThanOrEqual(500);
    expect(third).toBeGreaterThanOrEqual(minPingInterval);
    expect(pings[2].length).toBeGreaterThanOrEqual(3);
  }, 30_000);

  it('a server that sends data between the PINGs gives no strike: a client pinging every 100 ms while data flows is never sent GOAWAY; the same pings without data are', async () => {
    const minPingInterval = 1000;
    const streaming = await limitedServer(minPingInterval, (s) => {
      const timer = setInterval(() => s.write('tick\n'), 50);
      s.on('close', () => clearInterval(timer));
    });
    const silent = await limitedServer(minPingInterval, () => {});
    const run = async (url: string) => {
      const session = http2.connect(url);
      session.on('error', () => {});
      closers.push(() => session.destroy());
      let goaway: string | undefined;
      session.on('goaway', (_code: number, _last: number, data?: Buffer) => (goaway ??= data?.toString()));
      const req = session.request({ ':path': '/' });
      req.on('error', () => {});
      req.resume();
      await once(session, 'connect');
      for (let i = 0; i < 15 && !session.destroyed; i++) {
        session.ping(() => {});
        await sleep(100);
      }
      return goaway;
    };
    expect(await run(streaming.url)).toBeUndefined();
    expect(await run(silent.url)).toBe('too_many_pings');
  }, 20_000);
});
