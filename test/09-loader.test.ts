// The one loader (src/binding.ts): which addon file a process gets, and what a process without one
// still has. Each case installs a copy of the built package (dist/, package.json, the runtime
// dependencies and the prebuilds the case calls for) in a temp dir readable by everyone, and runs
// it as an unprivileged user (nobody), as a service account would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { canUse, inCI } from './helpers/env.js';
import { Netns } from './helpers/netns.js';
import { NOBODY, nodeForNobody, packageCopy, removeCopies } from './helpers/unprivileged.js';
import { runtime, runUnder } from './helpers/runtimes.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/loader.mjs', import.meta.url));
const prebuilt = (tuple: string, file: string) => join(root, 'prebuilds', tuple, file);
const ready =
  existsSync(prebuilt('linux-x64', 'socktune.glibc.node')) &&
  existsSync(prebuilt('linux-arm64', 'socktune.glibc.node')) &&
  existsSync(prebuilt('linux-x64', 'socktune.musl.node'));
if (!ready && !inCI) console.warn('skipping: needs the prebuilds (npm run build:prebuilds)');

interface Attempt {
  value?: unknown;
  code?: string;
  message?: string;
  cause?: string;
}
interface Report {
  addon: { path?: string; code?: string; message?: string };
  results: Record<string, Attempt>;
}

/** A copy of the package with `prebuilds` ({ 'linux-x64/socktune.glibc.node': source }), no build/. */
function install(prebuilds: Record<string, string>): string {
  return packageCopy({ prebuilds, files: { 'loader.mjs': fixture } }).pkg;
}

async function report(pkg: string, env: Record<string, string> = {}, ns?: Netns): Promise<Report> {
  const argv = ['setpriv', ...NOBODY, nodeForNobody(), join(pkg, 'loader.mjs'), pkg];
  const opts = { env: { ...process.env, PREBUILDS_ONLY: '', ...env }, timeout: 60_000 };
  const { stdout } = ns ? await run('ip', ['netns', 'exec', ns.name, ...argv], opts) : await run(argv[0], argv.slice(1), opts);
  return JSON.parse(stdout) as Report;
}

afterAll(removeCopies);

