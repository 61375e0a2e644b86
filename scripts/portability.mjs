// Runs the vitest suite on several Node.js majors against the prebuilt Node-API addon only
// (PREBUILDS_ONLY=1: node-gyp-build never looks at build/), to prove that one prebuild serves them all.
//
//   node scripts/portability.mjs                      system Node + Node 22, 24, 26
//   node scripts/portability.mjs --majors 22,26       system Node + the listed majors
//   node scripts/portability.mjs --no-system          only the listed majors
//   node scripts/portability.mjs --refresh            fetch the Node binaries again
//   node scripts/portability.mjs --rebuild            rebuild the prebuild and dist/ even if they look fresh
//   node scripts/portability.mjs --verbose            stream vitest's output instead of keeping it in a log
//   node scripts/portability.mjs --results FILE       also write { ok, passed, failed, runs: [...] } as JSON
//   node scripts/portability.mjs --arch arm64         the arm64 subset below on arm64 Node 20 and 22, under qemu-user
//   node scripts/portability.mjs --runtime bun        the Bun subset below under Bun (its glibc build, scripts/runtimes.mjs)
//   node scripts/portability.mjs --runtime bun-musl   the same under Bun's musl build, run by Debian's musl (the musl prebuild)
//   node scripts/portability.mjs -- <vitest args>     e.g. a test file filter, or --root DIR
//
// Node binaries come from the npm registry package node-<platform>-<arch>@<major> (npm pack, then
// extract) into node_modules/.cache/socktune-node/<os>-<arch>/<major>/package/bin/node and are
// reused from there. The prebuild (scripts/prebuilds.mjs) and dist/ (tsc, used by the test
// fixtures) are built with the running Node when missing or older than their sources. Vitest's
// counts come from its JSON reporter.
//
// --arch arm64 runs vitest itself on the emulated Node (qemu-aarch64-static, with Debian's aarch64
// C library from g++-aarch64-linux-gnu), so the arm64 prebuild is loaded by an arm64 Node. Vitest
// runs its files in threads there (its forks would exec the arm64 binary directly, which needs
// binfmt_misc), with rolldown's arm64 binding from the registry, and a `node` on PATH that starts
// the emulated Node. The files and the tests left out, with the reason for each, are in ARM64 below.
// Prints a table, then `portability: N passed, M failed`; exits 1 if any run failed.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanEnv, fetchNode as fetchNodeBinary, fetchPackage, mtime, run, runner, tail as tailLines, walk } from './lib.mjs';
import { prebuildPath, staleness, targets as prebuildTargets } from './prebuilds.mjs';
import { runtime as fetchRuntime } from './runtimes.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cacheRoot = join(root, 'node_modules', '.cache', 'socktune-node');

// ---------------------------------------------------------------- arguments

const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const own = dashdash === -1 ? argv : argv.slice(0, dashdash);
const vitestArgs = dashdash === -1 ? [] : argv.slice(dashdash + 1);
let majors;
let arch = process.arch;
const flags = new Set();
let resultsFile;
let other;
for (let i = 0; i < own.length; i++) {
  const a = own[i];
  if (a === '--majors' || a.startsWith('--majors=')) {
    const v = a === '--majors' ? own[++i] : a.slice('--majors='.length);
    if (!v || !/^\d+(,\d+)*$/.test(v.replace(/\s/g, ''))) usage(`--majors wants a list like 22,26, got ${v ?? 'nothing'}`);
    majors = [...new Set(v.replace(/\s/g, '').split(',').map(Number))];
  } else if (a === '--results' || a.startsWith('--results=')) {
    const v = a === '--results' ? own[++i] : a.slice('--results='.length);
    if (!v) usage('--results wants a file name');
    resultsFile = resolve(v);
  } else if (a === '--arch' || a.startsWith('--arch=')) {
    arch = a === '--arch' ? own[++i] : a.slice('--arch='.length);
    if (arch !== process.arch && !(process.arch === 'x64' && arch === 'arm64'))
      usage(`--arch ${arch}: this machine runs ${process.arch}, and arm64 under qemu-user`);
  } else if (a === '--runtime' || a.startsWith('--runtime=')) {
    other = a === '--runtime' ? own[++i] : a.slice('--runtime='.length);
    if (other !== 'bun' && other !== 'bun-musl') usage(`--runtime wants bun or bun-musl, got ${other ?? 'nothing'}`);
  } else if (['--no-system', '--refresh', '--rebuild', '--verbose'].includes(a)) {
    flags.add(a);
  } else if (a === '--help' || a === '-h') {
    usage();
  } else {
    usage(`unknown argument ${a} (vitest arguments go after --)`);
  }
}
function usage(err) {
  const text =
    'usage: node scripts/portability.mjs [--arch arm64] [--majors 22,24,26] [--no-system] [--refresh] [--rebuild] [--verbose] [--results FILE] [-- vitest args]';
  if (err) console.error(`portability: ${err}\n${text}`);
  else console.log(text);
  process.exit(err ? 2 : 0);
}
const emulated = arch !== process.arch;
majors ??= emulated || other ? [20, 22] : [22, 24, 26];
if (emulated || other) flags.add('--no-system');
/** The prebuild this run loads (glibc: the C library of the registry's Node builds; musl under Bun's musl build). */
const target = prebuildTargets.find((t) => t.name === `linux-${arch}-${other === 'bun-musl' ? 'musl' : 'glibc'}`);
/** How a Node binary of `arch` is started here ([] natively, qemu-user for arm64). */
const pre = runner(process.platform, arch);

