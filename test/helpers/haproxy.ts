// A real HAProxy for a test (Debian's package): its configuration in a temporary directory,
// started in a network namespace in the foreground (-db), stopped with SIGTERM.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const late = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(late);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    if (execFileSync('ip', ['netns', 'exec', options.netns, 'ss', '-Hltn', `( sport = :${options.port} )`], { encoding: 'utf8' }).trim() !== '') {
      return { log: () => log, stop };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`haproxy did not start: ${log}`);
}
