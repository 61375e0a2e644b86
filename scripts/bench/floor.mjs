// Loads the bench-only C floor addon (scripts/bench/floor), rebuilding it when its sources are newer
// than the binary. node-gyp gets the running Node's headers, so the build never downloads anything.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodedir } from '../node-headers.mjs';

const require = createRequire(import.meta.url);
const dir = join(dirname(fileURLToPath(import.meta.url)), 'floor');

export function loadFloor({ quiet = false } = {}) {
  const binary = join(dir, 'build', 'Release', 'floor.node');
  const newestSource = Math.max(...['floor.cc', 'binding.gyp'].map((f) => statSync(join(dir, f)).mtimeMs));
  if (!existsSync(binary) || statSync(binary).mtimeMs < newestSource) {
    if (!quiet) process.stderr.write('building the floor addon (scripts/bench/floor) ...\n');
    const gyp = require.resolve('node-gyp/bin/node-gyp.js');
    const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir()}`], { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) {
      process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
      throw new Error(`node-gyp failed to build ${dir}`);
    }
  }
  return require(binary);
}