// What the arm64 run covers: the files on socket options, validation, handles, connecting, the
// views, worker threads and policies, whole but for the tests below. qemu-user passes integer
// setsockopt/getsockopt through to the kernel; what it does not translate is named with each.
const ARM64 = {
  files: [
    'test/01-options.test.ts',
    'test/02-validation.test.ts',
    'test/03-handles.test.ts',
    'test/04-connecting.test.ts',
    'test/05-views.test.ts',
    'test/06-workers.test.ts',
    'test/14-policy.test.ts',
  ],
  excluded: [
    { test: '(strace)', why: 'runs strace -f process.execPath: the arm64 binary starts only through qemu, and binfmt_misc is not mounted here' },
    {
      test: 'reports ESTABLISHED with a measured round-trip time',
      why: 'qemu-user copies 4 bytes of getsockopt(TCP_INFO): the state is right, rtt and the rest read 0',
    },
    { test: 'count bytes held by the kernel when the reader is paused', why: 'qemu-user answers ENOSYS to the SIOCOUTQNSD ioctl' },
    { test: 'is the cookie ss -e prints', why: 'qemu-user answers EINVAL to getsockopt(SO_COOKIE), an 8-byte value' },
  ],
};

// What the Bun run covers: the files that hold whole under Bun (options, validation, connecting,
// views, workers, policies as data, the loader, states, audit, watch, metrics, the CLI, stat,
// scrape, doctor, register's names). The rest assert what Bun does differently, each for a reason
// (measured with this script on every file, Bun 1.4.4):
//   03-handles                reads Node's TCP class (process.binding('tcp_wrap')) in the test itself
//   15-reset, 24-reset-drain  bytesAtRisk exact to the byte: Bun buffers a partly written chunk natively and
//                             says not how much of it the kernel took, so socktune counts that chunk whole
//                             (an overstatement, never an understatement); Node's resetAndDestroy on TLS
//   17-guard, 22-no-harm, 26-reset-no-harm, 46-no-harm-footprint, 50-readme
//                             Node's HTTP server (a net.Server with Node's connection list): Bun's runs on
//                             Bun.serve and exposes no fd (tuneServer refuses it by name)
//   18-agent, 30-pool-dropin, 31-agentkeepalive, 38-pool-retry
//                             the internals of Node's http.Agent and ClientRequest (Keep-Alive hints, the
//                             free-socket timeout, retries), which Bun's http client does not share
//   19-undici-nginx, 29-pool-non-tcp
//                             `undici` names Bun's built-in stand-in there (the tests import it by name)
//   21-fuzz                   its fixture checks Node's own error messages for hostile arguments
//   32-register, 44-register-config
//                             node --import and Node's diagnostics channels; Bun's --preload is tested in
//                             test/52-runtimes.test.ts, run by Node
const BUN = {
  files: [
    'test/00-tables.test.ts',
    'test/01-options.test.ts',
    'test/02-validation.test.ts',
    'test/04-connecting.test.ts',
    'test/05-views.test.ts',
    'test/06-workers.test.ts',
    'test/08-cli-doctor.test.ts',
    'test/09-loader.test.ts',
    'test/10-states.test.ts',
    'test/11-audit.test.ts',
    'test/12-watch.test.ts',
    'test/13-metrics.test.ts',
    'test/14-policy.test.ts',
    'test/40-stat-scope.test.ts',
    'test/41-cli.test.ts',
    'test/42-scrape.test.ts',
    'test/43-doctor-connections.test.ts',
    'test/45-register-names.test.ts',
  ],
  // The loader's cases are written for a glibc test process (glibc prebuilds, the glibc label);
  // the musl host's are in that file too, run from a glibc process.
  notUnderMusl: ['test/09-loader.test.ts'],
  excluded: [
    {
      test: '+50 per the seconds between the two reads',
      why: "assumes that opening 50 connections inside a frame's write takes over 25 ms (so that two frames are 75 ms apart); Bun opens them faster",
    },
  ],
};

