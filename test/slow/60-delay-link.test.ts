// The delay link itself (test/helpers/delaylink.ts over test/fixtures/delay-link.py), against the
// real kernel: a round trip takes twice the one-way delay and not much more, as the kernel's own
// RTT estimate (ss -ti) and a monotonic clock in the client both show; a new delay applies to what
// enters the link from then on; 32 MiB cross intact; after drop() nothing more arrives while the
// sender retransmits into the void, and after pass() the same connection resumes and completes;
// destroy() leaves no process, namespace or device behind.
//
// The only timing assertions are the link's own delay semantics: at least 2 × delay (the link
// never lets a packet out early, so this holds on any machine), and less than 2 × delay + a
// generous margin for a loaded one.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { canUse, inCI } from '../helpers/env.js';
import { DelayLink, type LinkEnd } from '../helpers/delaylink.js';
import { ssCount } from '../helpers/netns.js';

const peerScript = fileURLToPath(new URL('../fixtures/delay-link-peer.mjs', import.meta.url));
const MiB = 1024 * 1024;
const delayMs = 100;
/** What a round trip may take beyond 2 × delay on a loaded machine. */
const margin = 150;

/** A delay-link-peer.mjs process inside one end's namespace, read one JSON line at a time. */
class Peer {
  private readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private wake: (() => void) | undefined;
  private readonly exited: Promise<unknown>;

  constructor(end: LinkEnd, args: string[]) {
    this.child = spawn('ip', ['netns', 'exec', end.name, process.execPath, peerScript, ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.child.stdin!.on('error', () => {});
    this.exited = once(this.child, 'exit').catch(() => undefined);
    this.exited.then(() => this.wake?.());
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      this.wake?.();
    });
  }

