// Network namespaces of a test's own: created with lo up, deleted in teardown (which also purges
// their TIME_WAIT sockets). Names carry the pid so files can run in parallel. And the kernel's
// witnesses read in one (or in the root namespace): `ss` counts and `nstat` counters.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';

const run = promisify(execFile);

export class Netns {
  readonly name: string;
  private children: ChildProcess[] = [];

  constructor(tag: string) {
    this.name = `st-${tag}-${process.pid}`;
  }

  create(): this {
    execFileSync('ip', ['netns', 'add', this.name]);
    execFileSync('ip', ['-n', this.name, 'link', 'set', 'lo', 'up']);
    return this;
  }

  /** Runs a command inside the namespace and returns its stdout. */
  async exec(cmd: string, args: string[] = [], opts: { timeout?: number } = {}): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.name, cmd, ...args], {
      maxBuffer: 256 * 1024 * 1024,
      timeout: opts.timeout ?? 60_000,
    });
    return stdout;
  }

  sysctl(setting: string, value: string): void {
    execFileSync('ip', ['netns', 'exec', this.name, 'sysctl', '-qw', `${setting}=${value}`]);
  }

  /**
   * Starts a long-lived Node (or, for a `.py` file, Python) script inside the namespace and resolves with the first line it
   * prints (its report that it is ready); the process is killed in destroy().
   */
  async start(script: string, args: string[] = []): Promise<{ child: ChildProcess; ready: string }> {
    // A Python peer (not Node) where the test wants one; Node otherwise.
    const interpreter = script.endsWith('.py') ? 'python3' : process.execPath;
    const child = spawn('ip', ['netns', 'exec', this.name, interpreter, script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.children.push(child);
    let buf = '';
    const ready = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl >= 0) resolve(buf.slice(0, nl));
      });
      child.once('exit', (code) => reject(new Error(`${script} exited with ${code} before it was ready`)));
    });
    return { child, ready };
  }

  async destroy(): Promise<void> {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await once(c, 'exit');
      }
    }
    try {
      execFileSync('ip', ['netns', 'del', this.name]);
    } catch {
      // already gone
    }
  }
}

/** Counts `ss -Htan` lines by state, with ss's names turned into the kernel's (TIME-WAIT → TIME_WAIT). */
export function ssCounts(output: string): Record<string, number> {
  const names: Record<string, string> = {
    ESTAB: 'ESTABLISHED',
    'SYN-SENT': 'SYN_SENT',
    'SYN-RECV': 'SYN_RECV',
    'FIN-WAIT-1': 'FIN_WAIT1',
    'FIN-WAIT-2': 'FIN_WAIT2',
    'TIME-WAIT': 'TIME_WAIT',
    UNCONN: 'CLOSE',
    'CLOSE-WAIT': 'CLOSE_WAIT',
    'LAST-ACK': 'LAST_ACK',
    LISTEN: 'LISTEN',
    CLOSING: 'CLOSING',
  };
  const counts: Record<string, number> = {};
  for (const line of output.split('\n')) {
    const state = line.split(/\s+/)[0];
    if (!state) continue;
    const name = names[state] ?? state;
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

/** Where a witness runs: a namespace of the test's own (a Netns, a VethPeer's `ns`, a DelayLink end), or the root namespace. */
export type Where = { name: string } | undefined;

async function inNs(where: Where, cmd: string, args: string[]): Promise<string> {
  const argv = where === undefined ? [cmd, ...args] : ['ip', 'netns', 'exec', where.name, cmd, ...args];
  return (await run(argv[0], argv.slice(1), { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 })).stdout;
}

/** How many TCP sockets `ss -Htan state <state> [filter]` lists in `where` (`filter`: one ss expression, such as `sport = :80`). */
export async function ssCount(state: string, where?: Where): Promise<number>;
export async function ssCount(state: string, filter: string, where?: Where): Promise<number>;
export async function ssCount(state: string, filterOrWhere?: string | Where, where?: Where): Promise<number> {
  const filter = typeof filterOrWhere === 'string' ? [filterOrWhere] : [];
  const out = await inNs(typeof filterOrWhere === 'string' ? where : filterOrWhere, 'ss', ['-Htan', 'state', state, ...filter]);
  return out.split('\n').filter((line) => line.trim() !== '').length;
}

/** Kernel counters of `where` by `nstat -asz [names]`: absolute values, zeros included, nstat's history untouched. */
export async function nstat(where: Where, ...names: string[]): Promise<Record<string, number>> {
  const counters: Record<string, number> = {};
  for (const line of (await inNs(where, 'nstat', ['-asz', ...names])).split('\n')) {
    const [name, value] = line.trim().split(/\s+/);
    if (name && /^\d+$/.test(value ?? '')) counters[name] = Number(value);
  }
  return counters;
}
