/**
 * The demo's small laboratory: network namespaces joined by veth pairs, a peer that vanishes
 * through nftables drops inside its own namespace, and child Node processes run inside them.
 * Everything it makes is recorded and removed by {@link Lab.cleanup}, which is synchronous so it
 * also runs from a signal handler or `'exit'`.
 * @module
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';

/** The child script every scenario runs (compiled next to this file, shipped in `dist/demo/`). */
export const peerScript = fileURLToPath(new URL('./peer.js', import.meta.url));

/** Why namespaces cannot be used on this machine, or undefined when they can. */
export function namespacesUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  for (const tool of ['ip', 'nft']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0) return `needs ${tool} on PATH`;
  }
  return undefined;
}

/** One line-delimited JSON conversation with a child process. */
export interface Child {
  /** The process (`ip netns exec` replaces itself with Node, so this is the Node process). */
  readonly process: ChildProcess;
  /** The next JSON message the child prints; rejects when it exits or the deadline passes first. */
  next<T = Record<string, unknown>>(): Promise<T>;
  /** Sends one JSON message on the child's stdin. */
  send(message: unknown): void;
}

function ip(args: string[], input?: string): void {
  try {
    execFileSync('ip', args, { input, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(`ip ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}`);
  }
}

/** Namespaces and children of one run, all named `<prefix>-<suffix>`. */
/**
 * The nftables ruleset that makes a network namespace vanish: every packet arriving on `dev` and
 * every packet leaving the namespace is dropped, so no RST and no ICMP ever comes back. Load it
 * inside the peer's namespace with `nft -f -`; delete tables `netdev st_vanish` and
 * `inet st_vanish` to undo it.
 */
export function vanishRules(dev: string): string {
  return [
    'table netdev st_vanish {',
    `  chain in { type filter hook ingress device "${dev}" priority -500; policy drop; }`,
    '}',
    'table inet st_vanish {',
    '  chain out { type filter hook output priority -500; policy drop; }',
    '}',
  ].join('\n');
}

export class Lab {
  /** Namespaces created and not yet deleted. */
  readonly namespaces: string[] = [];
  /** Every namespace this lab created, deleted or not. */
  readonly created: string[] = [];
  readonly #children = new Set<ChildProcess>();
  readonly #signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  readonly #onSignal = (signal: NodeJS.Signals): void => {
    this.cleanup();
    process.exit(128 + (osConstants.signals[signal] ?? 0));
  };
  readonly #onExit = (): void => this.cleanup();

  /** @param prefix namespace name prefix, for example `st-demo-<pid>` */
  constructor(readonly prefix: string) {}

  /** Removes everything on SIGINT, SIGTERM, SIGHUP and process exit until {@link Lab.cleanup}. */
  protect(): this {
    for (const s of this.#signals) process.on(s, this.#onSignal);
    process.on('exit', this.#onExit);
    return this;
  }

  /** Creates namespace `<prefix>-<suffix>` with loopback up; returns its name. */
  namespace(suffix: string): string {
    const name = `${this.prefix}-${suffix}`;
    ip(['netns', 'add', name]);
    this.namespaces.push(name);
    this.created.push(name);
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /**
   * Joins two namespaces with a veth pair (created directly inside them, so the root namespace
   * never holds the interfaces): `a` gets `addrA`/24 on `devA`, `b` gets `addrB`/24 on `devB`.
   */
  link(a: string, devA: string, addrA: string, b: string, devB: string, addrB: string): void {
    ip(['link', 'add', devA, 'netns', a, 'type', 'veth', 'peer', 'name', devB, 'netns', b]);
    ip(['-n', a, 'addr', 'add', `${addrA}/24`, 'dev', devA]);
    ip(['-n', b, 'addr', 'add', `${addrB}/24`, 'dev', devB]);
    ip(['-n', a, 'link', 'set', devA, 'up']);
    ip(['-n', b, 'link', 'set', devB, 'up']);
  }

  /**
   * Makes namespace `ns` silently vanish from the network: an ingress drop on `dev` and an output
   * drop, both inside `ns`, so no RST and no ICMP ever comes back (taking the link down would be
   * a different failure: the sender's own queue errors, not a silent peer).
   */
  vanish(ns: string, dev: string): void {
    const rules = vanishRules(dev);
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: rules, stdio: ['pipe', 'ignore', 'pipe'] });
    } catch (err) {
      throw new Error(`nft in ${ns} failed: ${String((err as { stderr?: Buffer }).stderr ?? '').trim()}`);
    }
  }

  /**
   * Starts `node <script> <mode> <json args> <prefix>` inside `ns` (or here, for loopback-only
   * runs) and returns the conversation. The child is killed at `timeoutMs` and by {@link Lab.cleanup}.
   *
   * @param script the child script (default: the demo's own `peer.js`)
   */
  start(ns: string | undefined, mode: string, args: unknown, timeoutMs: number, script = peerScript): Child {
    // The prefix rides along in argv so the processes of one run can be found (and were all ended).
    const argv = [script, mode, JSON.stringify(args), this.prefix];
    const child =
      ns === undefined
        ? spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#children.add(child);
    const queue: unknown[] = [];
    const waiting: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> = [];
    let failure: Error | undefined;
    let buffered = '';
    let stderr = '';
    const fail = (err: Error): void => {
      failure ??= err;
      for (const w of waiting.splice(0)) w.reject(failure);
    };
    const timer = setTimeout(() => {
      fail(new Error(`demo child '${mode}' did not finish within ${timeoutMs} ms`));
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line.trim()) continue;
        let message: unknown;
        try {
          message = JSON.parse(line);
        } catch {
          fail(new Error(`demo child '${mode}' printed something that is not JSON: ${line.slice(0, 200)}`));
          continue;
        }
        const w = waiting.shift();
        if (w) w.resolve(message);
        else queue.push(message);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk;
    });
    // The child may exit before the parent writes to it; EPIPE then is the exit, reported below.
    child.stdin!.on('error', () => {});
    child.on('error', (err) => fail(err));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      this.#children.delete(child);
      const how = signal ? `was killed by ${signal}` : `exited with ${code}`;
      fail(new Error(`demo child '${mode}' ${how}${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`));
    });
    return {
      process: child,
      next<T>(): Promise<T> {
        if (queue.length > 0) return Promise.resolve(queue.shift() as T);
        if (failure) return Promise.reject(failure);
        return new Promise<T>((resolve, reject) => waiting.push({ resolve: resolve as (v: unknown) => void, reject }));
      },
      send(message: unknown): void {
        if (child.stdin!.writable) child.stdin!.write(`${JSON.stringify(message)}\n`);
      },
    };
  }

  /** Kills `child` (if still running) and waits for it to exit. */
  async stop(child: Child): Promise<void> {
    const p = child.process;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGKILL');
    await exited;
  }

  /**
   * Kills every child and deletes every namespace, synchronously. Deleting a namespace also
   * deletes its veth ends (and so the pairs) and purges its TIME_WAIT sockets. Safe to call twice.
   */
  cleanup(): void {
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    this.#children.clear();
    for (const name of this.namespaces.splice(0)) spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    for (const s of this.#signals) process.off(s, this.#onSignal);
    process.off('exit', this.#onExit);
  }
}
