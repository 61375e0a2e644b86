// What the stages before Node need from a test: strace over the syscalls that make a socket
// (socket, bind, connect, listen, setsockopt), and two network namespaces of the test's own joined
// by a veth pair, so the client side has a port range of its own to exhaust.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns } from './netns.js';

const run = promisify(execFile);
const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface Trace {
  /** The calls between the fixture's `begin` and `end` marks, without the thread id. */
  calls: string[];
  stdout: string;
  /** setsockopt calls before the `begin` mark (to aim fault injection inside the section). */
  setsBefore: number;
}

/**
 * Runs test/fixtures/<fixture> under `strace -f` for `syscalls` and returns those made between its
 * marks. `extra`: more strace arguments (fault injection).
 */
export async function traceSyscalls(fixture: string, args: string[], syscalls: string[], extra: string[] = []): Promise<Trace> {
  const dir = mkdtempSync(join(tmpdir(), 'socktune-stage-'));
  const out = join(dir, 'trace');
  let stdout: string;
  let text: string;
  try {
    ({ stdout } = await run(
      'strace',
      [
        '-f',
        '-qq',
        '-o',
        out,
        '-e',
        `trace=${[...syscalls, 'access', 'faccessat', 'faccessat2'].join(',')}`,
        '-e',
        'signal=none',
        ...extra,
        process.execPath,
        fixtures + fixture,
        ...args,
      ],
      { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 },
    ));
    text = readFileSync(out, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const lines = text.split('\n');
  const begin = lines.findIndex((l) => l.includes('/socktune-mark-begin'));
  const end = lines.findIndex((l) => l.includes('/socktune-mark-end'));
  if (begin < 0 || end < begin) throw new Error(`fixture ${fixture} left no marks:\n${text.slice(-2000)}`);
  const wanted = new RegExp(`^(${syscalls.join('|')})\\(`);
  const calls = lines
    .slice(begin + 1, end)
    .map((l) => l.replace(/^(?:\[pid\s+\d+\]|\d+)\s*/, ''))
    .filter((l) => wanted.test(l));
  const setsBefore = lines.slice(0, begin).filter((l) => /setsockopt\(/.test(l)).length;
  return { calls, stdout, setsBefore };
}

/**
 * Runs a server fixture under `strace -f` for `syscalls`: once it prints its first line (its
 * `{"port"}`), `drive(ready)` runs against it; then the fixture's second line and the calls between
 * its marks are returned, with how many of each syscall name were made there.
 */
export async function traceServer(
  fixture: string,
  args: string[],
  syscalls: string[],
  drive: (ready: string) => Promise<void>,
  options: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<{ calls: string[]; report: string; counts: Record<string, number> }> {
  const dir = mkdtempSync(join(tmpdir(), 'socktune-stage-'));
  const out = join(dir, 'trace');
  try {
    const child = spawn(
      'strace',
      [
        '-f',
        '-qq',
        '-o',
        out,
        '-e',
        `trace=${[...syscalls, 'access', 'faccessat', 'faccessat2'].join(',')}`,
        '-e',
        'signal=none',
        process.execPath,
        ...(options.nodeArgs ?? []),
        fixtures + fixture,
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], env: options.env ?? process.env },
    );
    let buf = '';
    const lines: string[] = [];
    const waiters: Array<() => void> = [];
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        waiters.splice(0).forEach((w) => w());
      }
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const line = async (n: number): Promise<string> => {
      while (lines.length <= n) {
        const more = new Promise<void>((resolve) => waiters.push(resolve));
        await Promise.race([more, exited]);
        if (lines.length <= n && child.exitCode !== null) throw new Error(`${fixture} exited before line ${n + 1}: ${lines.join(' | ')}`);
      }
      return lines[n];
    };
    try {
      await drive(await line(0));
      const report = await line(1);
      await exited;
      const text = readFileSync(out, 'utf8').split('\n');
      const begin = text.findIndex((l) => l.includes('/socktune-mark-begin'));
      const end = text.findIndex((l) => l.includes('/socktune-mark-end'));
      if (begin < 0 || end < begin) throw new Error(`${fixture} left no marks`);
      const wanted = new RegExp(`^(${syscalls.join('|')})\\(`);
      const calls = text
        .slice(begin + 1, end)
        .map((l) => l.replace(/^(?:\[pid\s+\d+\]|\d+)\s*/, ''))
        .filter((l) => wanted.test(l));
      const counts: Record<string, number> = {};
      for (const c of calls) counts[c.split('(')[0]] = (counts[c.split('(')[0]] ?? 0) + 1;
      return { calls, report, counts };
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Two namespaces of a test's own, `cli` at 10.216.<subnet>.1 and `srv` at 10.216.<subnet>.2, joined
 * by a veth pair. Each test file passes its own subnet (1..250) and tag.
 */
export class NsPair {
  readonly cli: Netns;
  readonly srv: Netns;
  readonly cliAddr: string;
  readonly srvAddr: string;

  constructor(
    tag: string,
    readonly subnet: number,
  ) {
    this.cli = new Netns(`${tag}c`);
    this.srv = new Netns(`${tag}s`);
    this.cliAddr = `10.216.${subnet}.1`;
    this.srvAddr = `10.216.${subnet}.2`;
  }

  create(): this {
    this.cli.create();
    this.srv.create();
    execFileSync('ip', ['link', 'add', 'st-c', 'netns', this.cli.name, 'type', 'veth', 'peer', 'name', 'st-s', 'netns', this.srv.name]);
    execFileSync('ip', ['-n', this.cli.name, 'addr', 'add', `${this.cliAddr}/24`, 'dev', 'st-c']);
    execFileSync('ip', ['-n', this.srv.name, 'addr', 'add', `${this.srvAddr}/24`, 'dev', 'st-s']);
    execFileSync('ip', ['-n', this.cli.name, 'link', 'set', 'st-c', 'up']);
    execFileSync('ip', ['-n', this.srv.name, 'link', 'set', 'st-s', 'up']);
    return this;
  }

  async destroy(): Promise<void> {
    await this.cli.destroy();
    await this.srv.destroy();
  }
}
