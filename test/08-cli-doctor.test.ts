// `socktune doctor`: the self-check table and its JSON agree with the kernel, and the exit
// status says whether everything this platform supports worked.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

describe('socktune doctor', () => {
  it('--json: every option round-trips on this Linux machine', async () => {
    const { stdout } = await run(process.execPath, [cli, 'doctor', '--json']);
    const report = JSON.parse(stdout);
    expect(report.ok).toBe(true);
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
  });

  it('rejects unknown commands with a non-zero exit', async () => {
    await expect(run(process.execPath, [cli, 'doctr'])).rejects.toMatchObject({ code: 1 });
  });
});