describe.runIf(canUse('setpriv', 'ip', 'ss') && (ready || inCI))('no addon fits: the addon-free parts work, the rest says why', () => {
  const ns = new Netns('loader');
  let pkg: string;
  let r: Report;
  beforeAll(async () => {
    ns.create();
    pkg = install({});
    r = await report(pkg, {}, ns);
  }, 60_000);
  afterAll(() => ns.destroy());

  it('import succeeds; every addon-backed call throws ERR_SOCKTUNE_NO_ADDON naming the platform and the fix', () => {
    expect(r.addon.path).toBeUndefined();
    expect(r.addon.code).toBe('ERR_SOCKTUNE_NO_ADDON');
    // A policy is data and calls nothing native: it builds (so socktune/register can check its
    // configuration and fail open); applying it is what needs the addon.
    expect(r.results.gracefulHeartbeat).toEqual({ value: 'graceful-heartbeat' });
    expect(r.results.rstOnClose).toEqual({ value: 'rst-on-close' });
    for (const name of ['configure', 'readOptions', 'tcpInfo', 'sendQueue', 'tune']) {
      expect(r.results[name], name).toMatchObject({ code: 'ERR_SOCKTUNE_NO_ADDON' });
      expect(r.results[name].message).toContain(`linux-${process.arch} (glibc), Node ${process.version}: no prebuild fits and none was built from source`);
      expect(r.results[name].message).toContain('npm rebuild socktune');
      expect(r.results[name].cause).toMatch(/^No native build was found for platform=linux/);
    }
  });

  it('connectionStates() counts from /proc: the listener and both ends of its connection, nothing else in a fresh namespace', async () => {
    const got = r.results.connectionStates.value as { source: string; states: Record<string, number>; total: number };
    expect(got.source).toBe('proc');
    expect(got.states).toMatchObject({ LISTEN: 1, ESTABLISHED: 2 });
    expect(got.total).toBe(3);
  });

  it('sysctlAudit() gives the findings the addon-backed process gives in the same namespace', async () => {
    const settings = r.results.sysctlAudit.value as string[];
    expect(settings.length).toBeGreaterThan(10);
    // Some settings exist only in the initial namespace (tcp_max_orphans): compare like with like.
    const index = new URL('../dist/index.js', import.meta.url).href;
    const withAddon = JSON.parse(
      await ns.exec(process.execPath, [
        '--input-type=module',
        '-e',
        `const { sysctlAudit } = await import(${JSON.stringify(index)}); console.log(JSON.stringify(sysctlAudit().findings.map((f) => f.setting)))`,
      ]),
    ) as string[];
    expect(new Set(settings)).toEqual(new Set(withAddon));
  });

  it('socktune stat --json and doctor --json run; doctor names the missing addon on each row', async () => {
    const cli = join(pkg, 'dist', 'cli.js');
    const stat = JSON.parse(await ns.exec('setpriv', [...NOBODY, nodeForNobody(), cli, 'stat', '--json']));
    expect(stat).toMatchObject({ scope: 'namespace', source: 'proc' });
    const doctor = await run('ip', ['netns', 'exec', ns.name, 'setpriv', ...NOBODY, nodeForNobody(), cli, 'doctor', '--json']).catch(
      (err: { stdout: string }) => ({ stdout: err.stdout }),
    );
    const json = JSON.parse(doctor.stdout) as { findings: unknown[]; selfCheck: { rows: Array<{ name: string; ok: boolean; error?: string }> } };
    expect(json.findings.length).toBeGreaterThan(10);
    expect(json.selfCheck.rows.length).toBeGreaterThan(9);
    for (const row of json.selfCheck.rows) {
      expect(row.ok, row.name).toBe(false);
      expect(row.error, row.name).toMatch(/^ERR_SOCKTUNE_NO_ADDON: socktune's native addon is not available on linux-/);
    }
  });
});

describe.runIf(canUse('setpriv') && (ready || inCI))('a prebuild that fits by name but not this machine', () => {
  it('an arm64 file where the x64 one belongs: ERR_SOCKTUNE_NO_ADDON with the loader error, no crash', async () => {
    const pkg = install({ 'linux-x64/socktune.glibc.node': prebuilt('linux-arm64', 'socktune.glibc.node') });
    const r = await report(pkg);
    expect(r.addon.code).toBe('ERR_SOCKTUNE_NO_ADDON');
    expect(r.addon.message).toContain('prebuilds/linux-x64/socktune.glibc.node does not load here');
    expect(r.results.configure).toMatchObject({ code: 'ERR_SOCKTUNE_NO_ADDON' });
    expect(r.results.configure.cause).toMatch(/ELF|cannot open shared object/);
  });
});

describe.runIf(canUse('setpriv') && (ready || inCI))('the C library: the file matches the process, not /etc/alpine-release', () => {
  it('node-gyp-build told musl (as on Alpine) in a glibc process: socktune loads the glibc file and it works', async () => {
    const pkg = install({
      'linux-x64/socktune.glibc.node': prebuilt('linux-x64', 'socktune.glibc.node'),
      'linux-x64/socktune.musl.node': prebuilt('linux-x64', 'socktune.musl.node'),
    });
    const picked = execFileSync(process.execPath, ['-e', `console.log(require('node-gyp-build').resolve(${JSON.stringify(pkg)}))`], {
      cwd: pkg,
      env: { ...process.env, LIBC: 'musl', PREBUILDS_ONLY: '' },
    })
      .toString()
      .trim();
    expect(picked).toBe(join(pkg, 'prebuilds', 'linux-x64', 'socktune.musl.node'));
    // The control: that file cannot load into this (glibc) process.
    expect(() => execFileSync(process.execPath, ['-e', `require(${JSON.stringify(picked)})`], { stdio: 'pipe' })).toThrow();
    const r = await report(pkg, { LIBC: 'musl' });
    expect(r.addon.path).toBe(join(pkg, 'prebuilds', 'linux-x64', 'socktune.glibc.node'));
    expect(r.results.configure).toEqual({ value: 'applied' });
    expect(r.results.readOptions).toEqual({ value: true });
  });
});

describe.runIf(canUse('setpriv') && (ready || inCI))('socktune/register on a host without the addon fails open', () => {
  let pkg: string;
  const app = fileURLToPath(new URL('./fixtures/register-no-addon-app.mjs', import.meta.url));
  beforeAll(() => {
    pkg = packageCopy({ files: { 'app.mjs': app } }).pkg;
  });

  async function start(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const argv = ['setpriv', ...NOBODY, nodeForNobody(), '--import', join(pkg, 'dist', 'register', 'index.js'), join(pkg, 'app.mjs'), pkg];
    return new Promise((resolve) => {
      execFile(argv[0], argv.slice(1), { env: { ...process.env, PREBUILDS_ONLY: '', NODE_OPTIONS: '', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  }

  it('one warning line, the application runs untouched, and stats() says why', async () => {
    const r = await start({ SOCKTUNE_POLICY: 'gracefulHeartbeat' });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^socktune\/register: not active, the process runs without it: .*\(ERR_SOCKTUNE_NO_ADDON; SOCKTUNE_STRICT=1 stops instead\)$/);
    const out = JSON.parse(r.stdout) as { body: string; stats: { active: boolean; reason: string; tuned: number } };
    expect(out.body).toBe('ok');
    expect(out.stats).toMatchObject({ active: false, tuned: 0 });
    expect(out.stats.reason).toMatch(/^ERR_SOCKTUNE_NO_ADDON: /);
  });

  it('SOCKTUNE_STRICT=1 stops the process instead (exit code 9)', async () => {
    const r = await start({ SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_STRICT: '1' });
    expect(r.code).toBe(9);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^socktune\/register: cannot work here, stopping \(SOCKTUNE_STRICT=1\): .*\(ERR_SOCKTUNE_NO_ADDON\)\n$/);
  });

  it('a bad configuration is still fatal: exit code 9 naming the variable', async () => {
    for (const env of [{ SOCKTUNE_POLICY: 'gracefulHartbeat' }, { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_STRICT: 'yes' }] as Array<
      Record<string, string>
    >) {
      const r = await start(env);
      expect(r.code, JSON.stringify(env)).toBe(9);
      expect(r.stderr).toMatch(/^socktune\/register: bad configuration, not starting: SOCKTUNE_(POLICY|STRICT).*\(ERR_SOCKTUNE_CONFIG\)\n$/);
    }
  });
});

// musl outside Alpine: musl's own install maps its loader as libc.so (Debian's musl, Void,
// distroless images), which node-gyp-build (by /etc/alpine-release) takes for glibc. The musl host
// is Bun's musl build from npm (npm carries no musl Node), run by Debian's musl with a
// compatibility shim named ld-linux-x86-64.so.2 mapped into it (scripts/runtimes.mjs): a process
// whose C library is musl while a file named like glibc's loader is mapped too.
describe.runIf((ready || inCI) && process.arch === 'x64')("musl outside Alpine (Bun's musl build, Debian's musl loader): recognised by what is mapped", () => {
  const libcHost = fileURLToPath(new URL('./fixtures/libc-host.mjs', import.meta.url));
  let pkg: string;
  beforeAll(() => {
    pkg = packageCopy({
      prebuilds: {
        'linux-x64/socktune.glibc.node': prebuilt('linux-x64', 'socktune.glibc.node'),
        'linux-x64/socktune.musl.node': prebuilt('linux-x64', 'socktune.musl.node'),
      },
      files: { 'libc-host.mjs': libcHost },
    }).pkg;
  });

  it('the loader sees musl, loads the musl prebuild (node-gyp-build alone picks the glibc one) and its calls set and read TCP_USER_TIMEOUT', async () => {
    const musl = runtime('bun-musl');
    if (musl === undefined) return;
    const r = await runUnder(musl, [join(pkg, 'libc-host.mjs'), pkg], { env: { PREBUILDS_ONLY: '' } });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { libc: string; nodeGypBuild: string; addon: string | null; error: string | null; userTimeout: unknown };
    expect(readFileSync(`/proc/${process.pid}/maps`, 'latin1')).not.toContain('x86_64-linux-musl');
    expect(got.nodeGypBuild).toBe(join(pkg, 'prebuilds', 'linux-x64', 'socktune.glibc.node'));
    expect(got).toMatchObject({ libc: 'musl', addon: join(pkg, 'prebuilds', 'linux-x64', 'socktune.musl.node'), error: null });
    expect(got.userTimeout).toEqual({ applied: 0, read: 0, value: 12345 });
  });

  it("the same host on glibc (Bun's glibc build): glibc, and the glibc prebuild", async () => {
    const bun = runtime('bun');
    if (bun === undefined) return;
    const r = await runUnder(bun, [join(pkg, 'libc-host.mjs'), pkg], { env: { PREBUILDS_ONLY: '' } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ libc: 'glibc', addon: join(pkg, 'prebuilds', 'linux-x64', 'socktune.glibc.node'), error: null });
  });

  it("only the other C library's prebuild: no addon, and the reason names the C library", async () => {
    const musl = runtime('bun-musl');
    if (musl === undefined) return;
    const only = packageCopy({
      prebuilds: { 'linux-x64/socktune.glibc.node': prebuilt('linux-x64', 'socktune.glibc.node') },
      files: { 'libc-host.mjs': libcHost },
    }).pkg;
    const r = await runUnder(musl, [join(only, 'libc-host.mjs'), only], { env: { PREBUILDS_ONLY: '' } });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { addon: string | null; error: string };
    expect(got.addon).toBeNull();
    expect(got.error).toContain('linux-x64 (musl)');
    expect(got.error).toContain('no prebuild fits and none was built from source');
  });

  /**
   * The package's install script as npm runs it (sh -c, the package's directory, its .bin on PATH),
   * with `node` being the musl host and every compiler and build tool a shim that logs and fails.
   */
  async function install(script: string, dir: string): Promise<{ code: number | null; output: string; compilers: string }> {
    const musl = runtime('bun-musl')!;
    const bin = mkdtempSync(join(tmpdir(), 'socktune-install-bin-'));
    const log = join(bin, 'calls.log');
    writeFileSync(join(bin, 'node'), `#!/bin/sh\nexec '${musl.bin}' "$@"\n`, { mode: 0o755 });
    for (const name of ['cc', 'gcc', 'g++', 'c++', 'make', 'python3', 'node-gyp']) {
      writeFileSync(join(bin, name), `#!/bin/sh\necho "$0 $*" >> '${log}'\nexit 127\n`, { mode: 0o755 });
    }
    mkdirSync(join(dir, 'node_modules', '.bin'), { recursive: true });
    const ngb = join(dir, 'node_modules', '.bin', 'node-gyp-build');
    if (!existsSync(ngb)) symlinkSync('../node-gyp-build/bin.js', ngb);
    try {
      const r = await new Promise<{ code: number | null; output: string }>((resolve) => {
        execFile(
          'sh',
          ['-c', script],
          {
            cwd: dir,
            timeout: 120_000,
            env: {
              ...process.env,
              ...musl.env,
              PATH: `${bin}:${join(dir, 'node_modules', '.bin')}:/usr/bin:/bin`,
              PREBUILDS_ONLY: '',
              CC: join(bin, 'cc'),
              CXX: join(bin, 'c++'),
            },
          },
          (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
        );
      });
      return { ...r, compilers: existsSync(log) ? readFileSync(log, 'utf8') : '' };
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  }

  it('the install step (scripts on) takes the musl prebuild and compiles nothing; node-gyp-build alone compiles (the control)', async () => {
    if (runtime('bun-musl') === undefined) return;
    const script = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: { install: string } }).scripts.install;
    const ours = await install(script, pkg);
    expect(ours.code, ours.output).toBe(0);
    expect(ours.output).toContain('prebuilds/linux-x64/socktune.musl.node loads on linux-x64 (musl); nothing to build');
    expect(ours.compilers).toBe('');
    const control = await install('node-gyp-build', pkg);
    expect(control.compilers).toMatch(/node-gyp|make|g\+\+|c\+\+/);
  });
});
