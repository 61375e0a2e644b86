// RST-on-close never turns a clean end into an error, and ends what the process leaves open.
// - A server under socktune/register with rstOnClose: a plain Node client that reads each complete
//   response a little late (20 ms after 'response') gets every one. Accepted connections are reset
//   only on timeouts unless the policy says `resetAccepted: 'always'`; that arm shows the harm.
// - A client whose peer closed first (the peer's FIN arrived but was not read yet: kernel state
//   CLOSE_WAIT) ends with FIN, and gets its 'end'.
// - Connections still open when a job exits (process.exit, the event loop running out with a pool,
//   fetch's pool) end with RST: no TIME_WAIT on the job's side; `agent.closeIdle()` does the same
//   while the process lives.
// Real processes under socktune/register in a namespace of this file's own, real kernel; TIME_WAIT
// counted by ss and resets by nstat in the namespace of the side that closes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { presets, tcpState, tune } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { nstat, ssCount } from './helpers/netns.js';
import { VethPeer } from './helpers/veth.js';
import { startApp, runToEnd, type App } from './helpers/register.js';
import { closeAll, listen, track } from './helpers/sockets.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const register = (policy: string) => ({ NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: policy });

/** GET with Connection: close, reading the response `lateMs` after 'response': 'ok' or the error code. */
function lateGet(host: string, port: number, lateMs: number, size: number): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/', agent: false }, (res) => {
      res.pause();
      let got = 0;
      res.on('data', (d: Buffer) => (got += d.length));
      res.on('end', () => resolve(got === size ? 'ok' : `short ${got}`));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      res.on('aborted', () => resolve('aborted'));
      setTimeout(() => res.resume(), lateMs);
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe.runIf(canUse('ip', 'ss', 'nstat'))('a server under socktune/register with rstOnClose, and a plain client that reads late', () => {
  const peer = new VethPeer('rlr', 126);
  const SIZE = 16 * 1024;
  const N = 200;
  const apps: App[] = [];

  beforeAll(() => void peer.create());
  afterAll(async () => {
    for (const app of apps) await app.stop();
    await peer.destroy();
  });

  async function serve(policy: string): Promise<App> {
    const app = await startApp(fixture('late-reader-server.mjs'), { ns: peer.ns.name, env: register(policy), args: [peer.peerAddr, String(SIZE)] });
    apps.push(app);
    return app;
  }

  async function run(app: App): Promise<Record<string, number>> {
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < N; i++) {
      const outcome = await lateGet(peer.peerAddr, app.ready.port as number, 20, SIZE);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    return outcomes;
  }

  it(`gracefulHeartbeat+rstOnClose (the README's process-wide policy): ${N} of ${N} complete responses read 20 ms late arrive, no ECONNRESET`, async () => {
    const app = await serve('gracefulHeartbeat+rstOnClose');
    const outcomes = await run(app);
    console.log('late reader, default resetAccepted:', JSON.stringify(outcomes));
    expect(outcomes).toEqual({ ok: N });
    expect(((await app.send('stats')) as { stats: { tuned: number } }).stats.tuned).toBeGreaterThanOrEqual(N);
  });

  it("the opt-in resetAccepted: 'always' resets accepted connections too: the same client sees ECONNRESET (the harm the default avoids)", async () => {
    const app = await serve(JSON.stringify({ preset: 'gracefulHeartbeat+rstOnClose', resetAccepted: 'always' }));
    const before = await nstat(peer.ns, 'TcpOutRsts');
    const outcomes = await run(app);
    const after = await nstat(peer.ns, 'TcpOutRsts');
    console.log("late reader, resetAccepted 'always':", JSON.stringify({ ...outcomes, serverRsts: after.TcpOutRsts - before.TcpOutRsts }));
    // Each ECONNRESET is an RST the server sent. A connection whose client read its response and
    // closed before the server's own close came (a loaded machine delays the server) keeps FIN: the
    // peer closed first, which no policy resets.
    expect(outcomes.ECONNRESET ?? 0).toBeGreaterThan(0);
    expect(after.TcpOutRsts - before.TcpOutRsts).toBeGreaterThanOrEqual(outcomes.ECONNRESET ?? 0);
  });
});

