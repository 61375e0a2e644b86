// A slow link between two namespaces of a test's own, for the cases the veth pair cannot show:
// this kernel has no netem, so test/fixtures/delay-link.py is one in userspace. It opens two TUN
// devices in the root namespace; this helper moves one into each namespace (renamed `st-dl`) and
// gives them 10.214.<subnet>.1/24 (client) and 10.214.<subnet>.2/24 (server). Every IP packet
// then crosses after `delayMs` one way (2 × delayMs round trip), in order, and `drop()` makes the
// link discard everything in both directions (the peer vanishes, nothing comes back) until `pass()`.
// The veth peers use 10.213/16; 10.214/16 is only ever inside these namespaces.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Netns } from './netns.js';

const script = fileURLToPath(new URL('../fixtures/delay-link.py', import.meta.url));
/** How long the link process may take to open its devices or to answer a command. */
const answerTimeout = 10_000;
let links = 0;

export interface DelayLinkOptions {
  /** Short tag for the namespace names (`st-<tag>-cli-<pid>`, `st-<tag>-srv-<pid>`). */
  tag: string;
  /** One-way delay in ms, each direction. */
  delayMs: number;
  /** Third octet of the link's /24 (0..255, default 0): 10.214.<subnet>.0/24. */
  subnet?: number;
  /** MTU of both devices (default 1500). */
  mtu?: number;
}

export interface LinkEnd {
  /** The namespace (exec, start, sysctl), deleted by destroy(). */
  ns: Netns;
  /** The namespace's name, for `ip netns exec`. */
  name: string;
  /** This end's IPv4 address. */
  addr: string;
  /** The TUN device inside the namespace. */
  dev: string;
}

/** Packet counters of the link since it started. */
export interface LinkStats {
  clientToServer: number;
  serverToClient: number;
  /** Discarded while dropping (including what was in the link at `drop`), or refused by a device. */
  dropped: number;
  /** In the link now. */
  queued: number;
  /** The most any packet left after its due time, µs. */
  lateMaxUs: number;
}

export class DelayLink {
  readonly client: LinkEnd;
  readonly server: LinkEnd;
  readonly dev = 'st-dl';
  private readonly rootDevs: [string, string];
  private child: ChildProcess | undefined;
  private exited: Promise<unknown> = Promise.resolve();
  private readonly waiting: { resolve: (line: string) => void; reject: (err: Error) => void }[] = [];
  private stderr = '';
  private destroyed = false;
  /** The namespaces this link created, which destroy() deletes. */
  private readonly made: Netns[] = [];

  private constructor(private readonly options: Required<DelayLinkOptions>) {
    const { tag, subnet } = options;
    const end = (role: 'cli' | 'srv', host: number): LinkEnd => {
      const ns = new Netns(`${tag}-${role}`);
      return { ns, name: ns.name, addr: `10.214.${subnet}.${host}`, dev: this.dev };
    };
    this.client = end('cli', 1);
    this.server = end('srv', 2);
    // Names in the root namespace until the move: unique per process and link, at most 15 characters.
    const n = links++;
    this.rootDevs = [`dl${process.pid}-${n}c`, `dl${process.pid}-${n}s`];
  }

