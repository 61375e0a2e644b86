// Packs socktune the way it is published and installs the tarball into an empty project with no
// compiler reachable, then checks that the shipped prebuild (not a local build) is what loads and
// that the socket options round-trip through the kernel.
//
//   node scripts/pack-smoke.mjs            build what is stale (prebuild, dist/), pack, install, smoke
//   node scripts/pack-smoke.mjs --keep     keep the temp dirs for inspection (paths are printed)
//   node scripts/pack-smoke.mjs --rebuild  rebuild the prebuild and dist/ even if they look fresh
//
// Dependencies of the package come from the npm registry (npm install --ignore-scripts).
// Prints PASS/FAIL lines, then `pack-smoke: N passed, M failed`; exits 1 on any failure.
import { spawnSync } from 'node:child_process';
import {
  chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanEnv, mtime, run, tail as tailLines, walk } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
for (const a of args) {
  if (!['--keep', '--rebuild', '--help', '-h'].includes(a)) {
    console.error(`pack-smoke: unknown argument ${a}`);
    process.exit(2);
  }
}
if (args.has('--help') || args.has('-h')) {
  console.log('usage: node scripts/pack-smoke.mjs [--keep] [--rebuild]');
  process.exit(0);
}
const keep = args.has('--keep');
const forceRebuild = args.has('--rebuild');
const tuple = `${process.platform}-${process.arch}`;

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  return ok;
}
function info(msg) {
  console.log(`     ${msg}`);
}

const tail = (text, lines = 25) => tailLines(text, lines, '       | ');

// ---------------------------------------------------------------- 1. build what is missing or stale

function prebuildStatus() {
  const dir = join(root, 'prebuilds', tuple);
  const bins = walk(dir, (p) => p.endsWith('.node'));
  if (bins.length === 0) return `missing (${relative(root, dir)}/*.node)`;
  const sources = [join(root, 'binding.gyp'), ...walk(join(root, 'native'), () => true)].filter(existsSync);
  const newest = Math.max(...sources.map(mtime));
  const oldest = Math.min(...bins.map(mtime));
  return newest > oldest ? 'older than native/ or binding.gyp' : null;
}

function distStatus() {
  const sources = walk(join(root, 'src'), (p) => /\.(c|m)?ts$/.test(p) && !/\.d\.(c|m)?ts$/.test(p));
  if (sources.length === 0) return 'no sources in src/';
  for (const src of sources) {
    const rel = relative(join(root, 'src'), src).replace(/\.(c|m)?ts$/, (m) => m.replace('ts', 'js'));
    const out = join(root, 'dist', rel);
    if (!existsSync(out)) return `missing ${relative(root, out)}`;
    if (mtime(out) < mtime(src)) return `${relative(root, out)} older than its source`;
  }
  if (existsSync(join(root, 'tsconfig.json')) && !existsSync(join(root, 'dist', 'index.js'))) return 'missing dist/index.js';
  return null;
}

function buildStep(name, reason, argv) {
  if (!reason && !forceRebuild) {
    check(`${name} up to date`, true);
    return true;
  }
  info(`${name}: ${forceRebuild ? 'rebuild requested' : reason}; running ${argv.join(' ')}`);
  const r = run(process.execPath, argv, { cwd: root, env: cleanEnv() });
  const ok = check(`${name} built`, r.status === 0, r.status === 0 ? undefined : `exit ${r.status}`);
  if (!ok) console.log(tail(r.stdout + r.stderr));
  return ok;
}

// ---------------------------------------------------------------- 2..5 pack, install, smoke

