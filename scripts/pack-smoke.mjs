// Packs socktune the way it is published (`npm pack`, whose prepack builds dist/ and all seven
// prebuilds), installs the tarball into an empty project with --ignore-scripts and no compiler
// reachable, and checks what a user gets:
//   - the tarball: the files of main, types, exports and bin, all seven prebuilds, LICENSE, and
//     nothing but dist/ (.js, .d.ts), native/, binding.gyp, prebuilds/, README.md, the manual's
//     pages (docs/, so the README's relative links resolve in the installed package), LICENSE
//   - which prebuild node-gyp-build picks for each platform, CPU and C library
//   - the published types type-check in a strict project without the optional peers
//   - the smoke test (scripts/smoke/loads.mjs) on this Node and on Node 22, 24, 26 (linux-x64),
//     and on linux-arm64 Node 20 and 22 under qemu-user
//   - on win32-x64 Node 20 under wine, in node.exe and in a renamed copy of it: the DLL loads, the
//     options wine implements are set and read back, the rest refused by name (scripts/smoke/win32.mjs)
//   - the linux-x64 musl prebuild loads under musl's dynamic loader (scripts/smoke/musl-host.c)
//
//   node scripts/pack-smoke.mjs              all of it
//   node scripts/pack-smoke.mjs --host-only  this Node only: no Node downloads, no qemu, no wine
//   node scripts/pack-smoke.mjs --keep       keep the temp dirs for inspection (paths are printed)
//
// Node binaries are the npm registry's node-<os>-<arch>@<major> packages (cached under
// node_modules/.cache/socktune-node); qemu-user-static, the aarch64 C library
// (g++-aarch64-linux-gnu brings it), wine64 and musl-tools come from Debian (.ci/run installs them).
// Prints PASS/FAIL lines, then `pack-smoke: N passed, M failed`; exits 1 on any failure.
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanEnv, fetchNode, run, runner, tail as tailLines } from './lib.mjs';
import { prebuildPath, targets } from './prebuilds.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
for (const a of args) {
  if (!['--keep', '--host-only', '--help', '-h'].includes(a)) {
    console.error(`pack-smoke: unknown argument ${a}`);
    process.exit(2);
  }
}
if (args.has('--help') || args.has('-h')) {
  console.log('usage: node scripts/pack-smoke.mjs [--keep] [--host-only]');
  process.exit(0);
}
const keep = args.has('--keep');
const hostOnly = args.has('--host-only');

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

// ---------------------------------------------------------------- pack, install, smoke

