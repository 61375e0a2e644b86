// The JavaScript runtimes other than Node that socktune is tested on, from the npm registry
// (pinned here, fetched once into node_modules/.cache/socktune-runtimes):
//
//   bun        @oven/bun-linux-x64       Bun's glibc build
//   bun-musl   @oven/bun-linux-x64-musl  Bun's musl build: the musl host of the tests (npm carries no musl Node)
//   deno       @deno/linux-x64-glibc     Deno
//
//   node scripts/runtimes.mjs fetch [NAME...]   fetch them (all by default); prints one line each
//   node scripts/runtimes.mjs json NAME         prints { bin, env, version } as JSON for the tests
//
// Bun's musl build needs a musl libstdc++ and libgcc_s, which Debian does not package. It runs
// under Debian's musl (the `musl` package: /lib/ld-musl-x86_64.so.1, mapped as
// /usr/lib/x86_64-linux-musl/libc.so, the layout of musl's own install) with Debian's
// libstdc++.so.6 and libgcc_s.so.1 and a compatibility shim for the few glibc symbols they import
// (scripts/smoke/musl-compat.c, built with musl-gcc, named ld-linux-x86-64.so.2 as Alpine's
// gcompat names its own). The C library of that process is musl's, which is what socktune's loader
// must recognise; the shim also makes it a process that maps a file named like glibc's loader.
import { existsSync, mkdirSync, symlinkSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchPackage, mtime, run } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, 'node_modules', '.cache', 'socktune-runtimes');

export const runtimes = {
  bun: { spec: '@oven/bun-linux-x64@1.4.4', bin: 'bin/bun' },
  'bun-musl': { spec: '@oven/bun-linux-x64-musl@1.4.4', bin: 'bin/bun', musl: true },
  deno: { spec: '@deno/linux-x64-glibc@2.9.6', bin: 'deno' },
};

/** The directory that makes Debian's libstdc++ and libgcc_s usable from a musl process. */
function muslCompat() {
  const dir = join(cache, 'musl-compat');
  const shim = join(dir, 'ld-linux-x86-64.so.2');
  const source = join(root, 'scripts', 'smoke', 'musl-compat.c');
  if (!existsSync(shim) || mtime(shim) < mtime(source)) {
    mkdirSync(dir, { recursive: true });
    const cc = run('musl-gcc', ['-shared', '-fPIC', '-O1', source, '-o', shim]);
    if (cc.status !== 0) throw Object.assign(new Error('musl-gcc failed (apt-get install musl-tools)'), { detail: cc.stdout + cc.stderr });
  }
  for (const lib of ['libstdc++.so.6', 'libgcc_s.so.1']) {
    const from = join('/usr/lib', `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`, lib);
    if (!existsSync(from)) throw new Error(`${from} is missing (apt-get install libstdc++6)`);
    rmSync(join(dir, lib), { force: true });
    symlinkSync(from, join(dir, lib));
  }
  if (!existsSync('/lib/ld-musl-x86_64.so.1')) throw new Error("musl's loader /lib/ld-musl-x86_64.so.1 is missing (apt-get install musl)");
  return dir;
}

/** `{ bin, env, version }` of a runtime, fetched when missing: `env` is what its process needs on top of the caller's. */
export function runtime(name, { log = () => {} } = {}) {
  const r = runtimes[name];
  if (!r) throw new Error(`unknown runtime ${name}: ${Object.keys(runtimes).join(', ')}`);
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new Error(`the runtimes are fetched for linux-x64 only, not ${process.platform}-${process.arch}`);
  const dir = join(cache, name);
  const env = r.musl ? { LD_LIBRARY_PATH: muslCompat() } : {};
  const runs = (d) => run(join(d, 'package', r.bin), ['--version'], { env: { ...process.env, ...env }, timeout: 60_000 }).status === 0;
  fetchPackage(r.spec, dir, { usable: runs, log });
  const bin = join(dir, 'package', r.bin);
  const version = run(bin, ['--version'], { env: { ...process.env, ...env } })
    .stdout.trim()
    .split('\n')[0];
  return { bin, env, version };
}

if (fileURLToPath(import.meta.url) === resolve(process.argv[1] ?? '')) {
  const [command, ...names] = process.argv.slice(2);
  if (command === 'json' && names.length === 1) {
    console.log(JSON.stringify(runtime(names[0])));
  } else if (command === 'fetch') {
    let failed = 0;
    for (const name of names.length ? names : Object.keys(runtimes)) {
      try {
        const r = runtime(name, { log: (m) => console.log(`..   ${name}: ${m}`) });
        console.log(`ok   ${name.padEnd(9)} ${r.version} (${r.bin})`);
      } catch (err) {
        failed++;
        console.log(`FAIL ${name.padEnd(9)} ${err.message}${err.detail ? `\n${err.detail}` : ''}`);
      }
    }
    process.exit(failed ? 1 : 0);
  } else {
    console.error('usage: node scripts/runtimes.mjs fetch [NAME...] | json NAME');
    process.exit(2);
  }
}
