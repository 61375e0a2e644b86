// A real nginx for a test: one process (master_process off, daemon off), its files in a temporary
// directory, started in the caller's network namespace or in `netns`, and stopped with SIGTERM.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { listening, stop as stopChild } from './children.js';

export interface Nginx {
  /** The directory holding nginx.conf, error.log and the temp paths. */
  dir: string;
  /** What nginx logged at `warn` and above so far. */
  errors(): string;
  stop(): Promise<void>;
}

/**
 * Starts nginx with `http` as the body of its `http { }` block (after `access_log off` and the
 * temp paths) and resolves once `port` is listening.
 */
export async function startNginx(options: { port: number; http: string[]; netns?: string; events?: string; main?: string[] }): Promise<Nginx> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'socktune-nginx-'));
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    [
      'master_process off;',
      'daemon off;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      ...(options.main ?? []),
      `events { ${options.events ?? 'worker_connections 256;'} }`,
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
      ...options.http.map((l) => `  ${l}`),
      '}',
      '',
    ].join('\n'),
  );
  const inNs = (cmd: string[]): string[] => (options.netns ? ['ip', 'netns', 'exec', options.netns, ...cmd] : cmd);
  const [bin, ...args] = inNs(['nginx', '-e', `${dir}/error.log`, '-p', dir, '-c', conf]);
  const nginx = spawn(bin, args, { stdio: 'ignore' });
  const stop = async (): Promise<void> => {
    await stopChild(nginx);
    rmSync(dir, { recursive: true, force: true });
  };
  if (await listening(nginx, options.port, options.netns ? { name: options.netns } : undefined)) {
    return { dir, errors: () => readFileSync(`${dir}/error.log`, 'utf8'), stop };
  }
  const log = readFileSync(`${dir}/error.log`, 'utf8');
  await stop();
  throw new Error(`nginx did not start: ${log}`);
}