function exclusionPattern(list) {
  const escaped = list.map((e) => e.test.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return `^(?!.*(?:${escaped.join('|')}))`;
}

// ---------------------------------------------------------------- helpers

const tail = (text, lines = 30) => tailLines(text, lines, '    | ');

class Failure extends Error {
  constructor(message, detail) {
    super(message);
    this.detail = detail;
  }
}

function writeResults(results) {
  if (!resultsFile) return;
  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(resultsFile, `${JSON.stringify(results, null, 2)}\n`);
}

function fatal(msg, detail) {
  writeResults({ ok: false, passed: 0, failed: 1, error: msg, runs: [] });
  console.log(`FAIL ${msg}`);
  if (detail) console.log(tail(detail));
  console.log('FAIL portability');
  console.log('portability: 0 passed, 1 failed');
  process.exit(1);
}

// ---------------------------------------------------------------- 1. prebuild and dist/

function prebuildStatus() {
  return staleness(target) && `${relative(root, prebuildPath(target))}: ${staleness(target)}`;
}

function distStatus() {
  for (const src of walk(join(root, 'src'), (p) => /\.(c|m)?ts$/.test(p) && !/\.d\.(c|m)?ts$/.test(p))) {
    const out = join(root, 'dist', relative(join(root, 'src'), src).replace(/ts$/, 'js'));
    if (!existsSync(out)) return `missing ${relative(root, out)}`;
    if (mtime(out) < mtime(src)) return `${relative(root, out)} older than its source`;
  }
  return null;
}

function ensureBuilt(name, reason, args) {
  if (!reason && !flags.has('--rebuild')) return console.log(`ok   ${name} up to date`);
  console.log(`..   ${name}: ${reason ?? 'rebuild requested'}; building with node ${process.version}`);
  const r = run(process.execPath, args, { cwd: root, env: cleanEnv() });
  if (r.status !== 0) fatal(`${name} build failed (exit ${r.status})`, r.stdout + r.stderr);
  console.log(`ok   ${name} built`);
}

// ---------------------------------------------------------------- 2. Node binaries

function nodeVersion(bin) {
  const r = run(pre[0] ?? bin, [...pre.slice(1), ...(pre.length ? [bin] : []), '--version'], { timeout: 120_000, env: { ...process.env, ...otherEnv } });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** package/bin/node of node-<os>-<arch>@<major>, fetched once into the cache. */
function fetchNode(major) {
  let bin;
  try {
    bin = fetchNodeBinary(root, major, { arch, refresh: flags.has('--refresh'), log: (m) => console.log(`..   node ${major}: ${m}`) });
  } catch (err) {
    throw new Failure(`node ${major}: ${err.message}`, err.detail);
  }
  console.log(`ok   node ${major}: ${nodeVersion(bin)} (${relative(root, bin)})`);
  return bin;
}

// ---------------------------------------------------------------- 3. the suite on one Node

const logDir = join(cacheRoot, 'logs');
const SUITE_TIMEOUT_MS = 20 * 60_000;

/** A directory whose `node` starts `bin` through qemu-user, for tests and fixtures that spawn `node`. */
function nodeWrapper(bin) {
  const dir = join(dirname(dirname(bin)), 'qemu-bin');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'node'), `#!/bin/sh\nexec ${pre.map((a) => `'${a}'`).join(' ')} '${bin}' "$@"\n`, { mode: 0o755 });
  return dir;
}

/** rolldown's native binding for the emulated CPU or the musl host (vitest's bundler loads it through napi-rs). */
function rolldownBinding(libc = 'gnu') {
  const version = JSON.parse(readFileSync(join(root, 'node_modules', 'rolldown', 'package.json'), 'utf8')).version;
  const spec = `@rolldown/binding-linux-${arch}-${libc}@${version}`;
  const file = `rolldown-binding.linux-${arch}-${libc}.node`;
  const dir = join(root, 'node_modules', '.cache', 'socktune-rolldown', `${arch}-${libc}-${version}`);
  try {
    fetchPackage(spec, dir, { usable: (d) => existsSync(join(d, 'package', file)), log: (m) => console.log(`..   rolldown ${arch}: ${m}`) });
  } catch (err) {
    fatal(`rolldown ${arch}: ${err.message}`, err.detail);
  }
  return join(dir, 'package', file);
}

