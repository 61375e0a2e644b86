// Policies on HTTP/2 sessions, 5: the CLOSE_WAIT of HTTP/2. A peer that is done with a session
// says so with GOAWAY (or, below HTTP/2, FIN); Node then closes the session only once every stream
// has ended, so an application that keeps a stream open (a subscription it forgot, a long poll it
// never answers) keeps the session, its socket and its descriptor forever. Under a policy with
// `halfCloseTimeout` the guard closes such a session at that deadline, with the half-close error
// the application sees, and counts it ('half-closed'); the controls without socktune are still
// open. Peers in a namespace of this file's own across a veth pair.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { presets, tune, tuneServer, type Guard } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { VethPeer } from './helpers/veth.js';
import { fixtures, startApp, type App } from './helpers/register.js';

const halfCloseTimeout = 1000;
const scanInterval = 200;
/** The session watch's visit (an eighth of the deadline) or the guard's scan, whichever times it. */
const visit = Math.max(halfCloseTimeout / 8, scanInterval);
const slack = 1000;
const bound = halfCloseTimeout + visit + slack;
const policy = presets.gracefulHeartbeat({ halfCloseTimeout, scanInterval });

const apps: App[] = [];
const sessions: http2.Http2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  for (const a of apps.splice(0)) await a.stop().catch(() => {});
});

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

describe.runIf(canUse('ip', 'ss'))('HTTP/2 sessions the application keeps after the peer is done', () => {
  const peer = new VethPeer('h2hc', 73);

  beforeAll(() => {
    peer.create();
  });
  afterAll(async () => {
    await peer.destroy();
  });

  async function peerServer(): Promise<{ app: App; url: string }> {
    const app = await startApp(join(fixtures, 'h2-node.mjs'), { ns: peer.ns.name, args: ['server', peer.peerAddr, '0'] });
    apps.push(app);
    return { app, url: `http://${peer.peerAddr}:${app.ready.port as number}` };
  }

  /** A client session here with /stream open (the application keeps reading it, it never ends). */
  async function keeper(url: string, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
    const session = http2.connect(url, options);
    sessions.push(session);
    const stream = session.request({ ':path': '/stream' });
    stream.on('error', () => {});
    await once(stream, 'data');
    return session;
  }

  it(`the server sent GOAWAY and the client keeps its stream: tune()d, closed with ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT within ${bound} ms; untuned, still open`, async () => {
    const { app, url } = await peerServer();
    const tuned = await keeper(url);
    tune(tuned, policy);
    const plain = await keeper(url);
    const w = watch(tuned);
    const control = watch(plain);
    const goawayAt = performance.now();
    expect(await app.send('goaway')).toEqual({ sent: 2 });
    await until(() => w.closedAt !== 0, bound + 1000);
    const after = w.closedAt - goawayAt;
    console.log(JSON.stringify({ goawayKept: { side: 'client (tune)', halfCloseTimeout, closedAfterMs: Math.round(after) } }));
    expect(w.error).toMatchObject({ code: 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT', reason: 'half-closed' });
    expect(after).toBeGreaterThanOrEqual(halfCloseTimeout);
    expect(after).toBeLessThanOrEqual(bound);
    await sleep(Math.max(0, goawayAt + bound + 1000 - performance.now()));
    // Node closes a session on a GOAWAY only when its streams are done: the control still waits.
    expect(control).toEqual({ closedAt: 0 });
    expect(plain.closed && !plain.destroyed).toBe(true);
  }, 20_000);

  it(`the client sent GOAWAY and the server keeps the stream: under tuneServer, closed within ${bound} ms and counted 'half-closed'; a plain server's stays`, async () => {
    const make = (tuned: boolean) => {
      const s = http2.createServer();
      s.on('stream', (stream, headers) => {
        stream.on('error', () => {});
        stream.respond({ ':status': 200 });
        if (headers[':path'] === '/stream')
          stream.write('first chunk\n'); // and never ends: the application keeps it
        else stream.end('ok');
      });
      const seen: Array<{ session: http2.ServerHttp2Session; w: Watched }> = [];
      s.on('session', (session: http2.ServerHttp2Session) => seen.push({ session, w: watch(session) }));
      const guard: Guard | undefined = tuned ? tuneServer(s, policy) : undefined;
      return { s, seen, guard };
    };
    const tuned = make(true);
    const plain = make(false);
    try {
      const clients: App[] = [];
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
      const goawayAt = performance.now();
      for (const c of clients) expect(await c.send('goaway')).toEqual({ sent: 1 });
      const [mine] = tuned.seen;
      await until(() => mine.w.closedAt !== 0, bound + 1000);
      const after = mine.w.closedAt - goawayAt;
      console.log(JSON.stringify({ goawayKept: { side: 'server (tuneServer)', halfCloseTimeout, closedAfterMs: Math.round(after) } }));
      expect(after).toBeGreaterThanOrEqual(halfCloseTimeout);
      expect(after).toBeLessThanOrEqual(bound);
      expect(tuned.guard!.stats().closed['half-closed']).toBe(1);
      await sleep(Math.max(0, goawayAt + bound + 1000 - performance.now()));
      expect(plain.seen[0].w.closedAt).toBe(0);
    } finally {
      for (const { s, seen } of [tuned, plain]) {
        for (const { session } of seen) session.destroy();
        s.close();
      }
    }
  }, 20_000);

  it(`the server's FIN under a session whose socket stays half-open (allowHalfOpen): tune()d, closed within ${bound} ms, its CLOSE_WAIT gone (ss); untuned, CLOSE_WAIT stays`, async () => {
    const { app, url } = await peerServer();
    const { hostname, port } = new URL(url);
    const halfOpen = { createConnection: () => net.connect({ host: hostname, port: Number(port), allowHalfOpen: true }) };
    const tuned = await keeper(url, halfOpen);
    tune(tuned, policy);
    const plain = await keeper(url, halfOpen);
    const w = watch(tuned);
    const control = watch(plain);
    const closeWait = () => execFileSync('ss', ['-Htan', 'state', 'close-wait', 'dst', peer.peerAddr], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
    const finAt = performance.now();
    expect(await app.send('fin')).toEqual({ sent: 2 });
    await until(() => closeWait() === 2, 2000);
    expect(closeWait()).toBe(2);
    await until(() => w.closedAt !== 0, bound + 1000);
    const after = w.closedAt - finAt;
    console.log(JSON.stringify({ finKept: { side: 'client (tune), allowHalfOpen', halfCloseTimeout, closedAfterMs: Math.round(after) } }));
    expect(w.error).toMatchObject({ code: 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT' });
    expect(after).toBeLessThanOrEqual(bound);
    await sleep(Math.max(0, finAt + bound + 1000 - performance.now()));
    expect(closeWait()).toBe(1);
    expect(control).toEqual({ closedAt: 0 });
  }, 20_000);
});
