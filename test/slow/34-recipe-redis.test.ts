// Recipes that are tests, 2: ioredis against Debian's redis-server, started by the test in a peer
// namespace across a veth pair. Three clients side by side: unchanged under socktune/register,
// with the README recipe (tune redis.stream on every 'connect'), and plain (the control). The
// policy is on the connection (strace, ss, and readOptions on redis.stream), stays on the new
// connection after the server kills the old one and ioredis reconnects, and when the server
// vanishes (nftables drops in its namespace) the policy clients notice within the keepalive
// budget while the control has noticed nothing a little later still.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { printed, stop } from '../helpers/children.js';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import {
  expectOptionsRead,
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

const port = 6379;

describe.runIf(canUse('ip', 'nft', 'ss', 'strace', 'redis-server', 'redis-cli'))(
  'ioredis against a redis-server that restarts connections and vanishes',
  () => {
    const peer = new VethPeer('rcr', 34);
    const arms: Arm[] = [];
    const logs = mkdtempSync(join(tmpdir(), 'socktune-recipe-redis-'));
    let redis: ChildProcess | undefined;
    const cli = (...args: string[]) =>
      execFileSync('ip', ['netns', 'exec', peer.ns.name, 'redis-cli', '-h', peer.peerAddr, '-p', String(port), ...args], { encoding: 'utf8' }).trim();

    beforeAll(async () => {
      peer.create();
      redis = spawn(
        'ip',
        [
          'netns',
          'exec',
          peer.ns.name,
          'redis-server',
          '--bind',
          peer.peerAddr,
          '--port',
          String(port),
          '--save',
          '',
          '--appendonly',
          'no',
          '--protected-mode',
          'no',
          '--dir',
          logs,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await printed(redis, 'Ready to accept connections', 10_000, 'redis-server did not start');
      for (const mode of modes) {
        const strace = join(logs, `${mode}.strace`);
        arms.push({
          mode,
          strace,
          app: await startApp(join(fixtures, 'recipe-redis.mjs'), { env: recipeEnv(mode), args: [mode, peer.peerAddr, String(port)], strace }),
        });
      }
    }, 60_000);

    afterAll(async () => {
      for (const arm of arms) await arm.app.stop();
      if (redis) await stop(redis, 'SIGKILL');
      await peer.destroy();
      rmSync(logs, { recursive: true, force: true });
    });

    it('the policy is on the connection: strace, ss, and readOptions(redis.stream)', async () => {
      const sockets = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
      for (const arm of arms) expectRecipePolicy(arm, sockets, `ioredis ${arm.mode}`);
      await expectOptionsRead(arms, 1, 'ioredis');
    });

    it('keeps the policy across a reconnect: the server kills every client and ioredis connects again', async () => {
      const connected = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
      const before = new Map(arms.map((a) => [a, connected.find((s) => s.pid === a.app.ready.pid)!.localPort]));
      expect(Number(cli('CLIENT', 'KILL', 'TYPE', 'normal'))).toBe(3);
      for (const arm of arms) {
        const again = await arm.app.until((l) => l.event === 'connect' && l.n === 2, 10_000);
        expect(again, `ioredis ${arm.mode} did not reconnect`).toBeDefined();
        expect(await arm.app.send('ping')).toEqual({ pong: 'PONG' });
      }
      const sockets = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
      for (const arm of arms) {
        const [now] = expectRecipePolicy(arm, sockets, `ioredis ${arm.mode} after reconnect`);
        expect(now.localPort, 'a new connection').not.toBe(before.get(arm));
      }
      await expectOptionsRead(arms, 2, 'ioredis');
    });

    it(`when the server vanishes, the policy clients notice within ${recipeBudget + recipeSlack} ms; the control notices nothing`, async () => {
      for (const arm of arms) expect(await arm.app.send('ping')).toEqual({ pong: 'PONG' });
      await expectVanishNoticed(arms, () => peer.vanish(), 'ioredis');
    }, 30_000);
  },
);
