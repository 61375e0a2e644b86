// Applications run the way socktune/register users run them: a consumer project whose
// node_modules/socktune is this package (a symlink, so `socktune/register` resolves through the
// package's `exports`), the application started by `node` with NODE_OPTIONS or flags, inside a
// network namespace of the test's own, optionally under strace. And the witnesses outside the
// code under test: `ss -tnpoi` (the kernel's keepalive timer, last send/receive, the owning fd)
// and strace (the last value each socket option was set to on each fd).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url));

let project: string | undefined;

/** A consumer project (temp dir) with node_modules/socktune linked to this package; removed at exit. */
export function consumerProject(): string {
  if (project !== undefined) return project;
  const dir = mkdtempSync(join(tmpdir(), 'socktune-consumer-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(repoRoot, join(dir, 'node_modules', 'socktune'), 'dir');
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  project = dir;
  return dir;
}

/** The environment of this process without anything that would load or configure socktune/register. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('SOCKTUNE_') || key === 'NODE_OPTIONS') delete env[key];
  return { ...env, ...extra };
}

export interface AppOptions {
  /** Network namespace to run in. */
  ns: string;
  /** Environment added to a clean one (SOCKTUNE_*, NODE_OPTIONS, ...). */
  env?: Record<string, string>;
  /** Node flags before the script (e.g. ['--import', 'socktune/register']). */
  nodeArgs?: string[];
  args?: string[];
  /** Run under strace, writing socket/accept/setsockopt calls to this file. */
  strace?: string;
}

export interface App {
  child: ChildProcess;
  /** The first JSON line the application printed. */
  ready: Record<string, unknown>;
  /** Writes a command line and resolves with the next JSON line. */
  send(command: string): Promise<Record<string, unknown>>;
  /** Resolves with the next JSON line. */
  next(): Promise<Record<string, unknown>>;
  /** Everything printed on stderr so far. */
  stderr(): string;
  /** Ends stdin and waits for the exit. */
  stop(): Promise<number | null>;
}

/** Starts `script` in `ns` from the consumer project and waits for its first JSON line. */
export async function startApp(script: string, opts: AppOptions): Promise<App> {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), script, ...(opts.args ?? [])];
  const traced = opts.strace
    ? ['strace', '-f', '-qq', '--seccomp-bpf', '-e', 'trace=socket,accept,accept4,setsockopt', '-e', 'signal=none', '-o', opts.strace, ...node]
    : node;
  const child = spawn('ip', ['netns', 'exec', opts.ns, ...traced], {
    cwd: consumerProject(),
    env: cleanEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  type Waiter = { resolve: (line: Record<string, unknown>) => void; reject: (e: Error) => void };
  const waiting: Waiter[] = [];
  const lines: Array<Record<string, unknown>> = [];
  let out = '';
  let failed: Error | undefined;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const text = out.slice(0, nl);
      out = out.slice(nl + 1);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue; // not a report line
      }
      const w = waiting.shift();
      if (w) w.resolve(parsed);
      else lines.push(parsed);
    }
  });
  child.once('exit', (code, signal) => {
    failed = new Error(`${script} exited (${code ?? signal}) before answering; stderr:\n${err.slice(-3000)}`);
    for (const w of waiting.splice(0)) w.reject(failed);
  });
  const next = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      if (lines.length > 0) return resolve(lines.shift()!);
      if (failed) return reject(failed);
      waiting.push({ resolve, reject });
    });
  const ready = await next();
  return {
    child,
    ready,
    send(command: string) {
      child.stdin!.write(`${command}\n`);
      return next();
    },
    next,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(timer);
      return child.exitCode;
    },
  };
}

/** Runs `node [nodeArgs] script` to its end (no namespace) and returns its exit code and output. */
export function runToEnd(nodeArgs: string[], env: Record<string, string>, timeout = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, nodeArgs, { cwd: consumerProject(), env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * ss's timer durations in milliseconds. ss writes minutes, then seconds ("sec", or "." when
 * milliseconds follow, only below 10 s), then milliseconds: `1min3sec`, `28sec`, `8.808ms`, `950ms`.
 */
export function ssDuration(text: string): number {
  const m = /^(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?$/.exec(text);
  if (m === null) throw new Error(`not an ss duration: ${text}`);
  return Number(m[1] ?? 0) * 60_000 + Number(m[2] ?? 0) * 1000 + Number(m[3] ?? 0);
}

export interface SsSocket {
  local: string;
  peer: string;
  localPort: number;
  peerPort: number;
  pid?: number;
  fd?: number;
  /** The keepalive timer's remaining time (ms), when the kernel runs one. */
  keepAliveTimer?: number;
  /** ms since the last data received (ss -i `lastrcv`). */
  lastrcv: number;
}

const port = (endpoint: string) => Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));

/** Established TCP sockets in `ns`, as `ss -Htnpoi` shows them (filter: an ss state/address filter). */
export function ssSockets(ns: string, filter: string[] = []): SsSocket[] {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Htnpoi', 'state', 'established', ...filter], { encoding: 'utf8' });
  const sockets: SsSocket[] = [];
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    if (/^\s/.test(line)) {
      // The -i line of the socket above.
      const last = sockets[sockets.length - 1];
      const rcv = /lastrcv:(\d+)/.exec(line);
      if (last && rcv) last.lastrcv = Number(rcv[1]);
      continue;
    }
    const [, , local, peer] = line.split(/\s+/);
    const users = /pid=(\d+),fd=(\d+)/.exec(line);
    const timer = /timer:\(keepalive,([^,]+),/.exec(line);
    sockets.push({
      local,
      peer,
      localPort: port(local),
      peerPort: port(peer),
      pid: users ? Number(users[1]) : undefined,
      fd: users ? Number(users[2]) : undefined,
      keepAliveTimer: timer ? ssDuration(timer[1]) : undefined,
      lastrcv: Number.NaN,
    });
  }
  return sockets;
}

/**
 * The keepalive idle time the kernel is running for a socket, from ss alone: the timer's
 * remaining time plus the time since data was last received (the timer restarts on every
 * packet). ss prints whole seconds (rounded down), so this is within 1 s of the setting.
 */
export function keepAliveIdleSeen(s: SsSocket): number | undefined {
  return s.keepAliveTimer === undefined ? undefined : s.keepAliveTimer + s.lastrcv;
}

/**
 * From an strace log of socket/accept/setsockopt: for every fd, the last value each socket option
 * was set to since the fd was last created (a new socket on a reused fd number starts afresh).
 */
export function straceOptions(file: string): Map<number, Record<string, number>> {
  const byFd = new Map<number, Record<string, number>>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const created = /(?:\b(?:socket|accept4?)\(.*|<\.\.\. (?:socket|accept4?) resumed>.*)\)\s+=\s+(\d+)/.exec(line);
    if (created) {
      byFd.set(Number(created[1]), {});
      continue;
    }
    const set = /setsockopt\((\d+), SOL_\w+, (\w+), \[(-?\d+)\]/.exec(line);
    if (set) {
      const fd = Number(set[1]);
      const options = byFd.get(fd) ?? {};
      options[set[2]] = Number(set[3]);
      byFd.set(fd, options);
    }
  }
  return byFd;
}
