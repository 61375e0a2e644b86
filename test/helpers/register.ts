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
import { expect } from 'vitest';

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
  /** Network namespace to run in (default: this process's). */
  ns?: string;
  /** Environment added to a clean one (SOCKTUNE_*, NODE_OPTIONS, ...). */
  env?: Record<string, string>;
  /** Node flags before the script (e.g. ['--import', 'socktune/register']). */
  nodeArgs?: string[];
  args?: string[];
  /** Run under strace, writing socket/accept/setsockopt calls to this file. */
  strace?: string;
}

type Line = Record<string, unknown>;

/** JSON lines in arrival order, each taken once: by the next reader, or within a deadline. */
class Lines {
  readonly #lines: Line[] = [];
  readonly #waiting: Array<{ resolve: (line: Line | undefined) => void; reject: (e: Error) => void }> = [];
  #failed: Error | undefined;

  push(line: Line): void {
    const w = this.#waiting.shift();
    if (w) w.resolve(line);
    else this.#lines.push(line);
  }

  fail(err: Error): void {
    this.#failed = err;
    for (const w of this.#waiting.splice(0)) w.reject(err);
  }

  /** The next line, or undefined once `within` ms passed. */
  take(within = Infinity): Promise<Line | undefined> {
    return new Promise((resolve, reject) => {
      if (this.#lines.length > 0) return resolve(this.#lines.shift()!);
      if (this.#failed) return reject(this.#failed);
      const waiter = { resolve, reject };
      this.#waiting.push(waiter);
      if (within !== Infinity) {
        setTimeout(() => {
          const i = this.#waiting.indexOf(waiter);
          if (i < 0) return;
          this.#waiting.splice(i, 1);
          resolve(undefined);
        }, within);
      }
    });
  }

  /** The first line `wanted` accepts (others are dropped), or undefined after `within` ms. */
  async until(wanted: (line: Line) => boolean, within: number): Promise<Line | undefined> {
    const deadline = performance.now() + within;
    for (;;) {
      const left = deadline - performance.now();
      const line = left > 0 ? await this.take(left) : undefined;
      if (line === undefined || wanted(line)) return line;
    }
  }
}

/**
 * A running application. It prints JSON lines: events (lines with an `event` field, which
 * `until` reads) and everything else (its ready line and answers to commands, which `next` and
 * `send` read), so an event arriving between a command and its answer is not taken for the answer.
 */
export interface App {
  child: ChildProcess;
  /** The first line the application printed with `ready: true`. */
  ready: Line;
  /** Writes a command line and resolves with the next answer. */
  send(command: string): Promise<Line>;
  /** Resolves with the next answer (a line without an `event` field). */
  next(): Promise<Line>;
  /** Resolves with the first next event `wanted` accepts (skipping other events), or undefined after `within` ms. */
  until(wanted: (event: Line) => boolean, within: number): Promise<Line | undefined>;
  /** Everything printed on stderr so far. */
  stderr(): string;
  /** Ends stdin and waits for the exit. */
  stop(): Promise<number | null>;
}

/** Starts `script` in `ns` from the consumer project and waits for its `{ ready: true, ... }` line. */
export async function startApp(script: string, opts: AppOptions): Promise<App> {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), script, ...(opts.args ?? [])];
  const traced = opts.strace
    ? ['strace', '-f', '-qq', '--seccomp-bpf', '-e', 'trace=socket,accept,accept4,setsockopt', '-e', 'signal=none', '-o', opts.strace, ...node]
    : node;
  const [command, ...args] = opts.ns === undefined ? traced : ['ip', 'netns', 'exec', opts.ns, ...traced];
  const child = spawn(command, args, {
    cwd: consumerProject(),
    env: cleanEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const answers = new Lines();
  const events = new Lines();
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const text = out.slice(0, nl);
      out = out.slice(nl + 1);
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
      } catch {
        continue; // not a report line
      }
      (line.event === undefined ? answers : events).push(line);
    }
  });
  child.once('exit', (code, signal) => {
    const failed = new Error(`${script} exited (${code ?? signal}) before answering; stderr:\n${err.slice(-3000)}`);
    answers.fail(failed);
    events.fail(failed);
  });
  const ready = await answers.until((line) => line.ready === true, 60_000);
  if (ready === undefined) {
    child.kill('SIGKILL');
    throw new Error(`${script} printed no { ready } line within 60 s; stderr:\n${err.slice(-3000)}`);
  }
  const next = async () => (await answers.take())!;
  return {
    child,
    ready,
    send(command: string) {
      child.stdin!.write(`${command}\n`);
      return next();
    },
    next,
    until: (wanted, within) => events.until(wanted, within),
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

/** Runs `node [nodeArgs] script` to its end (in namespace `ns`, if given) and returns its exit code and output. */
export function runToEnd(
  nodeArgs: string[],
  env: Record<string, string>,
  timeout = 30_000,
  ns?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const [command, ...args] = ns === undefined ? [process.execPath, ...nodeArgs] : ['ip', 'netns', 'exec', ns, process.execPath, ...nodeArgs];
    const child = spawn(command, args, { cwd: consumerProject(), env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
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
  /** Bytes sent and not yet acknowledged: while there are any, ss shows the retransmission timer instead of keepalive's. */
  sendQ: number;
  /** ms since the last data received (ss -i `lastrcv`). */
  lastrcv: number;
  /** ms since the last ACK received (ss -i `lastack`), keepalive probes' answers included. */
  lastack: number;
  /** ss's line, for messages. */
  line: string;
}

const port = (endpoint: string) => Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));

function ssOnce(ns: string | undefined, filter: string[]): SsSocket[] {
  const ss = ['ss', '-Htnpoi', 'state', 'established', ...filter];
  const out =
    ns === undefined ? execFileSync(ss[0], ss.slice(1), { encoding: 'utf8' }) : execFileSync('ip', ['netns', 'exec', ns, ...ss], { encoding: 'utf8' });
  const sockets: SsSocket[] = [];
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    if (/^\s/.test(line)) {
      // The -i line of the socket above.
      const last = sockets[sockets.length - 1];
      // ss leaves a zero out.
      if (last) last.lastrcv = Number(/lastrcv:(\d+)/.exec(line)?.[1] ?? 0);
      if (last) last.lastack = Number(/lastack:(\d+)/.exec(line)?.[1] ?? 0);
      continue;
    }
    const [, sendQ, local, peer] = line.split(/\s+/);
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
      sendQ: Number(sendQ),
      lastrcv: 0,
      lastack: 0,
      line: line.trim().replace(/\s+/g, ' '),
    });
  }
  return sockets;
}

