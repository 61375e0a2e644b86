/**
 * The package's install step (`npm install` with scripts on): the addon file socktune's loader
 * picks for this process (src/binding.ts: platform, CPU and the C library actually mapped) is
 * enough, and nothing is compiled when there is one. Only where no prebuild fits does it exit 1,
 * so that the install script's `|| node-gyp-build` compiles from source with node-gyp, as before.
 * A prebuild that fits but does not load here is reported and left alone: compiling would
 * replace a file made for this platform with whatever the machine's compiler makes of it.
 * @module
 */
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const shown = (file: string) => relative(root, file);

if (process.env.npm_config_build_from_source === 'true') {
  // `npm install --build-from-source`: node-gyp-build compiles, as it always has.
  process.exit(1);
}
const { addon, runningLibc } = await import('./binding.js');
const where = `${process.platform}-${process.arch}${process.platform === 'linux' ? ` (${runningLibc() ?? 'unknown C library'})` : ''}`;

if (addon.path !== undefined) {
  console.log(`socktune: ${shown(addon.path)} loads on ${where}; nothing to build`);
} else if (addon.file !== undefined) {
  console.warn(`socktune: ${shown(addon.file)} is the build for ${where} but does not load here: ${addon.error?.message ?? 'unknown error'}`);
  console.warn('socktune: not compiling over it; `npm rebuild socktune --build-from-source` compiles one from source');
} else {
  console.log(`socktune: no prebuild for ${where}; compiling from source (node-gyp)`);
  process.exitCode = 1;
}