function runSuite(label, bin) {
  const version = nodeVersion(bin) ?? '?';
  const row = { label, version, passed: 0, failed: 0, skipped: 0, filesFailed: 0, brokenFiles: 0, seconds: 0, ok: false, note: '' };
  const env = cleanEnv({
    PREBUILDS_ONLY: '1',
    // The fast lane: the slow scenarios (test/slow/) run once, in npm test on the system Node.
    SOCKTUNE_TESTS: 'fast',
    // Tests and fixtures that spawn `node` get the same Node as the suite.
    PATH: `${emulated || other ? nodeWrapper(bin) : dirname(bin)}${delimiter}${process.env.PATH ?? ''}`,
    ...(other ? otherEnv : {}),
  });
  if (emulated) env.NAPI_RS_NATIVE_LIBRARY_PATH = rolldownBinding();
  if (other === 'bun-musl') env.NAPI_RS_NATIVE_LIBRARY_PATH = rolldownBinding('musl');
  const exec = (args, opts) => spawnSync(pre[0] ?? bin, [...pre.slice(1), ...(pre.length ? [bin] : []), ...args], opts);

  // The addon must load from prebuilds/ on this Node before the suite says anything.
  // Under another runtime, socktune's own loader decides (node-gyp-build alone takes a musl process outside Alpine for glibc).
  const probeCode = other
    ? `import(${JSON.stringify(join(root, 'dist', 'binding.js'))}).then((b) => console.log(b.addon.path ?? b.addon.error.message))`
    : `const p = require('node-gyp-build').resolve(${JSON.stringify(root)}); require(p); console.log(p)`;
  const probe = exec(['-e', probeCode], { cwd: root, env, timeout: 120_000, encoding: 'utf8' });
  const loaded = (probe.stdout ?? '').trim();
  if (probe.status !== 0 || loaded !== prebuildPath(target)) {
    row.note = `addon did not load from ${relative(root, prebuildPath(target))}: ${(
      (probe.stderr ?? '')
        .trim()
        .split('\n')
        .find((l) => /Error/.test(l)) ?? loaded
    ).slice(0, 120)}`;
    console.log(`FAIL ${label} (${version}): ${row.note}`);
    return row;
  }

  mkdirSync(logDir, { recursive: true });
  const log = join(logDir, `${label.replace(/\W+/g, '-')}.log`);
  const json = join(logDir, `${label.replace(/\W+/g, '-')}.json`);
  rmSync(json, { force: true });
  // vitest.config.ts may name its own JSON output (CI): point it at ours, never at the project's file.
  env.SOCKTUNE_TEST_RESULTS = json;
  const subset = other
    ? vitestArgs.length === 0
      ? ['-t', exclusionPattern(BUN.excluded), ...BUN.files.filter((f) => other !== 'bun-musl' || !BUN.notUnderMusl.includes(f))]
      : vitestArgs
    : emulated && vitestArgs.length === 0
      ? ['--pool=threads', '-t', exclusionPattern(ARM64.excluded), ...ARM64.files]
      : emulated
        ? ['--pool=threads', ...vitestArgs]
        : vitestArgs;
  const args = [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...subset];
  console.log(
    `..   ${label} (${version}): vitest run${subset.length ? ` ${subset.join(' ')}` : ''}, PREBUILDS_ONLY=1${flags.has('--verbose') ? '' : `, log ${relative(root, log)}`}`,
  );
  const started = Date.now();
  // A suite that hangs is a failure of this run, not a hung script.
  const limit = { timeout: SUITE_TIMEOUT_MS, killSignal: 'SIGKILL' };
  let r;
  if (flags.has('--verbose')) {
    r = exec(args, { cwd: root, env, stdio: 'inherit', ...limit });
  } else {
    const fd = openSync(log, 'w');
    try {
      r = exec(args, { cwd: root, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd], ...limit });
    } finally {
      closeSync(fd);
    }
  }
  const status = r.status;
  const timedOut = r.error?.code === 'ETIMEDOUT' || (r.signal === 'SIGKILL' && Date.now() - started >= SUITE_TIMEOUT_MS);
  row.seconds = (Date.now() - started) / 1000;

  let report;
  try {
    report = JSON.parse(readFileSync(json, 'utf8'));
  } catch {
    report = undefined;
  }
  if (report) {
    row.passed = report.numPassedTests ?? 0;
    row.failed = report.numFailedTests ?? 0;
    row.skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
    // numFailedTestSuites counts describe blocks too; the files are in testResults.
    const files = Array.isArray(report.testResults) ? report.testResults : [];
    const failedFiles = files.filter((f) => f.status !== 'passed' && f.status !== 'skipped' && f.status !== 'pending');
    row.filesFailed = failedFiles.length;
    row.brokenFiles = failedFiles.filter((f) => !f.assertionResults?.some((a) => a.status === 'failed')).length;
  }
  if (timedOut) row.note = `timed out after ${SUITE_TIMEOUT_MS / 60_000} min`;
  else if (!report) row.note = `no JSON report (vitest exit ${status ?? r.signal})`;
  else if (report.numTotalTests === 0 && row.filesFailed === 0) row.note = 'no test ran';
  else if (row.brokenFiles) row.note = `${row.brokenFiles} test file(s) failed outside any test`;
  else if (status !== 0 && row.failed === 0) row.note = `vitest exit ${status}`;
  row.ok = status === 0 && !!report && report.numTotalTests > 0 && row.failed === 0 && row.filesFailed === 0;

  console.log(
    `${row.ok ? 'PASS' : 'FAIL'} ${label} (${version}): ${row.passed} passed, ${row.failed} failed, ${row.skipped} skipped in ${row.seconds.toFixed(1)} s${row.note ? ` — ${row.note}` : ''}`,
  );
  if (!row.ok && !flags.has('--verbose') && existsSync(log)) console.log(tail(readFileSync(log, 'utf8'), 40));
  return row;
}