  /** The next line, parsed; rejects if the process ends first or nothing comes within `timeout` ms. */
  async next<T>(timeout = 20_000): Promise<T> {
    const deadline = Date.now() + timeout;
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        throw new Error(`peer exited (${this.child.exitCode ?? this.child.signalCode}) without a line`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line from the peer within ${timeout} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => (clearTimeout(timer), resolve());
      });
      this.wake = undefined;
    }
    return JSON.parse(this.lines.shift()!) as T;
  }

  /** The next line for which `match` holds, skipping others (a failed test's leftovers). */
  async nextWhere<T>(match: (line: T) => boolean, timeout = 20_000): Promise<T> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const line = await this.next<T>(Math.max(1, deadline - Date.now()));
      if (match(line)) return line;
    }
  }

  /** Says "end" (send: stop writing; ping, serve: close and exit). */
  end(): void {
    this.child.stdin!.write('end\n');
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** TCP_INFO of the one established connection that `filter` selects in `end`'s namespace, as ss prints it (key → value). */
function tcpInfo(end: LinkEnd, filter: string): Record<string, string> {
  const out = execFileSync('ip', ['netns', 'exec', end.name, 'ss', '-Htin', 'state', 'established', filter], { encoding: 'utf8' });
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  const sockets = lines.filter((l) => !/^\s/.test(l));
  if (sockets.length !== 1) throw new Error(`ss ${filter} in ${end.name}: ${sockets.length} connections:\n${out}`);
  const info: Record<string, string> = {};
  for (const token of lines
    .filter((l) => /^\s/.test(l))
    .join(' ')
    .trim()
    .split(/\s+/)) {
    const colon = token.indexOf(':');
    if (colon > 0) info[token.slice(0, colon)] = token.slice(colon + 1);
  }
  return info;
}

/** A counter from {@link tcpInfo}; ss leaves out the ones that are zero. */
const counter = (info: Record<string, string>, key: string): number => Number(info[key] ?? 0);
/** Total retransmissions of `retrans:<outstanding>/<total>`. */
const retransTotal = (info: Record<string, string>): number => Number(info.retrans?.split('/')[1] ?? 0);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface SinkReport {
  port: number;
  received: number;
  sha256: string;
}

interface SendReport {
  sent: number;
  sha256: string;
}

const usable = canUse('ip', 'ss', 'python3') && (inCI || existsSync('/dev/net/tun'));

describe.runIf(usable)('a delay link between two namespaces', () => {
  let link: DelayLink | undefined;
  let server: Peer | undefined;
  let ports: { echo: number; sink: number };
  /** Peers of the current test, stopped after it. */
  let peers: Peer[] = [];
  const peer = (end: LinkEnd, args: string[]): Peer => {
    const p = new Peer(end, args);
    peers.push(p);
    return p;
  };

  beforeAll(async () => {
    link = await DelayLink.create({ tag: 'dlk', delayMs, subnet: 60 });
    server = new Peer(link.server, ['serve', link.server.addr]);
    ports = await server.next();
  }, 60_000);

  afterEach(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    peers = [];
    // A failed test leaves the link as the next one expects it.
    await link?.pass();
    await link?.setDelay(delayMs);
  });

  afterAll(async () => {
    await server?.stop();
    await link?.destroy();
  });

  it('a round trip takes 2 × delay and less than 2 × delay + margin (client clock and kernel RTT)', async () => {
    const ping = peer(link!.client, ['ping', link!.server.addr, String(ports.echo), '10']);
    const { localPort, rtts } = await ping.next<{ localPort: number; rtts: number[] }>();
    // The kernel's own estimate for this connection: rtt:<srtt>/<rttvar> and minrtt, in ms (µs resolution).
    const info = tcpInfo(link!.client, `( sport = :${localPort} )`);
    const srtt = Number(info.rtt!.split('/')[0]);
    const minrtt = Number(info.minrtt);

    expect(rtts).toHaveLength(10);
    for (const rtt of rtts) expect(rtt).toBeGreaterThanOrEqual(2 * delayMs);
    expect(median(rtts)).toBeLessThan(2 * delayMs + margin);
    expect(minrtt).toBeGreaterThanOrEqual(2 * delayMs);
    expect(minrtt).toBeLessThan(2 * delayMs + margin);
    expect(srtt).toBeGreaterThanOrEqual(2 * delayMs);
    expect(srtt).toBeLessThan(2 * delayMs + margin);
    ping.end();
  });

  it('setDelay() applies to the packets that enter from then on', async () => {
    const longer = 250;
    await link!.setDelay(longer);
    const ping = peer(link!.client, ['ping', link!.server.addr, String(ports.echo), '5']);
    const { rtts } = await ping.next<{ rtts: number[] }>();
    for (const rtt of rtts) expect(rtt).toBeGreaterThanOrEqual(2 * longer);
    expect(median(rtts)).toBeLessThan(2 * longer + margin);
    ping.end();
  });

  it('32 MiB cross complete and intact', async () => {
    const size = 32 * MiB;
    const sender = peer(link!.client, ['send', link!.server.addr, String(ports.sink), String(size)]);
    const { localPort } = await sender.next<{ localPort: number }>();
    const sent = await sender.next<SendReport>(90_000);
    const got = await server!.nextWhere<SinkReport>((r) => r.port === localPort);

    expect(sent.sent).toBe(size);
    expect(got.received).toBe(size);
    expect(got.sha256).toBe(sent.sha256);
  }, 120_000);

  it('after drop() nothing more arrives and the sender retransmits; after pass() the connection resumes and completes', async () => {
    const sender = peer(link!.client, ['send', link!.server.addr, String(ports.sink)]);
    const { localPort } = await sender.next<{ localPort: number }>();
    // The same connection from both sides: the client's port names it in either namespace.
    const senderInfo = (): Record<string, string> => tcpInfo(link!.client, `( sport = :${localPort} )`);
    const receiverInfo = (): Record<string, string> => tcpInfo(link!.server, `( dport = :${localPort} )`);
    // The server's end is established one way after the client's.
    await vi.waitFor(
      async () => {
        expect(await ssCount('established', `( dport = :${localPort} )`, link!.server)).toBeGreaterThan(0);
        expect(counter(receiverInfo(), 'bytes_received')).toBeGreaterThanOrEqual(1 * MiB);
      },
      { timeout: 30_000, interval: 100 },
    );

    await link!.drop();
    const rx0 = counter(receiverInfo(), 'bytes_received');
    const tx0 = senderInfo();
    const link0 = await link!.stats();
    // Long enough for the retransmission timer (about 2 × RTT here) to fire at least twice.
    await sleep(3000);
    const rx1 = counter(receiverInfo(), 'bytes_received');
    const tx1 = senderInfo();
    const link1 = await link!.stats();

    expect(rx1).toBe(rx0); // the receiver's kernel got nothing more
    expect(counter(tx1, 'bytes_acked')).toBe(counter(tx0, 'bytes_acked')); // nothing was acknowledged
    expect(counter(tx1, 'unacked')).toBeGreaterThan(0);
    expect(retransTotal(tx1)).toBeGreaterThan(retransTotal(tx0));
    expect(counter(tx1, 'bytes_retrans')).toBeGreaterThan(counter(tx0, 'bytes_retrans'));
    // What the ends sent meanwhile (the sender's retransmissions) reached the link and went no further.
    expect(link1.clientToServer).toBe(link0.clientToServer);
    expect(link1.serverToClient).toBe(link0.serverToClient);
    expect(link1.dropped).toBeGreaterThan(link0.dropped);

    await link!.pass();
    // The next retransmission (backed off, a few seconds at most here) gets through, and the stream goes on.
    await expect.poll(() => counter(receiverInfo(), 'bytes_received'), { timeout: 30_000, interval: 100 }).toBeGreaterThan(rx1 + 1 * MiB);
    expect(counter(senderInfo(), 'bytes_acked')).toBeGreaterThan(counter(tx1, 'bytes_acked'));

    sender.end();
    const sent = await sender.next<SendReport>();
    const got = await server!.nextWhere<SinkReport>((r) => r.port === localPort);
    expect(got.received).toBe(sent.sent);
    expect(got.sha256).toBe(sent.sha256);
  }, 90_000);

  it('destroy() ends the link process and deletes its namespaces and devices', async () => {
    const other = await DelayLink.create({ tag: 'dlx', delayMs: 10, subnet: 61 });
    const pid = other.pid!;
    const names = [other.client.name, other.server.name];
    const devices = (): string => execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    try {
      for (const end of [other.client, other.server]) {
        expect(execFileSync('ip', ['-n', end.name, '-o', 'addr', 'show', 'dev', end.dev], { encoding: 'utf8' })).toContain(`${end.addr}/24`);
      }
      process.kill(pid, 0); // running
    } finally {
      await other.destroy();
    }
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const name of names) expect(left).not.toContain(name);
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(devices()).not.toContain(`dl${process.pid}-`);
    await other.destroy(); // twice is harmless
  });
});