const work = mkdtempSync(join(tmpdir(), 'socktune-pack-'));
const cleanup = () => {
  if (keep) console.log(`     kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
};
process.on('SIGINT', () => { cleanup(); process.exit(130); });
process.on('SIGTERM', () => { cleanup(); process.exit(143); });

function main() {
  const tscBin = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!buildStep('prebuild', prebuildStatus(), [join(root, 'scripts', 'prebuild.mjs')])) return;
  if (!buildStep('dist/', distStatus(), [tscBin, '-p', root])) return;

  // -- pack
  const packDir = join(work, 'pack');
  mkdirSync(packDir);
  const packed = run('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: root, env: cleanEnv() });
  let manifest;
  try {
    manifest = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0];
  } catch {
    manifest = undefined;
  }
  if (!check('npm pack', packed.status === 0 && manifest, packed.status === 0 ? manifest?.filename : `exit ${packed.status}`)) {
    console.log(tail(packed.stdout + packed.stderr));
    return;
  }
  const tarball = join(packDir, manifest.filename);
  const files = new Set(manifest.files.map((f) => f.path));
  info(`${manifest.filename}: ${manifest.entryCount} files, ${(manifest.size / 1024).toFixed(1)} KiB packed, ${(manifest.unpackedSize / 1024).toFixed(1)} KiB unpacked`);

  // -- tarball contents
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const referenced = new Set();
  const addRef = (p) => typeof p === 'string' && referenced.add(p.replace(/^\.\//, ''));
  addRef(pkg.main);
  addRef(pkg.types);
  const walkExports = (e) => {
    if (typeof e === 'string') addRef(e);
    else if (e && typeof e === 'object') Object.values(e).forEach(walkExports);
  };
  walkExports(pkg.exports);
  const missingRefs = [...referenced].filter((p) => !files.has(p));
  check('tarball holds the files of main, types and exports', missingRefs.length === 0,
    missingRefs.length ? `missing: ${missingRefs.join(', ')}` : [...referenced].join(', '));
  const bins = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {});
  for (const [name, target] of Object.entries(bins)) {
    const p = target.replace(/^\.\//, '');
    check(`tarball holds the \`${name}\` bin target ${p}`, files.has(p));
  }
  const prebuilt = [...files].filter((f) => f.startsWith(`prebuilds/${tuple}/`) && f.endsWith('.node'));
  check(`tarball holds a prebuild for ${tuple}`, prebuilt.length > 0, prebuilt.join(', ') || 'none');
  const leaked = [...files].filter((f) => /^(build|src|test|\.ci|node_modules|scripts)\//.test(f) || f.endsWith('.tgz'));
  check('tarball holds no build/, src/, test/, scripts/ or .ci/ files', leaked.length === 0, leaked.slice(0, 5).join(', ') || undefined);
  if (!files.has('README.md')) info('WARN tarball has no README.md');

  // -- no compiler: shims that fail loudly and log, first in PATH
  const shimDir = join(work, 'no-compiler-bin');
  const shimLog = join(work, 'compiler-calls.log');
  mkdirSync(shimDir);
  for (const name of ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'ld', 'make', 'gmake', 'cmake', 'python', 'python3', 'node-gyp', 'prebuild-install']) {
    const p = join(shimDir, name);
    writeFileSync(p, `#!/bin/sh\necho "$0 $*" >> '${shimLog}'\necho "pack-smoke: '$0' was called but no compiler may be used" >&2\nexit 127\n`);
    chmodSync(p, 0o755);
  }
  const noCompilerEnv = (extra = {}) => cleanEnv({
    PATH: `${shimDir}:${process.env.PATH ?? ''}`,
    CC: join(shimDir, 'cc'),
    CXX: join(shimDir, 'c++'),
    npm_config_build_from_source: '',
    ...extra,
  });

  // -- empty project + install
  const project = join(work, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'socktune-pack-smoke', version: '0.0.0', private: true }, null, 2)}\n`);
  const inst = run('npm', ['install', tarball, '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', project],
    { cwd: project, env: noCompilerEnv() });
  if (!check('npm install <tarball> --ignore-scripts into an empty project', inst.status === 0, inst.status === 0 ? undefined : `exit ${inst.status}`)) {
    console.log(tail(inst.stdout + inst.stderr));
    return;
  }
  const installed = join(project, 'node_modules', 'socktune');
  check('installed package has no build/ directory', !existsSync(join(installed, 'build')));

  // -- smoke test, as a user would run it (no PREBUILDS_ONLY: the prebuild must win on its own)
  writeFileSync(join(project, 'smoke.mjs'), SMOKE);
  const smoke = run(process.execPath, ['smoke.mjs'], { cwd: project, env: noCompilerEnv(), timeout: 30_000 });
  const lines = (smoke.stdout || '').trimEnd().split('\n').filter(Boolean);
  let smokeFails = 0;
  for (const line of lines) {
    const m = /^(PASS|FAIL) (.*)$/.exec(line);
    if (m) smokeFails += check(m[2], m[1] === 'PASS') ? 0 : 1;
    else console.log(`     ${line}`);
  }
  if ((smoke.status !== 0 && smokeFails === 0) || lines.length === 0) {
    check('smoke test process exited cleanly', false, `exit ${smoke.status}`);
    if (smoke.stderr.trim()) console.log(tail(smoke.stderr));
  }

  // -- again with PREBUILDS_ONLY=1 (node-gyp-build may not consider build/ at all)
  const only = run(process.execPath, ['smoke.mjs', '--quiet'], { cwd: project, env: noCompilerEnv({ PREBUILDS_ONLY: '1' }), timeout: 30_000 });
  check('smoke test passes with PREBUILDS_ONLY=1', only.status === 0, only.status === 0 ? undefined : `exit ${only.status}`);
  if (only.status !== 0) console.log(tail(only.stdout + only.stderr));

  const calls = existsSync(shimLog) ? readFileSync(shimLog, 'utf8').trim() : '';
  check('no compiler or build tool was invoked', calls === '', calls.split('\n')[0] || undefined);
}

// Runs inside the temp project, which has nothing but socktune and its dependencies installed.
const SMOKE = String.raw`
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join, sep } from 'node:path';

