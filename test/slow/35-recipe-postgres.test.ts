// Recipes that are tests, 3: pg against Debian's PostgreSQL, initialised and started by the test
// (as an unprivileged user, in a temp dir it owns) in a peer namespace across a veth pair. Three
// pg.Pools side by side: unchanged under socktune/register, with the README recipe (tune
// client.connection.stream on the pool's 'connect'), and plain (the control). The policy is on
// the connection (strace, ss, and readOptions on client.connection.stream), is on the new
// connection the pool makes after the server terminated the old backend, and when the server
// vanishes (nftables drops in its namespace) the policy pools report their idle connection dead
// within the keepalive budget while the control has noticed nothing a little later still.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stop } from '../helpers/children.js';
import { canUse } from '../helpers/env.js';
import { postgresBin, startPostgres } from '../helpers/postgres.js';
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

const port = 5432;

describe.runIf(canUse('ip', 'nft', 'ss', 'strace', 'setpriv'))('pg against a PostgreSQL that terminates backends and vanishes', () => {
  const peer = new VethPeer('rcp', 35);
  const arms: Arm[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'socktune-recipe-pg-'));
  let server: ChildProcess | undefined;
  let bin = '';
  const psql = (sql: string) =>
    execFileSync(join(bin, 'psql'), ['-h', peer.peerAddr, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-Atc', sql], { encoding: 'utf8' }).trim();

  beforeAll(async () => {
    bin = postgresBin();
    peer.create();
    // Clients come from the veth pair's host end.
    server = await startPostgres({ dir, netns: peer.ns.name, address: peer.peerAddr, port, clients: `${peer.hostAddr}/32`, within: 15_000 });
    for (const mode of modes) {
      const strace = join(dir, `${mode}.strace`);
      arms.push({
        mode,
        strace,
        app: await startApp(join(fixtures, 'recipe-pg.mjs'), { env: recipeEnv(mode), args: [mode, peer.peerAddr, String(port)], strace }),
      });
    }
  }, 90_000);

  afterAll(async () => {
    for (const arm of arms) await arm.app.stop();
    // Immediate shutdown; its children follow the postmaster.
    if (server) await stop(server, 'SIGQUIT', 10_000);
    await peer.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the policy is on the pooled connection: strace, ss, and readOptions(client.connection.stream)', async () => {
    const sockets = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
    for (const arm of arms) expectRecipePolicy(arm, sockets, `pg ${arm.mode}`);
    await expectOptionsRead(arms, 1, 'pg');
  });

  it('keeps the policy on the next connection after the server terminated the backend', async () => {
    const backends = new Map<Arm, number>();
    for (const arm of arms) backends.set(arm, (await arm.app.send('query')).backend as number);
    const killed = psql(`SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${[...backends.values()].join(',')})) t`);
    expect(killed).toBe('3');
    for (const arm of arms) {
      // The pool reports its idle connection's end (57P01: terminating connection due to administrator command).
      expect(await arm.app.until((l) => l.event === 'error', 10_000), `pg ${arm.mode}`).toMatchObject({ code: '57P01' });
      const { backend } = await arm.app.send('query');
      expect(backend, 'a new backend').not.toBe(backends.get(arm));
    }
    const sockets = await ssSockets(undefined, ['dst', `${peer.peerAddr}:${port}`]);
    for (const arm of arms) expectRecipePolicy(arm, sockets, `pg ${arm.mode} after the backend was terminated`);
    await expectOptionsRead(arms, 2, 'pg');
  });

  it(`when the server vanishes, the policy pools report the idle connection dead within ${recipeBudget + recipeSlack} ms; the control notices nothing`, async () => {
    for (const arm of arms) await arm.app.send('query');
    await expectVanishNoticed(arms, () => peer.vanish(), 'pg');
  }, 30_000);
});
