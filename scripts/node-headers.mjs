// Where the running Node's headers are, so node-gyp never tries to download them (offline builds).
// npm passes nodedir from its config; a bare node-gyp call does not.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export function nodedir() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..'), '/usr'];
  for (const dir of candidates) {
    if (dir && existsSync(join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  throw new Error('socktune: no Node.js headers found (looked for include/node/node_api.h beside node and in /usr)');
}