const quiet = process.argv.includes('--quiet');
let failures = 0;
function check(name, ok, detail) {
  if (!ok) failures++;
  if (!quiet || !ok) console.log((ok ? 'PASS ' : 'FAIL ') + name + (detail === undefined ? '' : ' (' + detail + ')'));
}
const timer = setTimeout(() => { check('smoke test finished within 10 s', false); process.exit(1); }, 10_000);

const require = createRequire(import.meta.url);
const pkgDir = realpathSync(dirname(require.resolve('socktune/package.json')));
const prebuildsDir = join(pkgDir, 'prebuilds') + sep;
const pkgRequire = createRequire(join(pkgDir, 'package.json'));
const resolved = pkgRequire('node-gyp-build').resolve(pkgDir);
check('node-gyp-build resolves the shipped prebuild', resolved.startsWith(prebuildsDir), resolved.slice(pkgDir.length + 1));

const socktune = await import('socktune');
for (const name of ['configure', 'readOptions', 'tcpInfo', 'sendQueue']) {
  check("import 'socktune' exports " + name + '()', typeof socktune[name] === 'function');
}
if (existsSync('/proc/self/maps')) {
  const loaded = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\n')
    .map((l) => l.slice(l.indexOf('/'))).filter((p) => p.endsWith('.node') && p.startsWith(pkgDir + sep)))];
  check('the loaded addon is the prebuild', loaded.length === 1 && loaded[0].startsWith(prebuildsDir),
    loaded.map((p) => p.slice(pkgDir.length + 1)).join(', ') || 'no socktune .node mapped');
}

const server = net.createServer((s) => s.on('error', () => {}));
await new Promise((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', res));
const client = net.connect(server.address().port, '127.0.0.1');
try {
  await new Promise((res, rej) => client.once('connect', res).once('error', rej));
  socktune.configure(client, { keepAlive: { idle: 1500, interval: 1000, count: 3 }, userTimeout: 9000, noDelay: true });
  const o = socktune.readOptions(client);
  const ka = o.keepAlive || {};
  check('readOptions keepAlive.idle is 2000 (1500 rounded up to whole seconds)', ka.idle === 2000, 'got ' + ka.idle);
  check('readOptions keepAlive.interval is 1000', ka.interval === 1000, 'got ' + ka.interval);
  check('readOptions keepAlive.count is 3', ka.count === 3, 'got ' + ka.count);
  check('readOptions userTimeout is 9000', o.userTimeout === 9000, 'got ' + o.userTimeout);
  check('readOptions noDelay is true', o.noDelay === true, 'got ' + o.noDelay);
  const state = socktune.tcpInfo(client).state;
  check("tcpInfo(client).state is 'ESTABLISHED'", state === 'ESTABLISHED', 'got ' + state);
} catch (err) {
  check('smoke test ran without throwing', false, err && err.stack || String(err));
} finally {
  client.destroy();
  server.close();
  clearTimeout(timer);
}
process.exitCode = failures ? 1 : 0;
`;

try {
  main();
} catch (err) {
  check('pack-smoke ran without throwing', false, err?.stack ?? String(err));
} finally {
  cleanup();
}
console.log(failed === 0 && passed > 0 ? 'PASS pack-smoke' : 'FAIL pack-smoke');
console.log(`pack-smoke: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