  /** Creates the namespaces and the devices and starts the link; on any failure removes what it made. */
  static async create(options: DelayLinkOptions): Promise<DelayLink> {
    const { tag, delayMs, subnet = 0, mtu = 1500 } = options;
    checkDelay(delayMs);
    if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255) throw new RangeError(`subnet ${subnet} is not 0..255`);
    const link = new DelayLink({ tag, delayMs, subnet, mtu });
    try {
      await link.start();
    } catch (err) {
      await link.destroy();
      throw err;
    }
    return link;
  }

  /** The link process's pid (to check that it is gone). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private async start(): Promise<void> {
    for (const end of [this.client, this.server]) {
      // Another link's namespace (same tag) is not ours to delete when this one fails.
      if (existsSync(`/run/netns/${end.name}`)) throw new Error(`namespace ${end.name} exists already`);
      this.made.push(end.ns);
      end.ns.create();
    }
    const child = spawn('python3', [script, '--delay', String(this.options.delayMs), ...this.rootDevs], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = once(child, 'exit').catch(() => undefined);
    child.stdin!.on('error', () => {}); // EPIPE once it has exited: its 'exit' reports that
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < 16_384) this.stderr += d;
    });
    // A failed spawn (no python3) rejects what waits; 'exit' may never come then.
    child.on('error', (err) => this.failAll(err));
    // 'close' comes after the last of stderr, which says why.
    child.on('close', (code, signal) => this.failAll(new Error(`delay-link exited (${signal ?? code}): ${this.stderr.trim()}`)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.waiting.shift();
      if (!w) return;
      if (line.startsWith('error ')) w.reject(new Error(`delay-link: ${line}`));
      else w.resolve(line);
    });
    const ready = await this.nextLine('ready');
    if (ready !== 'ready') throw new Error(`delay-link said ${JSON.stringify(ready)} instead of ready`);

    const { mtu } = this.options;
    for (const [end, rootDev] of [
      [this.client, this.rootDevs[0]],
      [this.server, this.rootDevs[1]],
    ] as const) {
      execFileSync('ip', ['link', 'set', 'dev', rootDev, 'netns', end.name, 'name', this.dev]);
      // No IPv6 link-local address: nothing crosses the link that a test did not send.
      execFileSync('ip', ['-n', end.name, 'link', 'set', 'dev', this.dev, 'addrgenmode', 'none', 'mtu', String(mtu)]);
      execFileSync('ip', ['-n', end.name, 'addr', 'add', `${end.addr}/24`, 'dev', this.dev]);
      execFileSync('ip', ['-n', end.name, 'link', 'set', 'dev', this.dev, 'up']);
    }
  }

  /** Resolves with the next line the link prints (rejects on an `error` line, its exit, or after answerTimeout). */
  private nextLine(what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        // A late answer would be taken for the next command's: a link that hangs is ended.
        this.child?.kill('SIGKILL');
        reject(new Error(`delay-link did not answer ${what} within ${answerTimeout} ms`));
      }, answerTimeout);
      const w = {
        resolve: (line: string) => (clearTimeout(timer), resolve(line)),
        reject: (err: Error) => (clearTimeout(timer), reject(err)),
      };
      this.waiting.push(w);
    });
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  /** Sends one command and resolves with the answer once the link has carried it out. */
  private async command(cmd: string): Promise<string> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`delay-link is not running: ${this.stderr.trim()}`);
    }
    const answer = this.nextLine(cmd);
    child.stdin!.write(`${cmd}\n`);
    const line = await answer;
    if (line !== `ok ${cmd}` && !line.startsWith(`ok ${cmd} `)) throw new Error(`delay-link answered ${JSON.stringify(line)} to ${cmd}`);
    return line;
  }

  /** From now on every packet is discarded, both directions, including those already in the link. */
  async drop(): Promise<void> {
    await this.command('drop');
  }

  /** Forwards again after {@link drop}. */
  async pass(): Promise<void> {
    await this.command('pass');
  }

  /** One-way delay of the packets that enter from now on (they never overtake those already in the link). */
  async setDelay(ms: number): Promise<void> {
    checkDelay(ms);
    await this.command(`delay ${ms}`);
  }

  async stats(): Promise<LinkStats> {
    const line = await this.command('stats');
    const n = (key: string): number => Number(new RegExp(`\\b${key}=(\\d+)`).exec(line)?.[1] ?? NaN);
    return {
      clientToServer: n('a2b'),
      serverToClient: n('b2a'),
      dropped: n('dropped'),
      queued: n('queued'),
      lateMaxUs: n('late_max_us'),
    };
  }

  /** Ends the link process (its devices go with it) and deletes both namespaces. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      // End of input is the process's quit; SIGKILL if it does not go at once.
      child.stdin!.end();
      const late = setTimeout(() => child.kill('SIGKILL'), 2000);
      await this.exited;
      clearTimeout(late);
    }
    for (const ns of this.made) await ns.destroy();
  }
}

function checkDelay(ms: number): void {
  if (!Number.isFinite(ms) || ms < 0 || ms > 3_600_000) throw new RangeError(`delay ${ms} ms is not 0..3600000`);
}
