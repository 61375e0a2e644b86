// `socktune doctor`: the sysctl audit and the self-check, as a table and as JSON, and an exit
// status that says whether something needs attention.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUse } from './helpers/env.js';
import { Netns } from './helpers/netns.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

describe('socktune doctor', () => {
  it('--json: every option round-trips on this Linux machine', async () => {
    const { stdout } = await run(process.execPath, [cli, 'doctor', '--json']);
    const report = JSON.parse(stdout);
    expect(report.selfCheck.ok).toBe(true);
    expect(report.findings.length).toBeGreaterThan(10);
    for (const f of report.findings) expect(f.setting).toMatch(/^net\.(ipv4|core)\.[a-z_]+$/);
    const rows = Object.fromEntries(report.selfCheck.rows.map((r: { name: string }) => [r.name, r]));
    for (const name of ['SO_KEEPALIVE', 'TCP_KEEPIDLE', 'TCP_KEEPINTVL', 'TCP_KEEPCNT', 'TCP_USER_TIMEOUT', 'SO_LINGER', 'TCP_NODELAY', 'SO_REUSEADDR', 'SO_REUSEPORT']) {
      expect(rows[name]).toMatchObject({ supported: true, ok: true });
      expect(rows[name].read).toEqual(rows[name].wrote);
      expect(rows[name].read).not.toEqual(rows[name].before);
    }
    expect(rows.TCP_INFO.read).toBe('ESTABLISHED');
  });

  it('table output has no colour when not a TTY, and exits 0', async () => {
    const { stdout } = await run(process.execPath, [cli, 'doctor']);
    expect(stdout).not.toMatch(/\u001b\[/);
    expect(stdout).toMatch(/^TCP_USER_TIMEOUT\s+yes\s+0\s+30000\s+30000\s+ok/m);
    expect(stdout).toMatch(/^summary: \d+ critical, \d+ warn, \d+ info, \d+ ok$/m);
  });

  it('rejects unknown commands as a usage error (status 2, not doctor\'s 1)', async () => {
    await expect(run(process.execPath, [cli, 'doctr'])).rejects.toMatchObject({ code: 2 });
  });
});

describe.runIf(canUse('ip', 'sysctl'))('socktune doctor in a namespace of its own', () => {
  const ns = new Netns('doctor');
  beforeAll(() => ns.create());
  afterAll(() => ns.destroy());

  it('a new namespace (keepalive 7200 s) exits 0, and 1 with --strict; the fix it prints works', async () => {
    const report = JSON.parse(await ns.exec(process.execPath, [cli, 'doctor', '--json']));
    const keepalive = report.findings.find((f: { setting: string }) => f.setting === 'net.ipv4.tcp_keepalive_time');
    expect(keepalive).toMatchObject({ severity: 'warn', value: '7200' });
    expect(report.ok).toBe(true);
    await expect(ns.exec(process.execPath, [cli, 'doctor', '--strict'])).rejects.toMatchObject({ code: 1 });
    ns.sysctl('net.ipv4.tcp_keepalive_time', '120');
    const after = JSON.parse(await ns.exec(process.execPath, [cli, 'doctor', '--json']));
    expect(after.findings.find((f: { setting: string }) => f.setting === 'net.ipv4.tcp_keepalive_time')).toMatchObject({ severity: 'ok', value: '120' });
  });
});
