// Network namespaces of a test's own: created with lo up, deleted in teardown (which also purges
// their TIME_WAIT sockets). Names carry the pid so files can run in parallel.
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
    ESTAB: 'ESTABLISHED', 'SYN-SENT': 'SYN_SENT', 'SYN-RECV': 'SYN_RECV', 'FIN-WAIT-1': 'FIN_WAIT1',
    'FIN-WAIT-2': 'FIN_WAIT2', 'TIME-WAIT': 'TIME_WAIT', UNCONN: 'CLOSE', 'CLOSE-WAIT': 'CLOSE_WAIT',
    'LAST-ACK': 'LAST_ACK', LISTEN: 'LISTEN', CLOSING: 'CLOSING',
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
