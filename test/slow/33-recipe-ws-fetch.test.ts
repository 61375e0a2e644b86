// Recipes that are tests, 1: ws and fetch. A server in a peer namespace across a veth pair;
// clients run unchanged under socktune/register, with the README's explicit recipe (ws: tune the
// socket on 'upgrade'; fetch: undici's fetch with createDispatcher), and plain (the control). The
// policy is on each connection (ss: the keepalive idle the kernel runs), and when the server
// vanishes (nftables drops in its namespace) the policy clients notice within the keepalive budget
// I + C·V + 1 s while the controls have noticed nothing a little later still. One vanish serves
// every arm.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import {
  expectRecipePolicy,
  expectVanishNoticed,
  fixtures,
  modes,
  recipeBudget,
  recipeEnv,
  recipeSlack,
  ssSockets,
  startApp,
  type Arm,
} from '../helpers/register.js';

const port = 8080;

describe.runIf(canUse('ip', 'nft', 'ss'))('ws and fetch recipes against a server that vanishes', () => {
  const peer = new VethPeer('rcw', 33);
  const arms: Array<Arm & { lib: 'ws' | 'fetch' }> = [];
  const logs = mkdtempSync(join(tmpdir(), 'socktune-recipe-'));

  beforeAll(async () => {
    peer.create();
    await peer.ns.start(join(fixtures, 'recipe-peer-server.mjs'), [peer.peerAddr, String(port)]);
    for (const lib of ['ws', 'fetch'] as const) {
      for (const mode of modes) {
        const target = lib === 'ws' ? `ws://${peer.peerAddr}:${port}/` : `http://${peer.peerAddr}:${port}`;
        const strace = join(logs, `${lib}-${mode}.strace`);
        arms.push({ lib, mode, strace, app: await startApp(join(fixtures, `recipe-${lib}.mjs`), { env: recipeEnv(mode), args: [mode, target], strace }) });
      }
    }
  }, 60_000);

  afterAll(async () => {
    for (const arm of arms) await arm.app.stop();
    await peer.destroy();
    rmSync(logs, { recursive: true, force: true });
  });

  it("each policy client's connection holds the policy; the controls hold Node's", async () => {
    const sockets = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
    for (const arm of arms) expectRecipePolicy(arm, sockets, `${arm.lib} ${arm.mode}`);
  });

  it(`after the server vanishes, the policy clients notice within ${recipeBudget + recipeSlack} ms; the controls notice nothing`, async () => {
    // Both libraries' arms at once: one vanish serves them all.
    await expectVanishNoticed(arms, () => peer.vanish(), 'ws/fetch');
  }, 30_000);
});
