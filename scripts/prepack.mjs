// npm's prepack (npm pack, npm publish): the tarball always holds a fresh dist/ and all seven
// prebuilds, even from a clone where nothing was built. dist/ is compiled anew (no stale output of
// a module that no longer exists) and without source maps, which would point at src/, which the
// package does not ship. The prebuilds are built where missing or stale (scripts/prebuilds.mjs);
// a missing cross-compiler fails the pack with the Debian package to install.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const step = (args) => {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 2, 2] });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

rmSync(join(root, 'dist'), { recursive: true, force: true });
step([join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root, '--sourceMap', 'false']);
step([join(root, 'scripts', 'prebuilds.mjs')]);
