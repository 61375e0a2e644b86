// Builds the Node-API prebuild shipped in the package: prebuilds/<platform>-<arch>/socktune.node.
// One binary serves every Node version with Node-API 8 (Node 20 and later). The target is the
// running Node, whose headers are on disk: prebuildify's default target would download headers.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { nodedir } from './node-headers.mjs';

const require = createRequire(import.meta.url);
const bin = require.resolve('prebuildify/bin.js');
const r = spawnSync(process.execPath, [bin, '--napi', '--strip', '--target', `node@${process.versions.node}`], {
  stdio: 'inherit',
  env: { ...process.env, npm_config_nodedir: nodedir() },
});
process.exit(r.status ?? 1);
