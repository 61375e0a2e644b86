// Policies on HTTP/2 sessions, 2: the PING heartbeat. TCP keepalive cannot notice a peer whose
// process is frozen while its kernel answers every probe; a session under the graceful heartbeat
// that has received no frame for the keepalive idle time sends PING, repeats an unanswered one
// after the interval up to the count, and is then closed with an error the application sees
// (ETIMEDOUT, as the kernel declares a dead peer; gRPC reports UNAVAILABLE): one budget,
// idle + interval × count, for the TCP and the HTTP/2 layer.
//
// Real peers in a namespace of this file's own across a veth pair, frozen with SIGSTOP: a
// node:http2 server (the client here is tuned), a node:http2 client (the server here is tuned), a
// grpc-js server (the grpc-js client runs unchanged under socktune/register). Each has its control
// without socktune, still open after the same wait. Whether the peer answered is decided by PING
// ACKs and the bytes Node read (frames), never by a timestamp: a peer frozen for less than the
// budget and a peer that sends frames are never closed, and an idle live peer gets one PING per
// idle time, no more.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { keepAliveBudget, presets, tune, tuneServer, type GuardCloseEvent } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { VethPeer } from './helpers/veth.js';
import { fixtures, startApp, type App } from './helpers/register.js';

/** Whole seconds: the kernel holds keepalive in seconds, and both layers run on the same budget. */
const keepAlive = { idle: 1000, interval: 1000, count: 2 };
const budget = keepAliveBudget(keepAlive);
/** The watch visits every session each eighth of the shortest time it times. */
const tick = Math.min(keepAlive.idle, keepAlive.interval) / 8;
/** testing.md's slack on second-scale bounds, for a loaded 2-core machine. */
const slack = 1000;
const bound = budget + 2 * tick + slack;
const policy = presets.gracefulHeartbeat({ keepAlive });
const policyJson = JSON.stringify({ preset: 'gracefulHeartbeat', keepAlive });

const apps: App[] = [];
const sessions: http2.Http2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  for (const a of apps.splice(0)) await a.stop().catch(() => {});
});

function connect(url: string): http2.ClientHttp2Session {
  const session = http2.connect(url);
  sessions.push(session);
  return session;
}

/** Opens /stream (a response that never ends) and resolves once its first chunk arrived. */
async function subscribe(session: http2.ClientHttp2Session): Promise<http2.ClientHttp2Stream> {
  const stream = session.request({ ':path': '/stream' });
  stream.on('error', () => {});
  await once(stream, 'data');
  return stream;
}

interface Watched {
  error?: Error & { code?: string };
  closedAt: number;
}

function watch(session: http2.Http2Session): Watched {
  const w: Watched = { closedAt: 0 };
  session.on('error', (err) => (w.error = err));
  session.on('close', () => (w.closedAt = performance.now()));
  return w;
}

async function until(test: () => boolean, within: number): Promise<void> {
  const deadline = performance.now() + within;
  while (!test() && performance.now() < deadline) await sleep(20);
}

