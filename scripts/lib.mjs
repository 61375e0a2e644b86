// Helpers shared by the maintenance scripts (pack smoke test, portability run).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The environment a child npm or test run gets: none of the variables `npm run` set for *this*
 * package (npm_config_local_prefix would point a nested npm at the repo), no PREBUILDS_ONLY or
 * NODE_OPTIONS from the caller.
 */
export function cleanEnv(extra = {}) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^npm_(package_|lifecycle_|command$|config_local_prefix$|config_prefix$)/i.test(k)) delete env[k];
    if (/^(INIT_CWD|PREBUILDS_ONLY|NODE_OPTIONS)$/.test(k)) delete env[k];
  }
  return { ...env, ...extra };
}

/** spawnSync with text output and a status that is never null. */
export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
  return { status: r.status ?? (r.error ? 127 : 1), stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** The last lines of a command's output, indented under a FAIL line. */
export function tail(text, lines = 25, indent = '       | ') {
  return text.trimEnd().split('\n').slice(-lines).map((l) => `${indent}${l}`).join('\n');
}

/** Files below `dir` that pass `filter`. */
export function walk(dir, filter) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, filter));
    else if (filter(p)) out.push(p);
  }
  return out;
}

export const mtime = (p) => statSync(p).mtimeMs;