/**
 * Established TCP sockets in `ns` (default: this process's namespace) of processes (ss -p), as
 * `ss -Htnpoi` shows them (filter: an ss address filter). ss shows one timer per socket, and while
 * written bytes are unacknowledged that is the retransmission timer, not keepalive's: a response or
 * a TLS session ticket just written. So this waits (up to 5 s) until none has bytes in flight or
 * shows that timer.
 */
export async function ssSockets(ns: string | undefined, filter: string[] = []): Promise<SsSocket[]> {
  const deadline = performance.now() + 5000;
  for (;;) {
    const sockets = ssOnce(ns, filter).filter((s) => s.pid !== undefined);
    // ss can still show the retransmission (or loss probe) timer of a socket whose queue just
    // emptied: wait for that to pass too.
    if (sockets.every((s) => s.sendQ === 0 && !/timer:\((on|persist),/.test(s.line)) || performance.now() > deadline) return sockets;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The keepalive idle time the kernel is running for a socket, from ss alone: the timer's
 * remaining time plus the time since the peer was last heard from (the kernel restarts the idle
 * time on every packet received, keepalive answers included). ss prints whole seconds above 10 s
 * (rounded down), so this is within 1 s of the setting, as long as no probe is waiting for its
 * answer (the connection has been idle for less than the idle time).
 */
export function keepAliveIdleSeen(s: SsSocket): number | undefined {
  return s.keepAliveTimer === undefined ? undefined : s.keepAliveTimer + Math.min(s.lastrcv, s.lastack);
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

// ------------------------------------------------------------------ recipes (tests 33–35)

/** How a recipe client runs: the control, unchanged under socktune/register, or with the README's explicit recipe. */
export type Mode = 'plain' | 'register' | 'tune';
export const modes: Mode[] = ['plain', 'register', 'tune'];

/** The recipes' policy: gracefulHeartbeat with demo-scale keepalive, so a vanished peer is found in I + C·V = 5 s. */
export const recipeKeepAlive = { idle: 2000, interval: 1000, count: 3 };
export const recipeBudget = recipeKeepAlive.idle + recipeKeepAlive.interval * recipeKeepAlive.count;
/** What the kernel holds under the recipes' policy (the user timeout follows the keepalive budget). */
export const recipeOptions = { keepAlive: recipeKeepAlive, userTimeout: recipeBudget };
/** Keepalive timers fire on jiffies, and the client's event loop reports it: testing.md's 1 s. */
export const recipeSlack = 1000;

/** The environment of a recipe client: the `register` mode loads socktune/register with the recipes' policy. */
export function recipeEnv(mode: Mode): Record<string, string> {
  if (mode !== 'register') return {};
  return { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: JSON.stringify({ preset: 'gracefulHeartbeat', keepAlive: recipeKeepAlive }) };
}

export interface Arm {
  mode: Mode;
  app: App;
  /** The strace log of the arm's process (startApp's `strace`). */
  strace: string;
}

/**
 * The listening TCP sockets of process `pid` in `ns` (default: this process's namespace), port →
 * fd (`ss -Htlnp`).
 */
export function listenerFds(pid: number, ns?: string): Map<number, number> {
  const args = ['-Htlnp'];
  const stdout =
    ns === undefined ? execFileSync('ss', args, { encoding: 'utf8' }) : execFileSync('ip', ['netns', 'exec', ns, 'ss', ...args], { encoding: 'utf8' });
  const out = new Map<number, number>();
  for (const line of stdout.split('\n')) {
    const local = line.trim().split(/\s+/)[3];
    const owner = new RegExp(`pid=${pid},fd=(\\d+)`).exec(line);
    if (local !== undefined && owner) out.set(Number(/:(\d+)$/.exec(local)![1]), Number(owner[1]));
  }
  return out;
}

/**
 * The arm's connections among `sockets` (by pid) hold the recipes' policy, by strace (the last
 * value of each option set on each one's fd) and by ss (the kernel runs a keepalive timer no
 * longer than the idle time); a `plain` arm's hold none of it. A connection the arm's process
 * accepted on one of `listeners` (port → the listening socket's fd) holds what its listener's fd
 * was set to (Linux copies it at accept: socktune sets the policy there once), overridden by what
 * was set on its own fd (a connection accepted before the listener had the policy, or while
 * socktune still reads back whether accepted connections inherit, is tuned by itself).
 */
export function expectRecipePolicy(arm: Arm, sockets: SsSocket[], what: string, listeners?: Map<number, number>): SsSocket[] {
  const mine = sockets.filter((s) => s.pid === arm.app.ready.pid);
  expect(mine.length, `${what}: connections`).toBeGreaterThan(0);
  const sets = straceOptions(arm.strace);
  for (const socket of mine) {
    const listener = listeners?.get(socket.localPort);
    const set = { ...(listener === undefined ? {} : sets.get(listener)), ...sets.get(socket.fd!) };
    if (arm.mode === 'plain') {
      expect(set.TCP_USER_TIMEOUT, what).toBeUndefined();
      expect(set.TCP_KEEPIDLE === undefined || set.TCP_KEEPIDLE * 1000 > recipeKeepAlive.idle, `${what}: TCP_KEEPIDLE ${set.TCP_KEEPIDLE}`).toBe(true);
      continue;
    }
    const options = {
      SO_KEEPALIVE: set.SO_KEEPALIVE,
      TCP_KEEPIDLE: set.TCP_KEEPIDLE,
      TCP_KEEPINTVL: set.TCP_KEEPINTVL,
      TCP_KEEPCNT: set.TCP_KEEPCNT,
      TCP_USER_TIMEOUT: set.TCP_USER_TIMEOUT,
    };
    expect(options, what).toEqual({
      SO_KEEPALIVE: 1,
      TCP_KEEPIDLE: recipeKeepAlive.idle / 1000,
      TCP_KEEPINTVL: recipeKeepAlive.interval / 1000,
      TCP_KEEPCNT: recipeKeepAlive.count,
      TCP_USER_TIMEOUT: recipeBudget,
    });
    expect(socket.keepAliveTimer, `${what}: keepalive timer: ${socket.line}`).toBeDefined();
    expect(socket.keepAliveTimer!, `${what}: keepalive timer: ${socket.line}`).toBeLessThanOrEqual(recipeKeepAlive.idle + 500);
  }
  return mine;
}

/**
 * Makes the peer vanish and waits up to `window` ms for each arm's first `{ event: 'error' |
 * 'close' }` stamped after it. Returns, per arm, ms from the vanish to that event as the client
 * stamped it (`at`, wall clock: the same clock in both processes), or undefined when none came.
 */
export async function noticeAfterVanish(arms: Arm[], vanish: () => void, window: number): Promise<Map<Arm, number | undefined>> {
  const t0 = Date.now();
  vanish();
  const after = (l: Line) => (l.event === 'error' || l.event === 'close') && (l.at as number) >= t0;
  const seen = await Promise.all(arms.map((arm) => arm.app.until(after, window)));
  return new Map(arms.map((arm, i) => [arm, seen[i] === undefined ? undefined : (seen[i]!.at as number) - t0]));
}

/**
 * The policy clients' own view (the fixture reads the kernel with readOptions on the library's
 * socket): the recipes' policy, on the `connects`-th connection.
 */
export async function expectOptionsRead(arms: Arm[], connects: number, what: string): Promise<void> {
  for (const arm of arms.filter((a) => a.mode !== 'plain')) {
    const answer = (await arm.app.send('options')) as { options: Record<string, unknown>; connects: number };
    expect(answer.connects, `${what} ${arm.mode}: connections made`).toBe(connects);
    expect(answer.options, `${what} ${arm.mode}`).toMatchObject(recipeOptions);
  }
}

/**
 * The peer vanishes: every policy arm notices within the keepalive budget plus testing.md's
 * slack, and the controls have noticed nothing 3 s after that.
 */
export async function expectVanishNoticed(arms: Arm[], vanish: () => void, what: string): Promise<void> {
  const window = recipeBudget + recipeSlack + 3000;
  const noticed = await noticeAfterVanish(arms, vanish, window);
  for (const arm of arms) {
    const after = noticed.get(arm);
    if (arm.mode === 'plain') {
      expect(after, `${what} plain noticed after ${after} ms`).toBeUndefined();
    } else {
      expect(after, `${what} ${arm.mode} noticed nothing within ${window} ms`).toBeDefined();
      expect(after!, `${what} ${arm.mode}`).toBeLessThanOrEqual(recipeBudget + recipeSlack);
    }
  }
}