describe.runIf(canUse('ip'))('the PING heartbeat on HTTP/2 sessions (peer frozen with SIGSTOP)', () => {
  const peer = new VethPeer('h2hb', 70);

  beforeAll(() => {
    peer.create();
  });
  afterAll(async () => {
    await peer.destroy();
  });

  async function server(args: string[] = []): Promise<App> {
    const app = await startApp(join(fixtures, 'h2-node.mjs'), { ns: peer.ns.name, args: ['server', peer.peerAddr, '0', ...args] });
    apps.push(app);
    return app;
  }

  it(`a node:http2 client session (tune): ETIMEDOUT (reason heartbeat) within I + C·V + ${2 * tick + slack} ms of the freeze; untuned, still open after that and 2 s more`, async () => {
    const srv = await server();
    const url = `http://${peer.peerAddr}:${srv.ready.port as number}`;
    const tuned = connect(url);
    tune(tuned, policy);
    const plain = connect(url);
    const w = watch(tuned);
    const control = watch(plain);
    await subscribe(tuned);
    await subscribe(plain);
    const frozenAt = performance.now();
    srv.child.kill('SIGSTOP');
    try {
      await until(() => w.closedAt !== 0, bound + 2000);
      const after = w.closedAt - frozenAt;
      console.log(JSON.stringify({ frozenServer: { client: 'node:http2 tune', budget, closedAfterMs: Math.round(after) } }));
      expect(w.error).toMatchObject({ code: 'ETIMEDOUT', reason: 'heartbeat' });
      expect(after).toBeLessThanOrEqual(bound);
      // The PINGs had their chance: the first unanswered one went out at the freeze at the
      // earliest (one before it was answered), and the close came count × interval after it.
      expect(after).toBeGreaterThanOrEqual(keepAlive.count * keepAlive.interval - tick);
      await sleep(Math.max(0, frozenAt + bound + 2000 - performance.now()));
      expect(control).toEqual({ closedAt: 0 });
      expect(plain.destroyed).toBe(false);
    } finally {
      srv.child.kill('SIGCONT');
    }
  }, 30_000);

  it(`a node:http2 server's session (tuneServer): closed within I + C·V + ${2 * tick + slack} ms of the client's freeze, counted by the guard; untuned, still open`, async () => {
    const make = (tuned: boolean) => {
      const s = http2.createServer();
      s.on('stream', (stream, headers) => {
        stream.on('error', () => {});
        stream.respond({ ':status': 200 });
        if (headers[':path'] === '/stream') stream.write('first chunk\n');
        else stream.end('ok');
      });
      const seen: Array<{ session: http2.ServerHttp2Session; w: Watched }> = [];
      s.on('session', (session: http2.ServerHttp2Session) => seen.push({ session, w: watch(session) }));
      const guard = tuned ? tuneServer(s, policy) : undefined;
      return { s, seen, guard };
    };
    const tuned = make(true);
    const plain = make(false);
    const closes: GuardCloseEvent[] = [];
    tuned.guard!.on('closed', (e) => closes.push(e));
    const clients: App[] = [];
    try {
      for (const { s } of [tuned, plain]) {
        s.listen(0, peer.hostAddr);
        await once(s, 'listening');
        const app = await startApp(join(fixtures, 'h2-node.mjs'), {
          ns: peer.ns.name,
          args: ['client', `http://${peer.hostAddr}:${(s.address() as net.AddressInfo).port}`],
        });
        apps.push(app);
        clients.push(app);
      }
      const frozenAt = performance.now();
      for (const c of clients) c.child.kill('SIGSTOP');
      const [mine] = tuned.seen;
      await until(() => mine.w.closedAt !== 0, bound + 2000);
      const after = mine.w.closedAt - frozenAt;
      console.log(JSON.stringify({ frozenClient: { server: 'node:http2 tuneServer', budget, closedAfterMs: Math.round(after) } }));
      expect(after).toBeLessThanOrEqual(bound);
      expect(after).toBeGreaterThanOrEqual(keepAlive.count * keepAlive.interval - tick);
      expect(tuned.guard!.stats().closed.heartbeat).toBe(1);
      expect(closes.map((e) => e.reason)).toEqual(['heartbeat']);
      await sleep(Math.max(0, frozenAt + bound + 2000 - performance.now()));
      expect(plain.seen[0].w.closedAt).toBe(0);
      expect(plain.seen[0].session.destroyed).toBe(false);
    } finally {
      for (const c of clients) c.child.kill('SIGCONT');
      for (const { s, seen } of [tuned, plain]) {
        for (const { session } of seen) session.destroy();
        s.close();
      }
    }
  }, 30_000);

  it(`a grpc-js client unchanged under socktune/register: its call fails (UNAVAILABLE) within I + C·V + ${2 * tick + slack} ms of the server's freeze; without socktune the call stays open`, async () => {
    const srv = await startApp(join(fixtures, 'h2-grpc.mjs'), { ns: peer.ns.name, args: ['server', peer.peerAddr, '0'] });
    apps.push(srv);
    const target = `${peer.peerAddr}:${srv.ready.port as number}`;
    const env = { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: policyJson };
    const registered = await startApp(join(fixtures, 'h2-grpc.mjs'), { env, args: ['client', target] });
    const plain = await startApp(join(fixtures, 'h2-grpc.mjs'), { args: ['client', target] });
    apps.push(registered, plain);
    for (const c of [registered, plain]) expect(await c.send('watch')).toEqual({ watching: true });
    expect(((await registered.send('stats')) as { register: { sessions: number } }).register.sessions).toBe(1);
    const frozenAt = Date.now();
    srv.child.kill('SIGSTOP');
    try {
      const failed = await registered.until((e) => e.event === 'error', bound + 2000);
      expect(failed, 'the registered client noticed nothing').toBeDefined();
      const after = (failed!.at as number) - frozenAt;
      console.log(JSON.stringify({ frozenServer: { client: 'grpc-js under socktune/register', budget, failedAfterMs: after, status: failed!.code } }));
      expect(failed).toMatchObject({ code: 'UNAVAILABLE' });
      expect(after).toBeLessThanOrEqual(bound);
      const control = await plain.until((e) => e.event === 'error', Math.max(0, frozenAt + bound + 2000 - Date.now()));
      expect(control).toBeUndefined();
    } finally {
      srv.child.kill('SIGCONT');
    }
  }, 40_000);

  it('a peer frozen for less than the budget answers the PINGs it finds on waking: never closed', async () => {
    const srv = await server();
    const session = connect(`http://${peer.peerAddr}:${srv.ready.port as number}`);
    tune(session, policy);
    const w = watch(session);
    await subscribe(session);
    srv.child.kill('SIGSTOP');
    // Past the idle time and the first PING's interval, inside the budget: PINGs are out, unanswered.
    await sleep(keepAlive.idle + keepAlive.interval / 2);
    srv.child.kill('SIGCONT');
    await sleep(budget + slack);
    expect(w).toEqual({ closedAt: 0 });
    const req = session.request({ ':path': '/ok' });
    req.setEncoding('utf8');
    let body = '';
    for await (const chunk of req) body += chunk;
    expect(body).toBe('ok');
  }, 20_000);

  it('a live idle peer gets one PING per idle time, and the session stays open', async () => {
    const srv = await server();
    const session = connect(`http://${peer.peerAddr}:${srv.ready.port as number}`);
    tune(session, policy);
    const w = watch(session);
    await subscribe(session);
    const start = (await srv.send('stats')) as { pings: number };
    const window = 2 * budget;
    await sleep(window);
    const { pings } = (await srv.send('stats')) as { pings: number };
    const sent = pings - start.pings;
    console.log(JSON.stringify({ liveIdlePeer: { windowMs: window, idle: keepAlive.idle, pings: sent } }));
    expect(w).toEqual({ closedAt: 0 });
    // A PING, its ACK, then idle again: at most one per idle time (plus one a visit apart), and some.
    expect(sent).toBeGreaterThanOrEqual(Math.floor(window / (keepAlive.idle + 2 * tick + slack)));
    expect(sent).toBeLessThanOrEqual(Math.ceil(window / keepAlive.idle));
  }, 30_000);

  it('a peer that sends frames more often than the idle time is never pinged', async () => {
    const s = http2.createServer();
    s.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.respond({ ':status': 200 });
      const timer = setInterval(() => stream.write('tick\n'), keepAlive.idle / 3);
      stream.on('close', () => clearInterval(timer));
    });
    let pings = 0;
    s.on('session', (session) => session.on('ping', () => pings++));
    s.listen(0, peer.hostAddr);
    await once(s, 'listening');
    try {
      const session = connect(`http://${peer.hostAddr}:${(s.address() as net.AddressInfo).port}`);
      tune(session, policy);
      const w = watch(session);
      const stream = await subscribe(session);
      stream.resume();
      await sleep(2 * budget);
      expect({ pings, ...w }).toEqual({ pings: 0, closedAt: 0 });
    } finally {
      for (const session of sessions.splice(0)) session.destroy();
      s.close();
    }
  }, 20_000);

  it('jitter: sessions opened together ping at spread times, each no later than the idle time and no sooner than its jittered share', async () => {
    const s = http2.createServer();
    const firstPing: number[] = [];
    let opened = 0;
    s.on('session', (session) => {
      session.once('ping', () => firstPing.push(performance.now() - opened));
    });
    s.on('stream', (stream) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    s.listen(0, peer.hostAddr);
    await once(s, 'listening');
    const jittered = presets.gracefulHeartbeat({ keepAlive, http2: { pingJitter: 0.5 } });
    try {
      const url = `http://${peer.hostAddr}:${(s.address() as net.AddressInfo).port}`;
      const list = Array.from({ length: 20 }, () => connect(url));
      for (const session of list) tune(session, jittered);
      await Promise.all(list.map((session) => once(session, 'connect')));
      opened = performance.now();
      await until(() => firstPing.length === list.length, keepAlive.idle + slack);
      const spread = Math.max(...firstPing) - Math.min(...firstPing);
      console.log(
        JSON.stringify({
          jitter: {
            sessions: list.length,
            idle: keepAlive.idle,
            pingJitter: 0.5,
            firstPingMs: { min: Math.round(Math.min(...firstPing)), max: Math.round(Math.max(...firstPing)) },
          },
        }),
      );
      expect(firstPing).toHaveLength(list.length);
      expect(Math.max(...firstPing)).toBeLessThanOrEqual(keepAlive.idle + 2 * tick + slack / 2);
      expect(Math.min(...firstPing)).toBeGreaterThanOrEqual(keepAlive.idle / 2 - 2 * tick);
      expect(spread).toBeGreaterThan(keepAlive.idle / 8);
    } finally {
      for (const session of sessions.splice(0)) session.destroy();
      s.close();
    }
  }, 20_000);
});
