// The `socktune` command has no rough edges: a usage error names the flag the user typed and the
// range it allows and exits 2 (not 1, which is doctor's "needs attention", nor 3, "could not read");
// a closed output pipe ends a command quietly; a /proc file that cannot be read is named and is
// exit status 3 for stat, while doctor shows everything else and says what it could not read. The
// unreadable files are made so in a mount namespace of the test's own, never on the machine's /proc.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cli, socktune } from './helpers/cli.js';
import { canUse } from './helpers/env.js';
import { Netns } from './helpers/netns.js';
import { runWithUnreadable } from './helpers/unreadable.js';
import { NOBODY, packageCopy, removeCopies } from './helpers/unprivileged.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = promisify(execFile);

describe('usage errors: exit status 2, the flag as typed, and the range allowed', () => {
  it.each([
    [['stat', '--port', '70000'], "socktune stat: --port must be an integer from 0 to 65535, got '70000'"],
    [['stat', '--local-port', '-1'], "socktune stat: --local-port must be an integer from 0 to 65535, got '-1'"],
    [['stat', '--top', '-1'], "socktune stat: --top must be an integer from 0 to 65535, got '-1'"],
    [['stat', '--top', '2.5'], "socktune stat: --top must be an integer from 0 to 65535, got '2.5'"],
    [['stat', '--top', '5x'], "socktune stat: --top must be an integer from 0 to 65535, got '5x'"],
    [['stat', '--pid', '0'], "socktune stat: --pid must be an integer from 1 to 4194304, got '0'"],
    [['stat', '--family', '5'], "socktune stat: --family must be 4 or 6, got '5'"],
    [['stat', '--local-address', '10.1'], "socktune stat: --local-address must be an IPv4 or IPv6 address, got '10.1'"],
    [['stat', '--source', 'ss'], "socktune stat: --source must be netlink or proc, got 'ss'"],
    [['stat', '--netns', 'a/b'], "socktune stat: --netns must be a name under /run/netns or an absolute path, got 'a/b'"],
    [['stat', '--state', 'time_wiat'], "socktune stat: --state 'time_wiat' is not a TCP state"],
    [['stat', '--port'], 'socktune stat: --port needs a value <port>'],
    [['stat', '--port', '1', '--port', '2'], 'socktune stat: --port was given twice'],
    [['stat', '--json=yes'], 'socktune stat: --json takes no value'],
    [['stat', '--prot', '5'], 'socktune stat: unknown option --prot (did you mean --port?)'],
    [['stat', '--process'], "socktune stat: --process was removed (it counted the CLI's own sockets): use --pid <pid> for a process"],
    [['watch', '--process'], "socktune watch: --process was removed (it counted the CLI's own sockets): use --pid <pid> for a process"],
    [['stat', 'extra'], "socktune stat: unexpected argument 'extra'"],
    [['watch', '--interval', '2147483648'], "socktune watch: --interval must be an integer from 50 to 2147483647 ms, got '2147483648'"],
    [['watch', '--interval', '10'], "socktune watch: --interval must be an integer from 50 to 2147483647 ms, got '10'"],
    [['watch', '--count', '0'], "socktune watch: --count must be an integer from 1 to 9007199254740991, got '0'"],
    [['doctor', '--strikt'], 'socktune doctor: unknown option --strikt (did you mean --strict?)'],
    [['doctr'], "socktune: unknown command 'doctr' (did you mean doctor?)"],
    [['stat', '-x'], 'socktune stat: unknown option -x; short options: -p (--pid), -n (--netns), -j (--json), -h (--help)'],
    [['stat', '-p', '0'], "socktune stat: --pid must be an integer from 1 to 4194304, got '0'"],
    [['stat', '-p'], 'socktune stat: --pid needs a value <pid>'],
    [['stat', '-p', '1', '--pid', '2'], 'socktune stat: --pid was given twice'],
    [['doctor', '-p', '1'], 'socktune doctor: unknown option -p; short options: -j (--json), -h (--help)'],
  ])('socktune %j', async (args, message) => {
    const r = await socktune(...args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const [first, second] = r.stderr.split('\n');
    expect(first.startsWith(message)).toBe(true);
    expect(second).toMatch(/^usage: socktune /);
  });

  it('no command prints the usage and exits 2; --help and --version exit 0', async () => {
    const none = await socktune();
    expect(none.code).toBe(2);
    expect(none.stdout).toMatch(/^usage: socktune <command> \[options\]/);
    expect(none.stdout).toMatch(/exit status: 0 done; 1 doctor found something that needs attention; 2 usage error; 3 something could not be read or done\./);
    const help = await socktune('stat', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^ {2}-p, --pid <pid>\s+only the sockets of this process/m);
    expect(help.stdout).toMatch(/^ {2}-n, --netns <name\|path>\s+another network namespace/m);
    expect(help.stdout).toMatch(/^ {2}-j, --json\s+print JSON/m);
    expect(help.stdout).toMatch(/^ {6}--port <port>\s+a port on either side/m);
    expect(help.stdout).toMatch(/^ {2}-h, --help\s+show this help/m);
    expect((await socktune('doctor', '--help')).stdout).toMatch(/^ {2}-j, --json\s+print JSON/m);
    expect(help.stdout).not.toMatch(/--process/);
    expect(await socktune('help', 'watch')).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/--interval <ms>\s+milliseconds between refreshes, 50 to 2147483647/),
    });
    expect(await socktune('--version')).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+\n$/) });
  });
});

