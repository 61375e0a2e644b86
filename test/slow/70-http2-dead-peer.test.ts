// The figures of the HTTP/2 heartbeat, with the recipes' budget (keepalive 2 s / 1 s / 3, I + C·V =
// 5 s): a peer frozen with SIGSTOP (its kernel answers every keepalive probe) and a peer that
// vanished (nftables drops in its namespace: no RST, no ICMP). For each fault, three sessions under
// socktune and their controls without it, side by side:
//   - a grpc-js client, unchanged under socktune/register, with a streaming call open;
//   - a node:http2 client session (tune), with a stream open;
//   - a node:http2 server's session (tuneServer), its client in the peer namespace.
// Right before the fault every session exchanges a request and its answer. Every policy session is
// closed within the budget + the watch's visits + testing.md's 1 s after the fault, and not before
// its PINGs had their interval × count; the controls are still open a minute later (how long a grpc-js call waits for a frozen
// server without socktune: as long as the server stays frozen).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { keepAliveBudget, presets, tune, tuneServer } from '../../src/index.js';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import { fixtures, recipeKeepAlive, startApp, type App } from '../helpers/register.js';

const keepAlive = recipeKeepAlive;
const budget = keepAliveBudget(keepAlive);
const tick = Math.min(keepAlive.idle, keepAlive.interval) / 8;
const slack = 1000;
const bound = budget + 2 * tick + slack;
const controlWindow = 60_000;
const policy = presets.gracefulHeartbeat({ keepAlive });
const registerEnv = { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', keepAlive }) };

type Fault = 'frozen' | 'vanished';

interface Arm {
  fault: Fault;
  what: string;
  socktune: boolean;
  /** Date.now() of the first error or close, 0 while open. */
  endedAt: number;
  error?: string;
}

describe.runIf(canUse('ip', 'nft'))('HTTP/2 sessions whose peer froze or vanished (budget 5 s)', () => {
  const peers: Record<Fault, VethPeer> = { frozen: new VethPeer('h2fz', 71), vanished: new VethPeer('h2vn', 72) };
  const apps: App[] = [];
  const sessions: http2.Http2Session[] = [];
  const servers: http2.Http2Server[] = [];
  const arms: Arm[] = [];
  const peerApps: Record<Fault, App[]> = { frozen: [], vanished: [] };
  const faultAt: Record<Fault, number> = { frozen: 0, vanished: 0 };
  const exchanges: Record<Fault, Array<() => Promise<unknown>>> = { frozen: [], vanished: [] };

  function arm(fault: Fault, what: string, socktune: boolean): Arm {
    const a: Arm = { fault, what, socktune, endedAt: 0 };
    arms.push(a);
    return a;
  }

  function follow(session: http2.Http2Session, a: Arm): void {
    session.on('error', (err: Error & { code?: string }) => {
      a.error ??= err.code;
      a.endedAt ||= Date.now();
    });
    session.on('close', () => (a.endedAt ||= Date.now()));
  }

  async function peerApp(fault: Fault, args: string[], env?: Record<string, string>): Promise<App> {
    const app = await startApp(join(fixtures, args[0] === 'server' || args[0] === 'client' ? 'h2-node.mjs' : args.shift()!), {
      ns: peers[fault].ns.name,
      args,
      env,
    });
    apps.push(app);
    peerApps[fault].push(app);
    return app;
  }

  async function setUp(fault: Fault): Promise<void> {
    const peer = peers[fault];
    peer.create();
    // grpc-js: a server in the peer namespace, a client under socktune/register and a plain one here.
    const grpcServer = await peerApp(fault, ['h2-grpc.mjs', 'server', peer.peerAddr, '0']);
    const target = `${peer.peerAddr}:${grpcServer.ready.port as number}`;
    for (const socktune of [true, false]) {
      const client = await startApp(join(fixtures, 'h2-grpc.mjs'), { env: socktune ? registerEnv : {}, args: ['client', target] });
      apps.push(client);
      expect(await client.send('watch')).toEqual({ watching: true });
      const a = arm(fault, 'grpc-js client', socktune);
      void client
        .until((e) => e.event === 'error', 10 * controlWindow)
        .then(
          (e) => {
            if (e === undefined) return;
            a.endedAt = e.at as number;
            a.error = e.code as string;
          },
          () => {},
        ); // the app stops at the end
      exchanges[fault].push(() => client.send('unary'));
    }
    // node:http2 clients here, a server in the peer namespace.
    const h2Server = await peerApp(fault, ['server', peer.peerAddr, '0']);
    for (const socktune of [true, false]) {
      const session = http2.connect(`http://${peer.peerAddr}:${h2Server.ready.port as number}`);
      sessions.push(session);
      if (socktune) tune(session, policy);
      follow(session, arm(fault, 'node:http2 client', socktune));
      const stream = session.request({ ':path': '/stream' });
      stream.on('error', () => {});
      await once(stream, 'data');
      exchanges[fault].push(async () => {
        const req = session.request({ ':path': '/ok' });
        req.resume();
        await once(req, 'end');
      });
    }
    // node:http2 servers here, their clients in the peer namespace.
    for (const socktune of [true, false]) {
      const server = http2.createServer();
      servers.push(server);
      if (socktune) tuneServer(server, policy);
      const a = arm(fault, "node:http2 server's session", socktune);
      server.on('session', (session) => {
        sessions.push(session);
        follow(session, a);
      });
      server.on('stream', (stream, headers) => {
        stream.on('error', () => {});
        stream.respond({ ':status': 200 });
        if (headers[':path'] === '/stream') stream.write('first chunk\n');
        else stream.end('ok');
      });
      server.listen(0, peer.hostAddr);
      await once(server, 'listening');
      const client = await peerApp(fault, ['client', `http://${peer.hostAddr}:${(server.address() as net.AddressInfo).port}`]);
      exchanges[fault].push(() => client.send('request'));
    }
  }

  /** Every session exchanges a request and its answer, so each has just heard from its peer; then the fault. */
  async function fault(which: Fault, inject: () => void): Promise<void> {
    await Promise.all(exchanges[which].map((exchange) => exchange()));
    faultAt[which] = Date.now();
    inject();
  }

  beforeAll(async () => {
    await setUp('frozen');
    await setUp('vanished');
    await fault('frozen', () => {
      for (const app of peerApps.frozen) app.child.kill('SIGSTOP');
    });
    await fault('vanished', () => peers.vanished.vanish());
  }, 120_000);

  afterAll(async () => {
    for (const app of peerApps.frozen) app.child.kill('SIGCONT');
    for (const s of sessions) s.destroy();
    for (const s of servers) s.close();
    for (const app of apps) await app.stop().catch(() => {});
    for (const peer of Object.values(peers)) await peer.destroy();
  });

  it.each(['frozen', 'vanished'] as const)(
    `%s peer: every socktune session closed within I + C·V + ${2 * tick + slack} ms`,
    async (fault) => {
      const mine = arms.filter((a) => a.fault === fault && a.socktune);
      const deadline = faultAt[fault] + bound + 3000;
      while (mine.some((a) => a.endedAt === 0) && Date.now() < deadline) await sleep(50);
      const figures = Object.fromEntries(mine.map((a) => [a.what, { afterMs: a.endedAt === 0 ? null : a.endedAt - faultAt[fault], error: a.error }]));
      console.log(JSON.stringify({ [fault]: { budget, socktune: figures } }));
      for (const a of mine) {
        expect(a.endedAt, `${fault} ${a.what}: still open`).not.toBe(0);
        expect(a.endedAt - faultAt[fault], `${fault} ${a.what}`).toBeLessThanOrEqual(bound);
        expect(a.endedAt - faultAt[fault], `${fault} ${a.what}`).toBeGreaterThanOrEqual(keepAlive.count * keepAlive.interval - tick);
      }
      // What the applications saw: gRPC's UNAVAILABLE, a dead peer's ETIMEDOUT on the client session.
      expect(mine.find((a) => a.what === 'grpc-js client')!.error).toBe('UNAVAILABLE');
      expect(mine.find((a) => a.what === 'node:http2 client')!.error).toBe('ETIMEDOUT');
    },
    30_000,
  );

  it(
    `without socktune: every control session still open ${controlWindow / 1000} s after the fault`,
    async () => {
      await sleep(Math.max(0, Math.min(faultAt.frozen, faultAt.vanished) + controlWindow - Date.now()));
      const controls = arms.filter((a) => !a.socktune);
      console.log(
        JSON.stringify({
          controls: Object.fromEntries(
            controls.map((a) => [
              `${a.fault} ${a.what}`,
              a.endedAt === 0 ? `open after ${Math.round((Date.now() - faultAt[a.fault]) / 1000)} s` : `ended after ${a.endedAt - faultAt[a.fault]} ms`,
            ]),
          ),
        }),
      );
      for (const a of controls) expect(a.endedAt, `${a.fault} ${a.what}`).toBe(0);
    },
    controlWindow + 30_000,
  );
});
