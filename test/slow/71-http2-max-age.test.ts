// 1,000 max-age rotations of grpc-js channels under load, and not one failed RPC. A grpc-js server
// runs unchanged under socktune/register with http2.maxAge 250 ms (±10 %) in a namespace of this
// file's own; grpc-js clients, sixteen channels (connections) in two processes, send unary RPCs back to back for
// as long as the server takes to rotate its sessions a thousand times (GOAWAY naming the largest
// stream ID, a PING round trip, the final GOAWAY, streams in flight finish). The same load on a
// server without maxAge is the control that the load itself fails nothing; grpc-js's own
// grpc.max_connection_age_ms at the same age is measured beside it for reference.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import { fixtures, startApp, type App } from '../helpers/register.js';

const maxAge = 250;
const rotations = 1000;
const channels = 8;
const concurrency = 8;

interface Load {
  ok: number;
  failed: number;
  errors: Record<string, number>;
}

describe.runIf(canUse('ip'))(`${rotations} max-age rotations of grpc-js channels under load`, () => {
  const peer = new VethPeer('h2ma', 74);
  const apps: App[] = [];

  beforeAll(() => {
    peer.create();
  });
  afterAll(async () => {
    for (const app of apps) await app.stop().catch(() => {});
    await peer.destroy();
  });

  async function grpcServer(env: Record<string, string>, options?: object): Promise<App> {
    const app = await startApp(join(fixtures, 'h2-grpc.mjs'), {
      ns: peer.ns.name,
      env,
      args: ['server', peer.peerAddr, '0', ...(options ? [JSON.stringify(options)] : [])],
    });
    apps.push(app);
    return app;
  }

  /** Two client processes of `channels` channels each, loading the server for `ms`. */
  async function load(server: App, ms: number): Promise<Load> {
    const target = `${peer.peerAddr}:${server.ready.port as number}`;
    // A local subchannel pool per channel: otherwise grpc-js shares one connection between the channels of a process.
    const options = JSON.stringify({ 'grpc.use_local_subchannel_pool': 1 });
    const clients = await Promise.all([0, 1].map(() => startApp(join(fixtures, 'h2-grpc.mjs'), { args: ['client', target, options, String(channels)] })));
    apps.push(...clients);
    const results = (await Promise.all(clients.map((c) => c.send(`load ${ms} ${concurrency}`)))) as unknown as Load[];
    const total: Load = { ok: 0, failed: 0, errors: {} };
    for (const r of results) {
      total.ok += r.ok;
      total.failed += r.failed;
      for (const [k, v] of Object.entries(r.errors)) total.errors[k] = (total.errors[k] ?? 0) + v;
    }
    return total;
  }

  it(`socktune/register with http2.maxAge ${maxAge} ms: at least ${rotations} rotations, 0 failed RPCs; the same load without maxAge: 0 failed, 0 rotations`, async () => {
    const policy = (http2?: object) => ({
      NODE_OPTIONS: '--import=socktune/register',
      SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', ...(http2 ? { http2 } : {}) }),
    });
    const rotating = await grpcServer(policy({ maxAge, maxAgeGrace: 5000 }));
    const steady = await grpcServer(policy());
    // 16 channels each rotating every ~maxAge plus a reconnect: a thousand rotations in well under a minute.
    const ms = Math.ceil((rotations / (2 * channels)) * (maxAge + 100) * 1.3);
    // One after the other: the two loads do not compete for the two cores.
    const withAge = await load(rotating, ms);
    const without = await load(steady, ms);
    const closed = ((await rotating.send('stats')) as { closed: Record<string, number> }).closed;
    const steadyClosed = ((await steady.send('stats')) as { closed: Record<string, number> }).closed;
    console.log(
      JSON.stringify({
        maxAgeRotations: {
          maxAge,
          loadMs: ms,
          channels: 2 * channels,
          rotated: closed['max-age'],
          rpcs: withAge.ok,
          failed: withAge.failed,
          errors: withAge.errors,
        },
        control: { rotated: steadyClosed['max-age'], rpcs: without.ok, failed: without.failed },
      }),
    );
    expect(closed['max-age']).toBeGreaterThanOrEqual(rotations);
    expect(withAge).toMatchObject({ failed: 0, errors: {} });
    expect(without).toMatchObject({ failed: 0 });
    expect(steadyClosed['max-age']).toBe(0);
  }, 180_000);

  it("for reference: grpc-js's own grpc.max_connection_age_ms at the same age, the same load", async () => {
    const own = await grpcServer({}, { 'grpc.max_connection_age_ms': maxAge, 'grpc.max_connection_age_grace_ms': 5000 });
    const ms = Math.ceil((rotations / (2 * channels)) * (maxAge + 100) * 1.3);
    const result = await load(own, ms);
    console.log(JSON.stringify({ grpcJsOwnMaxAge: { maxAge, loadMs: ms, rpcs: result.ok, failed: result.failed, errors: result.errors } }));
    expect(result.ok).toBeGreaterThan(0);
  }, 180_000);
});