const work = mkdtempSync(join(tmpdir(), 'socktune-pack-'));
const cleanup = () => {
  if (keep) console.log(`     kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
};
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});
process.on('SIGTERM', () => {
  cleanup();
  process.exit(143);
});

/** The files a tarball may hold: anything else is a packaging mistake. */
const allowed = [
  /^dist\/.+\.(js|cjs|d\.ts|d\.cts)$/,
  /^native\/[\w.]+\.(cc|h)$/,
  /^binding\.gyp$/,
  /^prebuilds\//,
  /^README\.md$/,
  /^docs\/.+\.md$/,
  /^LICENSE$/,
  /^package\.json$/,
  /^dashboards\/[\w.-]+\.json$/,
];

function main() {
  // -- pack (prepack builds dist/ and the prebuilds; its output goes to stderr, the JSON to stdout)
  const packDir = join(work, 'pack');
  mkdirSync(packDir);
  const packed = run('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: root, env: cleanEnv(), timeout: 60 * 60_000 });
  let manifest;
  try {
    manifest = JSON.parse(packed.stdout.slice(packed.stdout.search(/^\[/m)))[0];
  } catch {
    manifest = undefined;
  }
  if (
    !check('npm pack (prepack: dist/ and every prebuild)', packed.status === 0 && manifest, packed.status === 0 ? manifest?.filename : `exit ${packed.status}`)
  ) {
    console.log(tail(packed.stdout + packed.stderr));
    return;
  }
  const tarball = join(packDir, manifest.filename);
  const files = new Set(manifest.files.map((f) => f.path));
  info(
    `${manifest.filename}: ${manifest.entryCount} files, ${(manifest.size / 1024).toFixed(1)} KiB packed, ${(manifest.unpackedSize / 1024).toFixed(1)} KiB unpacked`,
  );

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
  check(
    'tarball holds the files of main, types and exports',
    missingRefs.length === 0,
    missingRefs.length ? `missing: ${missingRefs.join(', ')}` : [...referenced].join(', '),
  );
  const bins = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {});
  for (const [name, target] of Object.entries(bins)) {
    const p = target.replace(/^\.\//, '');
    check(`tarball holds the \`${name}\` bin target ${p}`, files.has(p));
  }
  const shipped = targets.map((t) => relative(root, prebuildPath(t)));
  const absent = shipped.filter((p) => !files.has(p));
  check(`tarball holds all ${shipped.length} prebuilds`, absent.length === 0, absent.length ? `missing: ${absent.join(', ')}` : shipped.join(', '));
  const extra = [...files].filter((f) => !allowed.some((re) => re.test(f)) || (f.startsWith('prebuilds/') && !shipped.includes(f)));
  check('tarball holds nothing else (no maps, sources, tests, scripts or build output)', extra.length === 0, extra.slice(0, 8).join(', ') || undefined);
  check('tarball holds LICENSE', files.has('LICENSE'));

  // -- no compiler: shims that fail loudly and log, first in PATH
  const shimDir = join(work, 'no-compiler-bin');
  const shimLog = join(work, 'compiler-calls.log');
  mkdirSync(shimDir);
  for (const name of ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'ld', 'make', 'gmake', 'cmake', 'python', 'python3', 'node-gyp', 'prebuild-install']) {
    const p = join(shimDir, name);
    writeFileSync(p, `#!/bin/sh\necho "$0 $*" >> '${shimLog}'\necho "pack-smoke: '$0' was called but no compiler may be used" >&2\nexit 127\n`);
    chmodSync(p, 0o755);
  }
  const noCompilerEnv = (extra = {}) =>
    cleanEnv({
      PATH: `${shimDir}:${process.env.PATH ?? ''}`,
      CC: join(shimDir, 'cc'),
      CXX: join(shimDir, 'c++'),
      npm_config_build_from_source: '',
      ...extra,
    });

  // -- empty project + install
  const project = join(work, 'project');
  mkdirSync(project);
  writeFileSync(
    join(project, 'package.json'),
    `${JSON.stringify({ name: 'socktune-pack-smoke', version: '0.0.0', private: true, type: 'module' }, null, 2)}\n`,
  );
  const inst = run('npm', ['install', tarball, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--prefix', project], {
    cwd: project,
    env: noCompilerEnv(),
  });
  if (!check('npm install <tarball> --ignore-scripts into an empty project', inst.status === 0, inst.status === 0 ? undefined : `exit ${inst.status}`)) {
    console.log(tail(inst.stdout + inst.stderr));
    return;
  }
  const installed = join(project, 'node_modules', 'socktune');
  check('installed package has no build/ directory', !existsSync(join(installed, 'build')));
  check(
    'the optional peers (undici, prom-client) are not installed',
    !existsSync(join(project, 'node_modules', 'undici')) && !existsSync(join(project, 'node_modules', 'prom-client')),
  );
  for (const f of ['loads.mjs', 'win32.mjs']) copyFileSync(join(root, 'scripts', 'smoke', f), join(project, f));

  // -- which file node-gyp-build picks, everywhere the package claims to run
  picks(installed);

  // -- the published types, strict, without skipLibCheck and without the optional peers
  typesCheck(project);

  // -- smoke test on this Node, as a user would run it (no PREBUILDS_ONLY: the prebuild must win on its own)
  smoke(`this Node (${process.version}, ${process.platform}-${process.arch})`, [process.execPath], project, noCompilerEnv());
  const only = run(process.execPath, ['loads.mjs', '--quiet'], { cwd: project, env: noCompilerEnv({ PREBUILDS_ONLY: '1' }), timeout: 150_000 });
  check('smoke test passes with PREBUILDS_ONLY=1', only.status === 0, only.status === 0 ? undefined : `exit ${only.status}`);
  if (only.status !== 0) console.log(tail(only.stdout + only.stderr));

  if (!hostOnly) {
    musl(installed);
    for (const major of [22, 24, 26]) {
      const bin = node(major, 'linux', 'x64');
      if (bin) smoke(`Node ${major} linux-x64`, [bin], project, noCompilerEnv());
    }
    for (const major of [20, 22]) {
      const bin = node(major, 'linux', 'arm64');
      if (bin) smoke(`Node ${major} linux-arm64 under qemu-user`, [...runner('linux', 'arm64'), bin], project, noCompilerEnv());
    }
    const exe = node(20, 'win32', 'x64');
    if (exe) windows(exe, project);
  }

  const calls = existsSync(shimLog) ? readFileSync(shimLog, 'utf8').trim() : '';
  check('no compiler or build tool was invoked', calls === '', calls.split('\n')[0] || undefined);
}

