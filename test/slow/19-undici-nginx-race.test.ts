// Scenario 20 of testing.md: a real nginx with `keepalive_timeout 4s` (no Keep-Alive header):
// undici's own Agent fails requests sent at 4 s ± 10 ms, the policy dispatcher never does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { TcpState } from '../../src/index.js';
import { canUse } from '../helpers/env.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { Netns } from '../helpers/netns.js';

const clientFixture = fileURLToPath(new URL('../fixtures/nginx-race-client.mjs', import.meta.url));

interface RaceReport {
  arm: string;
  attempts: number;
  failures: number;
  errors: Record<string, number>;
  connections: number;
  reused: number;
  handedOut: Partial<Record<TcpState | 'gone', number>>;
  hints: Record<string, number>;
  firstFailures: number;
  elapsed: number;
}

// Scenario 20. nginx and the clients share a namespace of the test's own (loopback), so its
// TIME_WAIT sockets go with it; nginx runs in one process (master_process off) so killing it
// leaves nothing behind.
describe.runIf(canUse('ip', 'ss', 'nginx'))('scenario 20: real nginx, keepalive_timeout 4s (no header), fetch at 4 s ± 10 ms', () => {
  const ns = new Netns('ngx');
  const idle = 4000;
  const port = 8080;
  let nginx: Nginx | undefined;

  beforeAll(async () => {
    ns.create();
    nginx = await startNginx({
      netns: ns.name,
      port,
      main: ['worker_rlimit_nofile 8192;'],
      events: 'worker_connections 4096;',
      http: [
        'keepalive_timeout 4s;',
        'keepalive_requests 100000;',
        'server {',
        `  listen 127.0.0.1:${port} backlog=4096;`,
        '  location / { default_type text/plain; return 200 "ok"; }',
        '}',
      ],
    });
  });

  afterAll(async () => {
    await nginx?.stop();
    await ns.destroy();
  });

  async function race(arm: string): Promise<RaceReport> {
    const out = await ns.exec(process.execPath, [clientFixture, arm, `http://127.0.0.1:${port}/`, String(idle), '400', '5'], { timeout: 100_000 });
    const report = JSON.parse(out) as RaceReport;
    console.log(`scenario 20 ${arm}: ${JSON.stringify(report)}`);
    expect(report.firstFailures).toBe(0);
    expect(report.attempts).toBe(2000);
    // nginx announced nothing: every response came without a Keep-Alive header.
    expect(Object.keys(report.hints)).toEqual(['none']);
    return report;
  }

  it("undici's own Agent, default options: at least one failure in 2000", async () => {
    const r = await race('undici');
    expect(r.failures).toBeGreaterThan(0);
  }, 120_000);

  it('createDispatcher(policy): 0 failures in 2000, never a CLOSE_WAIT socket written to', async () => {
    const r = await race('policy');
    expect(r.failures).toBe(0);
    expect(Object.keys(r.handedOut).filter((s) => s !== 'ESTABLISHED')).toEqual([]);
  }, 120_000);
});
