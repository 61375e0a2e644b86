// Child processes of a test: a fixture that answers commands on stdin with JSON lines, a server
// whose start is read from its output, a command run to its end, and a stop that cannot hang.
import { execFile, type ChildProcess, type ExecFileOptions } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { expect, vi } from 'vitest';
import { ssCount, type Where } from './netns.js';
import { until } from './wait.js';

/** Lines a child printed on stdout that no ask() has taken yet, and the asks waiting for one. */
interface Replies {
  lines: string[];
  waiting: Array<(line: string) => void>;
}
const replies = new WeakMap<ChildProcess, Replies>();

function repliesOf(child: ChildProcess): Replies {
  let r = replies.get(child);
  if (r === undefined) {
    const made: Replies = { lines: [], waiting: [] };
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const take = made.waiting.shift();
      if (take) take(line);
      else made.lines.push(line);
    });
    replies.set(child, (r = made));
  }
  return r;
}

/** Writes `command` as a line on `child`'s stdin and resolves with the next line it prints, parsed as JSON; rejects after `within` ms. */
export function ask(child: ChildProcess, command: string, within = 30_000): Promise<Record<string, any>> {
  const r = repliesOf(child);
  return new Promise((resolve, reject) => {
    const take = (line: string): void => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line));
      } catch (err) {
        reject(err);
      }
    };
    const timer = setTimeout(() => {
      const i = r.waiting.indexOf(take);
      if (i >= 0) r.waiting.splice(i, 1);
      reject(new Error(`no answer to '${command}' within ${within / 1000} s`));
    }, within);
    const line = r.lines.shift();
    if (line === undefined) r.waiting.push(take);
    else take(line);
    child.stdin!.write(`${command}\n`);
  });
}

/**
 * Keeps every JSON line `child` prints from now on under `keyOf(line)` (a fixture that reports
 * each connection it saw, by port); the function returned resolves with the line of a key, waiting
 * up to `within` ms for it.
 */
export function linesByKey<T>(child: ChildProcess, keyOf: (line: T) => number | string): (key: number | string, within?: number) => Promise<T> {
  const seen = new Map<number | string, T>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const parsed = JSON.parse(line) as T;
    seen.set(keyOf(parsed), parsed);
  });
  return (key, within = 20_000) =>
    vi.waitFor(
      () => {
        expect(seen.has(key), `a line for ${key}`).toBe(true);
        return seen.get(key)!;
      },
      { timeout: within, interval: 20 },
    );
}

/** Resolves once `child` has printed `text` on stdout or stderr (a server that is ready says so); fails with `message` and the output after `within` ms. */
export async function printed(child: ChildProcess, text: string, within: number, message: string): Promise<void> {
  let log = '';
  for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', (d: string) => (log += d));
  await vi.waitFor(() => expect(log, message).toContain(text), { timeout: within, interval: 50 });
}

/** Waits up to `within` ms, while `child` runs, for a socket listening on `port` in `where` (by ss); whether one does. */
export async function listening(child: ChildProcess, port: number, where?: Where, within = 10_000): Promise<boolean> {
  let up = false;
  await until(async () => (up = (await ssCount('listening', `( sport = :${port} )`, where)) > 0) || child.exitCode !== null, within);
  return up;
}

/** Sends `signal` to `child` (SIGKILL after `grace` ms) and resolves once it has exited; at once if it already had. */
export async function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', grace = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const late = setTimeout(() => child.kill('SIGKILL'), grace);
  await exited;
  clearTimeout(late);
}

/** What a command run to its end left: its exit code (null when a signal ended it), its output and its pid. */
export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

/** Runs `cmd` to its end, whatever its status, and resolves with what it left; rejects only when it could not run at all. */
export function runCommand(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...options, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      if (err && code !== null && typeof code !== 'number') reject(err);
      else resolve({ code: code as number | null, stdout: String(stdout), stderr: String(stderr), pid: child.pid! });
    });
  });
}
