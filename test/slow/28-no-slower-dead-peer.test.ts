// A policy never makes a dead peer slower to notice. An application keeps a pooled connection
// through Node's keep-alive http.Agent (as got, axios and http.get do): Node gives it keepalive
// with keepAliveMsecs 1 s, a budget of 1 s + 10 probes x 1 s. Under socktune/register with
// gracefulHeartbeat (30 s + 3 x 10 s = 60 s) the connection keeps Node's shorter budget and gets the
// policy's user timeout on top. One vanish of the server serves both arms (without and with
// register), observed side by side; the server is a real process in a namespace of this file's own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import { startApp, noticeAfterVanish, type Arm } from '../helpers/register.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
/** Node's agent: keepalive idle 1 s, then 10 probes 1 s apart. */
const nodeBudget = 1000 + 10 * 1000;
/** Keepalive timers fire on jiffies and the client stamps its event: testing.md's 1 s. */
const slack = 1000;

describe.runIf(canUse('ip', 'nft'))("Node's keep-alive agent under socktune/register: the shorter budget stays", () => {
  const peer = new VethPeer('slw', 129);
  let port: number;
  beforeAll(async () => {
    peer.create();
    port = JSON.parse((await peer.ns.start(fixture('http-peer-server.mjs'), [peer.peerAddr])).ready).port;
  });
  afterAll(() => peer.destroy());

  it(`a vanished server is noticed within ${nodeBudget} ms + ${slack} ms with and without register (gracefulHeartbeat's own budget is 60 s)`, async () => {
    const arms: Arm[] = [];
    for (const mode of ['plain', 'register'] as const) {
      const env: Record<string, string> = mode === 'register' ? { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: 'gracefulHeartbeat' } : {};
      arms.push({ mode, app: await startApp(fixture('pooled-client.mjs'), { env, args: [peer.peerAddr, String(port)] }), strace: '' });
    }
    try {
      const noticed = await noticeAfterVanish(arms, () => peer.vanish(), nodeBudget + slack + 4000);
      const after = Object.fromEntries(arms.map((a) => [a.mode, noticed.get(a)]));
      console.log('pooled connection, vanished server noticed after (ms):', JSON.stringify(after));
      for (const arm of arms) {
        expect(after[arm.mode], `${arm.mode} noticed nothing`).toBeDefined();
        expect(after[arm.mode]!, arm.mode).toBeLessThanOrEqual(nodeBudget + slack);
      }
    } finally {
      peer.restore();
      for (const arm of arms) await arm.app.stop();
    }
  });
});