// ---------------------------------------------------------------- main

if (resultsFile) rmSync(resultsFile, { force: true });
ensureBuilt('prebuild', prebuildStatus(), [join(root, 'scripts', 'prebuilds.mjs'), '--only', target.name]);
ensureBuilt('dist/', distStatus(), [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root]);

const targets = [];
let otherEnv = {};
if (other) {
  try {
    const rt = fetchRuntime(other, { log: (m) => console.log(`..   ${other}: ${m}`) });
    otherEnv = rt.env;
    targets.push({ label: `${other} ${rt.version}`, bin: rt.bin });
  } catch (err) {
    fatal(`${other}: ${err.message}`, err.detail);
  }
  majors = [];
}
if (!flags.has('--no-system')) targets.push({ label: `system node ${process.versions.node.split('.')[0]}`, bin: process.execPath });
for (const major of majors) {
  try {
    targets.push({ label: `node ${major}${emulated ? ` ${arch} (qemu-user)` : ''}`, bin: fetchNode(major) });
  } catch (err) {
    if (err instanceof Failure) fatal(err.message, err.detail);
    throw err;
  }
}
if (targets.length === 0) usage('nothing to run');

const rows = targets.map((t) => runSuite(t.label, t.bin));

const header = ['node', 'version', 'passed', 'failed', 'skipped', 'files failed', 'time', 'result'];
const table = [
  header,
  ...rows.map((r) => [
    r.label,
    r.version,
    String(r.passed),
    String(r.failed),
    String(r.skipped),
    String(r.filesFailed),
    `${r.seconds.toFixed(1)} s`,
    r.ok ? 'PASS' : `FAIL${r.note ? ` (${r.note})` : ''}`,
  ]),
];
const widths = header.map((_, i) => Math.max(...table.map((row) => row[i].length)));
const line = (row) =>
  row
    .map((c, i) => (i >= 2 && i <= 6 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
    .join('  ')
    .trimEnd();
console.log('');
console.log(line(table[0]));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const row of table.slice(1)) console.log(line(row));
console.log('');

const allOk = rows.every((r) => r.ok);
const passed = rows.reduce((n, r) => n + r.passed, 0);
// A run that failed outside any test (addon did not load, a file did not import) counts as one failure.
const failed = rows.reduce((n, r) => n + (r.ok ? 0 : Math.max(r.failed, 1)), 0);
writeResults({ ok: allOk, passed, failed, runs: rows });
console.log(allOk ? 'PASS portability' : 'FAIL portability');
console.log(`portability: ${passed} passed, ${failed} failed`);
process.exit(allOk ? 0 : 1);