describe.runIf(canUse('ip', 'unshare', 'mount'))("in a namespace of the test's own", () => {
  const ns = new Netns('cli');
  beforeAll(() => ns.create());
  afterAll(() => ns.destroy());
  const inNs = (...args: string[]) => ['ip', ['netns', 'exec', ns.name, process.execPath, cli, ...args]] as const;

  it('a reader that closes the pipe early ends every command quietly, status 0', async () => {
    for (const command of [
      `${process.execPath} ${cli} watch --interval 50 | head -1`,
      `${process.execPath} ${cli} watch --json --interval 50 | head -c 10`,
      `${process.execPath} ${cli} stat --json | head -c 1`,
      `${process.execPath} ${cli} doctor | head -1`,
    ]) {
      const { stdout, stderr } = await run('ip', ['netns', 'exec', ns.name, 'bash', '-c', `set -o pipefail; ${command}; echo " status $?"`]);
      expect([command, stderr]).toEqual([command, '']);
      expect(stdout).toMatch(/ status 0\n$/);
    }
  });

  it('short flags: -n, -j and -p are --netns, --json and --pid (a list of states ends at -j)', async () => {
    const long = JSON.parse((await socktune('stat', '--netns', ns.name, '--json', '--state', 'listening', '--top', '0')).stdout);
    const short = await socktune('stat', '-n', ns.name, '--state', 'listening', '-j', '--top', '0');
    expect(short.code).toBe(0);
    expect(JSON.parse(short.stdout)).toEqual(long);
    const byPid = await socktune('stat', '-p', String(process.pid), '-j', '--top', '0');
    expect(JSON.parse(byPid.stdout)).toMatchObject({ scope: 'process', pid: process.pid });
  });

  it('a state asked for and absent prints its 0 row, not an empty table', async () => {
    const { code, stdout } = await socktune('stat', '--netns', ns.name, '--state', 'close-wait');
    expect(code).toBe(0);
    expect(stdout).toBe(`TCP sockets of network namespace ${ns.name} (netlink): 0\n\nstate       count\n----------  -----\nCLOSE_WAIT  0\n`);
    const two = (await socktune('stat', '--netns', ns.name, '--state', 'close-wait', 'time-wait', '--source', 'proc')).stdout;
    expect(two).toMatch(/^TIME_WAIT +0\nCLOSE_WAIT +0\n$/m);
  });

  it('--netns: an unknown name says so, a user without root is told it needs root, a FIFO is refused at once', async () => {
    const unknown = await socktune('stat', '--netns', `st-none-${process.pid}`);
    expect(unknown).toMatchObject({ code: 3, stdout: '' });
    expect(unknown.stderr).toMatch(
      new RegExp(
        `^socktune stat: no network namespace named 'st-none-${process.pid}': /run/netns/st-none-${process.pid} does not exist; \`ip netns list\` names them`,
      ),
    );
    const { pkg, node } = packageCopy({ addon: true });
    const asNobody = await run('setpriv', [...NOBODY, node, join(pkg, 'dist', 'cli.js'), 'stat', '--netns', ns.name]).catch(
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(asNobody).toMatchObject({ code: 3, stdout: '' });
    expect(asNobody.stderr).toBe(`socktune stat: entering network namespace ${ns.name} needs root (CAP_SYS_ADMIN) (setns EPERM: operation not permitted)\n`);
    const dir = mkdtempSync(join(tmpdir(), 'socktune-fifo-'));
    try {
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      const plain = join(dir, 'plain');
      writeFileSync(plain, '');
      for (const path of [fifo, plain]) {
        // Before: open() of the FIFO waited for a writer forever; the timeout ends such a run.
        const r = await run(process.execPath, [cli, 'stat', '--netns', path], { timeout: 10_000 }).catch(
          (e: { code: number; stdout: string; stderr: string }) => e,
        );
        expect(r).toMatchObject({ code: 3, stdout: '' });
        expect(r.stderr).toBe(
          `socktune stat: ${path} is not a network namespace file: give a name under /run/netns or a path such as /proc/PID/ns/net (setns EINVAL: invalid argument)\n`,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      removeCopies();
    }
  });

  it('watch --count N prints N frames and exits 0', async () => {
    const [cmd, args] = inNs('watch', '--json', '--count', '3', '--interval', '50');
    const { stdout } = await run(cmd, [...args]);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).toMatchObject({ scope: 'namespace', source: 'netlink', states: expect.any(Object) });
  });

  it('stat --source proc with /proc/net/tcp unreadable names the file and exits 3; netlink is unaffected', async () => {
    const viaProc = await runWithUnreadable(['/proc/net/tcp'], process.execPath, [cli, 'stat', '--source', 'proc'], ns.name);
    expect(viaProc).toEqual({ code: 3, stdout: '', stderr: "socktune stat: EACCES: permission denied, open '/proc/net/tcp'\n" });
    const json = await runWithUnreadable(['/proc/net/tcp6'], process.execPath, [cli, 'stat', '--source', 'proc', '--json'], ns.name);
    expect(json).toEqual({ code: 3, stdout: '', stderr: "socktune stat: EACCES: permission denied, open '/proc/net/tcp6'\n" });
    const viaNetlink = await runWithUnreadable(['/proc/net/tcp', '/proc/net/tcp6'], process.execPath, [cli, 'stat', '--json'], ns.name);
    expect(viaNetlink.code).toBe(0);
    expect(JSON.parse(viaNetlink.stdout)).toMatchObject({ source: 'netlink', scope: 'namespace' });
  });

  it('doctor with one sysctl unreadable shows the rest, says what it could not read, and exits 0 (1 with --strict)', async () => {
    const masked = ['/proc/sys/net/ipv4/tcp_fin_timeout'];
    const text = await runWithUnreadable(masked, process.execPath, [cli, 'doctor'], ns.name);
    expect(text.code).toBe(0);
    expect(text.stderr).toBe('');
    expect(text.stdout).toMatch(/^WARN {5}net\.ipv4\.tcp_fin_timeout = \(unreadable: EACCES\)$/m);
    expect(text.stdout).toMatch(
      /^ {9}Could not be read \(EACCES: permission denied, open '\/proc\/sys\/net\/ipv4\/tcp_fin_timeout'\), so it was not audited\.$/m,
    );
    expect(text.stdout).toMatch(/^could not read \(the rest was audited\):\n {2}net\.ipv4\.tcp_fin_timeout: EACCES: permission denied/m);
    // Everything else is there, with its value.
    expect(text.stdout).toMatch(/^WARN {5}net\.ipv4\.tcp_keepalive_time = 7200$/m);
    expect(text.stdout).toMatch(/^OK {7}net\.ipv4\.tcp_max_tw_buckets = \d+$/m);
    expect(text.stdout).toMatch(/^TCP_USER_TIMEOUT\s+yes\s+0\s+30000\s+30000\s+ok/m);
    const json = await runWithUnreadable(masked, process.execPath, [cli, 'doctor', '--json'], ns.name);
    const report = JSON.parse(json.stdout);
    expect(report.unreadable).toEqual([
      {
        what: 'net.ipv4.tcp_fin_timeout',
        path: '/proc/sys/net/ipv4/tcp_fin_timeout',
        code: 'EACCES',
        message: "EACCES: permission denied, open '/proc/sys/net/ipv4/tcp_fin_timeout'",
      },
    ]);
    expect(report.findings.find((f: { setting: string }) => f.setting === 'net.ipv4.tcp_fin_timeout')).toMatchObject({
      severity: 'warn',
      error: { code: 'EACCES' },
    });
    expect(report.findings).toHaveLength(12);
    expect(report.ok).toBe(true);
    expect((await runWithUnreadable(masked, process.execPath, [cli, 'doctor', '--strict'], ns.name)).code).toBe(1);
  });

  it('doctor with /proc/net/sockstat and the counters unreadable still audits every sysctl', async () => {
    const r = await runWithUnreadable(['/proc/net/sockstat', '/proc/net/netstat'], process.execPath, [cli, 'doctor', '--json'], ns.name);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.unreadable.map((u: { what: string; code: string }) => [u.what, u.code])).toEqual([
      ['sockstat', 'EACCES'],
      ['counters', 'EACCES'],
    ]);
    expect(report.sockstat).toBeUndefined();
    expect(report.findings).toHaveLength(12);
    expect(report.findings.every((f: { error?: unknown }) => f.error === undefined)).toBe(true);
  });
});

describe.runIf(canUse('strace'))('stat loads only what it needs', () => {
  it('opens none of the policies, the guard, the integrations, undici or prom-client (strace witnesses every open)', async () => {
    const { stderr } = await run('strace', ['-f', '-qq', '-e', 'trace=open,openat', '-e', 'signal=none', process.execPath, cli, 'stat', '--json'], {
      maxBuffer: 64 * 1024 * 1024,
    });
    const opened = [...stderr.matchAll(/open(?:at)?\([^"]*"([^"]+)"/g)].map((m) => m[1]).filter((p) => p.includes('/dist/') || p.includes('node_modules'));
    const dist = opened
      .filter((p) => p.includes('/dist/'))
      .map((p) => p.slice(p.indexOf('/dist/') + 6))
      .sort();
    expect(dist).toEqual(expect.arrayContaining(['cli.js', 'diagnose/states.js', 'binding.js']));
    for (const p of dist) expect([p, /^(policy|guard|integrations|demo)\/|^(options|handle|metrics|index)\.js$/.test(p)]).toEqual([p, false]);
    for (const p of opened) expect([p, /node_modules\/(undici|prom-client|commander)\//.test(p)]).toEqual([p, false]);
  });
});
