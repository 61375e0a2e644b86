// Scenario 19 of testing.md: a server closes idle keep-alive connections at exactly T without a
// hint; a client sends at T ± 10 ms, 2000 times: Node's default agent sees "socket hang up", the
// policy agent sees 0 failures and never hands out a socket whose kernel state is CLOSE_WAIT.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { TcpState } from '../../src/index.js';
import { canUse } from '../helpers/env.js';
import { Netns } from '../helpers/netns.js';

const serverFixture = fileURLToPath(new URL('../fixtures/agent-idle-server.mjs', import.meta.url));
const clientFixture = fileURLToPath(new URL('../fixtures/agent-race-client.mjs', import.meta.url));

/** Node 20 gives a request a free socket in the call that queues it; 22 and later a turn of the event loop later. */
const assignsAtOnce = Number(process.versions.node.split('.')[0]) < 22;

interface RaceReport {
  arm: string;
  attempts: number;
  failures: number;
  errors: Record<string, number>;
  reused: number;
  handedOut: Partial<Record<TcpState | 'gone', number>>;
  staleDropped: number;
  firstFailures: number;
  elapsed: number;
}

// Scenario 19. Server and clients in a namespace of their own (its TIME_WAIT goes with it), on
// its loopback, in separate processes as in production. Each pair of requests has an agent (so a
// connection) of its own; 400 pairs at once, second requests 4000 ms ± 10 ms after the first.
describe.runIf(canUse('ip', 'ss'))('scenario 19: a server closes idle keep-alive connections at exactly 4 s, no hint', () => {
  const ns = new Netns('pool');
  const idle = 4000;
  let port = '';

  beforeAll(async () => {
    ns.create();
    port = (await ns.start(serverFixture, [String(idle), '127.0.0.1'])).ready.trim();
  });
  afterAll(() => ns.destroy());

  async function race(arm: string, pairs: number, rounds: number): Promise<RaceReport> {
    const out = await ns.exec(process.execPath, [clientFixture, arm, '127.0.0.1', port, String(idle), String(pairs), String(rounds)], { timeout: 100_000 });
    const report = JSON.parse(out) as RaceReport;
    console.log(`scenario 19 ${arm}: ${JSON.stringify(report)}`);
    expect(report.firstFailures).toBe(0);
    return report;
  }

  it('Node\'s default agent (keepAlive: true): at least one "socket hang up"/ECONNRESET in 2000', async () => {
    const r = await race('node', 400, 5);
    expect(r.attempts).toBe(2000);
    expect(r.failures).toBeGreaterThan(0);
    // Node 20 hands out sockets whose FIN is already in the kernel; 22 and later read it first
    // (see the control above), so there most failures are FINs on the wire and CLOSE_WAIT is rare.
    if (assignsAtOnce) expect(r.handedOut.CLOSE_WAIT ?? 0).toBeGreaterThan(0);
  }, 120_000);

  it('policy agent: 0 failures in 2000, and never a CLOSE_WAIT socket handed out', async () => {
    const r = await race('policy', 400, 5);
    expect(r.attempts).toBe(2000);
    expect(r.failures).toBe(0);
    expect(Object.keys(r.handedOut).filter((s) => s !== 'ESTABLISHED')).toEqual([]);
  }, 120_000);
});
