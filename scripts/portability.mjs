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
//   node scripts/portability.mjs -- <vitest args>     e.g. a test file filter, or --root DIR
//
// Node binaries come from the npm registry package node-<platform>-<arch>@<major> (npm pack, then
// extract) into node_modules/.cache/socktune-node/<major>/package/bin/node and are reused from there.
// The prebuild (scripts/prebuild.mjs) and dist/ (tsc, used by the test fixtures) are built with the
// running Node when missing or older than their sources. Vitest's counts come from its JSON reporter.
// Prints a table, then `portability: N passed, M failed`; exits 1 if any run failed.
import { spawnSync } from 'node:child_process';
import {
  closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanEnv, mtime, run, tail as tailLines, walk } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cacheRoot = join(root, 'node_modules', '.cache', 'socktune-node');
const tuple = `${process.platform}-${process.arch}`;

// ---------------------------------------------------------------- arguments

const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const own = dashdash === -1 ? argv : argv.slice(0, dashdash);
const vitestArgs = dashdash === -1 ? [] : argv.slice(dashdash + 1);
let majors = [22, 24, 26];
const flags = new Set();
let resultsFile;
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
  } else if (['--no-system', '--refresh', '--rebuild', '--verbose'].includes(a)) {
    flags.add(a);
  } else if (a === '--help' || a === '-h') {
    usage();
  } else {
    usage(`unknown argument ${a} (vitest arguments go after --)`);
  }
}
function usage(err) {
  const text = 'usage: node scripts/portability.mjs [--majors 22,24,26] [--no-system] [--refresh] [--rebuild] [--verbose] [--results FILE] [-- vitest args]';
  if (err) console.error(`portability: ${err}\n${text}`);
  else console.log(text);
  process.exit(err ? 2 : 0);
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
  const dir = join(root, 'prebuilds', tuple);
  const bins = walk(dir, (p) => p.endsWith('.node'));
  if (bins.length === 0) return `missing (${relative(root, dir)}/*.node)`;
  const sources = [join(root, 'binding.gyp'), ...walk(join(root, 'native'), () => true)].filter(existsSync);
  return Math.max(...sources.map(mtime)) > Math.min(...bins.map(mtime)) ? 'older than native/ or binding.gyp' : null;
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

function nodePackage(major) {
  const os = process.platform === 'win32' ? 'win' : process.platform;
  return `node-${os}-${process.arch}@${major}`;
}

function nodeVersion(bin) {
  const r = run(bin, ['--version'], { timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** package/bin/node of node-<os>-<arch>@<major>, fetched once into the cache. */
function fetchNode(major) {
  const dir = join(cacheRoot, String(major));
  const bin = join(dir, 'package', 'bin', process.platform === 'win32' ? 'node.exe' : 'node');
  if (!flags.has('--refresh') && existsSync(bin)) {
    const v = nodeVersion(bin);
    if (v && v.startsWith(`v${major}.`)) {
      console.log(`ok   node ${major}: cached ${v} (${relative(root, bin)})`);
      return bin;
    }
    console.log(`..   node ${major}: cached binary unusable (${v ?? 'does not run'}), fetching again`);
  }
  const spec = nodePackage(major);
  console.log(`..   node ${major}: npm pack ${spec}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const packed = run('npm', ['pack', spec, '--json', '--pack-destination', tmp], { cwd: tmp, env: cleanEnv(), timeout: 15 * 60_000 });
    let filename;
    try {
      filename = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename;
    } catch {
      filename = undefined;
    }
    if (packed.status !== 0 || !filename) throw new Failure(`node ${major}: npm pack ${spec} failed (exit ${packed.status})`, packed.stdout + packed.stderr);
    const tgz = join(tmp, filename.replace(/^@/, '').replace(/\//, '-'));
    const x = run('tar', ['-xzf', tgz, '-C', tmp], { timeout: 10 * 60_000 });
    if (x.status !== 0) throw new Failure(`node ${major}: extracting ${filename} failed`, x.stdout + x.stderr);
    rmSync(tgz, { force: true });
    const tmpBin = join(tmp, relative(dir, bin));
    const v = nodeVersion(tmpBin);
    if (!v || !v.startsWith(`v${major}.`)) throw new Failure(`node ${major}: ${spec} holds no runnable Node ${major} (${v ?? 'does not run'})`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    console.log(`ok   node ${major}: fetched ${v} (${relative(root, bin)})`);
    return bin;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- 3. the suite on one Node

const logDir = join(cacheRoot, 'logs');
const SUITE_TIMEOUT_MS = 20 * 60_000;

function runSuite(label, bin) {
  const version = nodeVersion(bin) ?? '?';
  const row = { label, version, passed: 0, failed: 0, skipped: 0, filesFailed: 0, brokenFiles: 0, seconds: 0, ok: false, note: '' };
  const env = cleanEnv({
    PREBUILDS_ONLY: '1',
    // Tests and fixtures that spawn `node` get the same Node as the suite.
    PATH: `${dirname(bin)}${delimiter}${process.env.PATH ?? ''}`,
  });

  // The addon must load from prebuilds/ on this Node before the suite says anything.
  const probe = run(bin, ['-e', `const p = require('node-gyp-build').resolve(${JSON.stringify(root)}); require(p); console.log(p)`],
    { cwd: root, env, timeout: 60_000 });
  const loaded = probe.stdout.trim();
  if (probe.status !== 0 || !loaded.startsWith(join(root, 'prebuilds'))) {
    row.note = `addon did not load from prebuilds/: ${(probe.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? loaded).slice(0, 120)}`;
    console.log(`FAIL ${label} (${version}): ${row.note}`);
    return row;
  }

  mkdirSync(logDir, { recursive: true });
  const log = join(logDir, `${label.replace(/\W+/g, '-')}.log`);
  const json = join(logDir, `${label.replace(/\W+/g, '-')}.json`);
  rmSync(json, { force: true });
  // vitest.config.ts may name its own JSON output (CI): point it at ours, never at the project's file.
  env.SOCKTUNE_TEST_RESULTS = json;
  const args = [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...vitestArgs];
  console.log(`..   ${label} (${version}): vitest run${vitestArgs.length ? ` ${vitestArgs.join(' ')}` : ''}, PREBUILDS_ONLY=1${flags.has('--verbose') ? '' : `, log ${relative(root, log)}`}`);
  const started = Date.now();
  // A suite that hangs is a failure of this run, not a hung script.
  const limit = { timeout: SUITE_TIMEOUT_MS, killSignal: 'SIGKILL' };
  let r;
  if (flags.has('--verbose')) {
    r = spawnSync(bin, args, { cwd: root, env, stdio: 'inherit', ...limit });
  } else {
    const fd = openSync(log, 'w');
    try {
      r = spawnSync(bin, args, { cwd: root, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd], ...limit });
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

  console.log(`${row.ok ? 'PASS' : 'FAIL'} ${label} (${version}): ${row.passed} passed, ${row.failed} failed, ${row.skipped} skipped in ${row.seconds.toFixed(1)} s${row.note ? ` — ${row.note}` : ''}`);
  if (!row.ok && !flags.has('--verbose') && existsSync(log)) console.log(tail(readFileSync(log, 'utf8'), 40));
  return row;
}

// ---------------------------------------------------------------- main

if (resultsFile) rmSync(resultsFile, { force: true });
ensureBuilt('prebuild', prebuildStatus(), [join(root, 'scripts', 'prebuild.mjs')]);
ensureBuilt('dist/', distStatus(), [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root]);

const targets = [];
if (!flags.has('--no-system')) targets.push({ label: `system node ${process.versions.node.split('.')[0]}`, bin: process.execPath });
for (const major of majors) {
  try {
    targets.push({ label: `node ${major}`, bin: fetchNode(major) });
  } catch (err) {
    if (err instanceof Failure) fatal(err.message, err.detail);
    throw err;
  }
}
if (targets.length === 0) usage('nothing to run');

const rows = targets.map((t) => runSuite(t.label, t.bin));

const header = ['node', 'version', 'passed', 'failed', 'skipped', 'files failed', 'time', 'result'];
const table = [header, ...rows.map((r) => [
  r.label, r.version, String(r.passed), String(r.failed), String(r.skipped), String(r.filesFailed),
  `${r.seconds.toFixed(1)} s`, r.ok ? 'PASS' : `FAIL${r.note ? ` (${r.note})` : ''}`,
])];
const widths = header.map((_, i) => Math.max(...table.map((row) => row[i].length)));
const line = (row) => row.map((c, i) => (i >= 2 && i <= 6 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
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
