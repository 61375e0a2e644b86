// Runtimes other than Node (Bun's glibc and musl builds, Deno), from the npm registry through
// scripts/runtimes.mjs, which pins their versions and caches them. In CI a runtime that cannot be
// had fails the test; elsewhere the test is skipped with the reason.
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inCI } from './env.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

export type RuntimeName = 'bun' | 'bun-musl' | 'deno';

export interface Runtime {
  /** The runtime's binary. */
  bin: string;
  /** Variables its process needs on top of the caller's (the musl build's compatibility libraries). */
  env: Record<string, string>;
  version: string;
}

const known = new Map<RuntimeName, Runtime | undefined>();

/** The runtime, fetched when missing; `undefined` (with a warning) outside CI when it cannot be had. */
export function runtime(name: RuntimeName): Runtime | undefined {
  if (known.has(name)) return known.get(name);
  let found: Runtime | undefined;
  try {
    found = JSON.parse(execFileSync(process.execPath, ['scripts/runtimes.mjs', 'json', name], { cwd: root, encoding: 'utf8', timeout: 600_000 })) as Runtime;
  } catch (err) {
    if (inCI) throw err;
    console.warn(`skipping: ${name} cannot be had here (${(err as Error).message.split('\n')[0]})`);
  }
  known.set(name, found);
  return found;
}

export interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `args` under the runtime to its end. */
export function runUnder(rt: Runtime, args: string[], options: { cwd?: string; env?: Record<string, string>; timeout?: number } = {}): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      rt.bin,
      args,
      { cwd: options.cwd, env: { ...process.env, ...rt.env, ...options.env }, timeout: options.timeout ?? 60_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
      },
    );
  });
}

/** A Node binary of `version` (a major, or an exact version) from the npm registry (scripts/lib.mjs's fetchNode), or undefined (with a warning) outside CI. */
export function nodeBinary(version: string): string | undefined {
  try {
    return execFileSync(
      process.execPath,
      ['--input-type=module', '-e', `const l = await import('./scripts/lib.mjs'); console.log(l.fetchNode(process.cwd(), ${JSON.stringify(version)}))`],
      { cwd: root, encoding: 'utf8', timeout: 600_000 },
    )
      .trim()
      .split('\n')
      .at(-1);
  } catch (err) {
    if (inCI) throw err;
    console.warn(`skipping: Node ${version} cannot be had here (${(err as Error).message.split('\n')[0]})`);
    return undefined;
  }
}