describe('a client whose peer closed first ends with FIN and gets its end', () => {
  afterEach(closeAll);
  const TRIALS = 50;

  it(`the peer's FIN arrived unread (kernel CLOSE_WAIT) when end() is called: 'end' ${TRIALS} of ${TRIALS} times`, async () => {
    const server = await listen('127.0.0.1');
    server.on('connection', (s) => s.end('bye'));
    const port = (server.address() as net.AddressInfo).port;
    let ends = 0;
    for (let i = 0; i < TRIALS; i++) {
      const client = track(net.connect(port, '127.0.0.1'));
      tune(client, presets.rstOnClose());
      client.pause();
      await once(client, 'connect');
      // The peer's response and FIN reach the kernel; Node, paused, reads neither.
      await expect.poll(() => tcpState(client), { timeout: 1000, interval: 2 }).toBe('CLOSE_WAIT');
      const ended = new Promise<boolean>((resolve) => {
        client.once('end', () => resolve(true));
        client.once('close', () => resolve(false));
      });
      client.end();
      client.resume();
      if (await ended) ends++;
      await once(client, 'close').catch(() => undefined);
    }
    expect(ends).toBe(TRIALS);
  });
});

describe.runIf(canUse('ip', 'ss', 'nstat'))('connections a job leaves open end with RST at exit', () => {
  const peer = new VethPeer('rex', 127);
  let server: http.Server;
  let port: number;
  const COUNT = 4;

  beforeAll(async () => {
    peer.create();
    server = http.createServer((_req, res) => res.end('ok'));
    server.keepAliveTimeout = 60_000;
    server.listen(0, peer.hostAddr);
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    server.close();
    await peer.destroy();
  });

  /** Runs the job in the peer namespace and returns the TIME_WAIT and resets it left there. */
  async function job(mode: string, env: Record<string, string>): Promise<{ timeWait: number; resets: number; output: string }> {
    await peer.ns.exec('ss', ['-K', 'state', 'time-wait']).catch(() => '');
    const before = await nstat(peer.ns, 'TcpOutRsts');
    const result = await runToEnd([fixture('exit-client.mjs'), peer.hostAddr, String(port), mode, String(COUNT)], env, 30_000, peer.ns.name);
    expect(result.code, result.stderr).toBe(0);
    await sleep(100);
    const after = await nstat(peer.ns, 'TcpOutRsts');
    return { timeWait: await ssCount('time-wait', peer.ns), resets: after.TcpOutRsts - before.TcpOutRsts, output: result.stdout };
  }

  it.each(['exit', 'natural', 'fetch'])(
    '%s: under rstOnClose no TIME_WAIT is left and every connection was reset; plain Node leaves one per connection',
    async (mode) => {
      const plain = await job(mode, {});
      const tuned = await job(mode, register('rstOnClose'));
      console.log(
        `exit ${mode}: plain ${JSON.stringify({ timeWait: plain.timeWait, resets: plain.resets })}, rstOnClose ${JSON.stringify({ timeWait: tuned.timeWait, resets: tuned.resets })}`,
      );
      expect(plain.timeWait).toBeGreaterThanOrEqual(1);
      expect(tuned.timeWait).toBe(0);
      expect(tuned.resets).toBeGreaterThanOrEqual(1);
    },
  );

  it('agent.closeIdle() resets the idle pooled connections while the process runs', async () => {
    await peer.ns.exec('ss', ['-K', 'state', 'time-wait']).catch(() => '');
    const before = await nstat(peer.ns, 'TcpOutRsts');
    const app = await startApp(fixture('exit-client.mjs'), { ns: peer.ns.name, args: [peer.hostAddr, String(port), 'closeIdle', String(COUNT)] });
    try {
      expect(app.ready.closed).toBe(COUNT);
      const after = await nstat(peer.ns, 'TcpOutRsts');
      expect(after.TcpOutRsts - before.TcpOutRsts).toBe(COUNT);
      expect(await ssCount('time-wait', peer.ns)).toBe(0);
    } finally {
      await app.stop();
    }
  });
});