/** A Node binary from the registry, or undefined after a FAIL line. */
function node(major, platform, arch) {
  try {
    return fetchNode(root, major, { platform, arch, log: (m) => info(`node ${major} ${platform}-${arch}: ${m}`) });
  } catch (err) {
    check(`fetch Node ${major} ${platform}-${arch}`, false, err.message);
    if (err.detail) console.log(tail(err.detail));
    return undefined;
  }
}

/** Runs scripts/smoke/loads.mjs under `argv` in the project and turns its lines into checks. */
function smoke(label, argv, project, env) {
  const r = run(argv[0], [...argv.slice(1), 'loads.mjs'], { cwd: project, env, timeout: 180_000 });
  const lines = r.stdout.trimEnd().split('\n').filter(Boolean);
  let fails = 0;
  for (const line of lines) {
    const m = /^(PASS|FAIL) (.*)$/.exec(line);
    if (m) fails += check(`${label}: ${m[2]}`, m[1] === 'PASS') ? 0 : 1;
    else console.log(`     ${line}`);
  }
  if ((r.status !== 0 && fails === 0) || lines.length === 0) {
    check(`${label}: smoke test process exited cleanly`, false, `exit ${r.status}`);
    if (r.stderr.trim()) console.log(tail(r.stderr));
  }
}

/**
 * npm carries no musl Node, so the x64 musl prebuild is loaded by musl's own dynamic loader in a
 * small musl program (scripts/smoke/musl-host.c, built with Debian's musl-gcc) that provides the
 * Node-API symbols as stubs: every symbol bound (RTLD_NOW), the entry points there, and the one
 * that needs no Node-API call answers 8. The glibc prebuild is the control: it does not load there.
 */
function musl(pkgDir) {
  const def = readFileSync(join(root, 'node_modules', 'node-api-headers', 'def', 'node_api.def'), 'utf8');
  const names = def
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^napi_\w+$|^node_api_\w+$/.test(l));
  const stubs = join(work, 'napi-stubs.h');
  writeFileSync(stubs, names.map((n) => `__attribute__((visibility("default"))) void* ${n}(void) { return 0; }\n`).join(''));
  const host = join(work, 'musl-host');
  const cc = run('musl-gcc', ['-O1', '-rdynamic', `-DSTUBS="${stubs}"`, join(root, 'scripts', 'smoke', 'musl-host.c'), '-o', host]);
  if (!check('musl: a musl host program (musl-gcc from Debian musl-tools)', cc.status === 0, cc.status === 0 ? undefined : `exit ${cc.status}`)) {
    console.log(tail(cc.stdout + cc.stderr));
    return;
  }
  const file = join(pkgDir, 'prebuilds', 'linux-x64', 'socktune.musl.node');
  const r = run(host, [file], { timeout: 30_000 });
  check(
    'linux-x64 musl: ld-musl loads the installed musl prebuild, every symbol bound; its Node-API version is 8',
    r.status === 0 && r.stdout.trim() === 'ok node_api_module_get_api_version_v1() = 8',
    (r.stdout + r.stderr).trim(),
  );
  const control = run(host, [join(pkgDir, 'prebuilds', 'linux-x64', 'socktune.glibc.node')], { timeout: 30_000 });
  check('linux-x64 musl: the glibc prebuild does not load there (the control)', control.status !== 0, control.stdout.trim());
}

