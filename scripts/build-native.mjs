// Builds the addon from source into build/Release (the fallback node-gyp-build loads after prebuilds).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { nodedir } from './node-headers.mjs';

const require = createRequire(import.meta.url);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir()}`], { stdio: 'inherit' });
process.exit(r.status ?? 1);
