// A real HAProxy for a test (Debian's package): its configuration in a temporary directory,
// started in a network namespace in the foreground (-db), stopped with SIGTERM.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { listening, stop as stopChild } from './children.js';

export interface HAProxy {
  /** What HAProxy printed on stderr so far (its alerts and warnings). */
  log(): string;
  stop(): Promise<void>;
}

/** Starts HAProxy with `config` (the whole file) in `netns`, and resolves once `port` listens there. */
export async function startHAProxy(options: { netns: string; port: number; config: string[] }): Promise<HAProxy> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'socktune-haproxy-'));
  const file = path.join(dir, 'haproxy.cfg');
  writeFileSync(file, `${options.config.join('\n')}\n`);
  const child = spawn('ip', ['netns', 'exec', options.netns, 'haproxy', '-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const stop = async (): Promise<void> => {
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  };
  if (await listening(child, options.port, { name: options.netns })) return { log: () => log, stop };
  await stop();
  throw new Error(`haproxy did not start: ${log}`);
}