/** node.exe under wine: scripts/smoke/win32.mjs, whose lines come back through a file. */
function windows(exe, project) {
  const wine = runner('win32', 'x64');
  const env = cleanEnv({ WINEPREFIX: join(root, 'node_modules', '.cache', 'socktune-wine'), WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' });
  // Node 20 refuses Windows before 8.1; wine's prefix says Windows 7 until told otherwise.
  const cfg = run(wine[0], ['winecfg', '-v', 'win10'], { env, timeout: 300_000 });
  if (!check('wine: a prefix that says Windows 10', cfg.status === 0, cfg.status === 0 ? undefined : `exit ${cfg.status}`)) {
    console.log(tail(cfg.stdout + cfg.stderr));
    return;
  }
  // node.exe as it ships, then a renamed copy of it in a directory of its own (as a single-executable
  // application is): the DLL binds Node-API to whichever process loaded it.
  const renamedDir = join(work, 'renamed-host');
  mkdirSync(renamedDir, { recursive: true });
  const renamed = join(renamedDir, 'socktune-app.exe');
  copyFileSync(exe, renamed);
  for (const [label, host] of [
    ['node.exe', exe],
    ['a renamed node.exe (socktune-app.exe, no node.exe beside it)', renamed],
  ]) {
    const out = join(work, `win32-smoke-${label.length}.txt`);
    // node.exe's stdout and stderr are files, not pipes: under wine a pipe cannot be opened as
    // process.stderr (EBADF), and Node's net.Socket#_destroy reads process.stderr, so every
    // destroy() would fail halfway (the handle left open) for a reason no Windows user meets.
    const logFile = join(work, `win32-smoke-${label.length}.log`);
    const log = openSync(logFile, 'w');
    const r = run(wine[0], [host, 'win32.mjs', '--wine', '--out', out], { cwd: project, env, timeout: 300_000, stdio: ['ignore', log, log] });
    closeSync(log);
    const lines = existsSync(out) ? readFileSync(out, 'utf8').trimEnd().split('\n').filter(Boolean) : [];
    for (const line of lines) {
      const m = /^(PASS|FAIL) (.*)$/.exec(line);
      if (m) check(`Node 20 win32-x64 under wine, ${label}: ${m[2]}`, m[1] === 'PASS');
    }
    if (lines.length === 0) {
      check(`Node 20 win32-x64 under wine, ${label}: smoke test ran`, false, `exit ${r.status}`);
      console.log(tail(readFileSync(logFile, 'utf8') + r.stderr));
    }
  }
}

/**
 * The file node-gyp-build resolves in the installed package for every platform, CPU and C
 * library it may meet (its own overrides: npm_config_platform, npm_config_arch, LIBC), and what
 * it does on a musl system without /etc/alpine-release (it assumes glibc; socktune's loader
 * corrects that from the C library mapped into the process, see src/binding.ts).
 */
function picks(pkgDir) {
  const cases = [
    ['linux', 'x64', 'glibc', 'prebuilds/linux-x64/socktune.glibc.node'],
    ['linux', 'x64', 'musl', 'prebuilds/linux-x64/socktune.musl.node'],
    ['linux', 'arm64', 'glibc', 'prebuilds/linux-arm64/socktune.glibc.node'],
    ['linux', 'arm64', 'musl', 'prebuilds/linux-arm64/socktune.musl.node'],
    ['linux', 'arm64', '', 'prebuilds/linux-arm64/socktune.glibc.node'],
    ['darwin', 'x64', '', 'prebuilds/darwin-x64/socktune.node'],
    ['darwin', 'arm64', '', 'prebuilds/darwin-arm64/socktune.node'],
    ['win32', 'x64', '', 'prebuilds/win32-x64/socktune.node'],
    ['win32', 'arm64', '', null],
    ['linux', 'riscv64', 'glibc', null],
    ['freebsd', 'x64', '', null],
  ];
  for (const [platform, arch, libc, want] of cases) {
    const probe = `try { console.log(require('node-gyp-build').resolve(${JSON.stringify(pkgDir)})) } catch { console.log('none') }`;
    const env = cleanEnv({ npm_config_platform: platform, npm_config_arch: arch, PREBUILDS_ONLY: '1' });
    if (libc) env.LIBC = libc;
    else delete env.LIBC;
    const r = run(process.execPath, ['-e', probe], { cwd: pkgDir, env });
    const got = r.stdout.trim() === 'none' ? null : relative(pkgDir, r.stdout.trim());
    let label = `${platform}-${arch}`;
    if (libc === 'musl') label += ' musl (Alpine: /etc/alpine-release)';
    else if (libc === 'glibc') label += ' glibc';
    else if (platform === 'linux') label += ' without /etc/alpine-release (glibc, or musl elsewhere than Alpine)';
    check(`node-gyp-build picks ${want ?? 'nothing'} on ${label}`, got === want, got ?? 'nothing');
  }
}

/** A strict TypeScript project importing every public export, checked with the repo's tsc. */
function typesCheck(project) {
  writeFileSync(join(project, 'use.ts'), "import * as socktune from 'socktune';\nexport const names: string[] = Object.keys(socktune);\n");
  writeFileSync(
    join(project, 'tsconfig.json'),
    `${JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(root, 'node_modules', '@types')],
        },
        include: ['use.ts'],
      },
      null,
      2,
    )}\n`,
  );
  const r = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], { cwd: project, env: cleanEnv() });
  check(
    'the published .d.ts type-check without undici and prom-client (strict, no skipLibCheck)',
    r.status === 0,
    r.status === 0 ? undefined : `${(r.stdout.match(/error TS\d+/g) ?? []).length} errors`,
  );
  if (r.status !== 0) console.log(tail(r.stdout + r.stderr));
}

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
