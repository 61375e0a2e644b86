// `socktune doctor`: the sysctl audit and the self-check, as a table and as JSON, and an exit
// status that says whether something needs attention.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUse } from './helpers/env.js';
import { Netns } from './helpers/netns.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { packageCopy, removeCopies } from './helpers/unprivileged.js';

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
    for (const name of [
      'SO_KEEPALIVE',
      'TCP_KEEPIDLE',
      'TCP_KEEPINTVL',
      'TCP_KEEPCNT',
      'TCP_USER_TIMEOUT',
      'SO_LINGER',
      'TCP_NODELAY',
      'SO_REUSEADDR',
      'SO_REUSEPORT',
    ]) {
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

  it("rejects unknown commands as a usage error (status 2, not doctor's 1)", async () => {
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

describe.runIf(canUse('ip'))('socktune doctor without the native addon', () => {
  const ns = new Netns('docnoaddon');
  beforeAll(() => ns.create());
  afterAll(async () => {
    await ns.destroy();
    removeCopies();
  });

  it('says so in one line instead of on every self-check row; the audits still run (from /proc)', async () => {
    // A copy of the package without build/ and prebuilds/, as test/09-loader makes one.
    const { pkg } = packageCopy({});
    const { stdout } = await run('ip', ['netns', 'exec', ns.name, process.execPath, join(pkg, 'dist', 'cli.js'), 'doctor']).catch(
      (err: { code: number; stdout: string }) => {
        expect(err.code).toBe(1);
        return err;
      },
    );
    const mentions = stdout.split('\n').filter((l) => l.includes("socktune's native addon is not available"));
    expect(mentions).toHaveLength(1);
    expect(mentions[0]).toMatch(
      /^Not run: socktune's native addon is not available on linux-\S+ \(\w+\), Node v[\d.]+: no prebuild fits and none was built from source\./,
    );
    expect(stdout).not.toMatch(/^option \/ view/m);
    expect(stdout).toMatch(/^summary: \d+ critical, \d+ warn, \d+ info, \d+ ok$/m);
    expect(stdout).toMatch(/^connections: 0 CLOSE_WAIT, 0 TIME_WAIT sockets in this namespace \(proc\)$/m);
    expect(stdout).toMatch(/^Something needs attention: see the self-check \(socktune's native addon is not loaded\) above\.$/m);
    // --json keeps every row (each with the error) and says why once.
    const json = await run('ip', ['netns', 'exec', ns.name, process.execPath, join(pkg, 'dist', 'cli.js'), 'doctor', '--json']).catch(
      (err: { stdout: string }) => err,
    );
    const check = JSON.parse(json.stdout).selfCheck;
    expect(check.noAddon).toBe(mentions[0].slice('Not run: '.length));
    expect(check.rows.every((r: { ok: boolean; error: string }) => !r.ok && r.error.startsWith('ERR_SOCKTUNE_NO_ADDON: '))).toBe(true);
  });
});
