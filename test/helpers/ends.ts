// The matrix of connection ends that test/48 and test/slow/63 check against tcpdump. The
// application (test/fixtures/ends-app.mjs, under socktune/register) is in this namespace at
// 10.213.<subnet>.1; its peer (test/fixtures/ends-peer.mjs, plain Node) across a veth pair at .2.
// tcpdump on this side of the pair records every FIN and RST; for each connection (by its ports)
// the first of them, its sender and its flag are the witness of who closed first.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { consumerProject, cleanEnv } from './register.js';
import { VethPeer } from './veth.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

/** Each case: who acts, what the application does, what socktune must say, and what tcpdump must show first. */
export const matrix = [
  // Connections the application opened.
  { direction: 'opened', mode: 'peer-fin', initiator: 'peer-fin', cause: 'peer', wire: 'peer FIN' },
  { direction: 'opened', mode: 'peer-rst', initiator: 'peer-rst', cause: 'ECONNRESET', wire: 'peer RST' },
  { direction: 'opened', mode: 'local-end', initiator: 'local-end', cause: 'application', wire: 'local FIN' },
  { direction: 'opened', mode: 'local-destroy', initiator: 'local-destroy', cause: 'application', wire: 'local FIN' },
  { direction: 'opened', mode: 'local-rst', initiator: 'local-rst', cause: 'application', wire: 'local RST' },
  { direction: 'opened', mode: 'unread-data', initiator: 'local-rst', cause: 'unread-data', wire: 'local RST' },
  // Connections its server accepted (the peer's first byte says what the server does).
  { direction: 'accepted', mode: 'F', initiator: 'peer-fin', cause: 'peer', wire: 'peer FIN' },
  { direction: 'accepted', mode: 'R', initiator: 'peer-rst', cause: 'ECONNRESET', wire: 'peer RST' },
  { direction: 'accepted', mode: 'E', initiator: 'local-end', cause: 'application', wire: 'local FIN' },
  { direction: 'accepted', mode: 'D', initiator: 'local-destroy', cause: 'application', wire: 'local FIN' },
  { direction: 'accepted', mode: 'X', initiator: 'local-rst', cause: 'application', wire: 'local RST' },
] as const;

/**
 * The same closes under a policy that resets (gracefulHeartbeat+rstOnClose): socktune turns the
 * application's end() and destroy() into RST once the peer has acknowledged everything (its own
 * report says so, just after the destroy), and keeps FIN where the peer closed first.
 */
export const resetMatrix = [
  { direction: 'opened', mode: 'peer-fin', initiator: 'peer-fin', cause: 'peer', wire: 'peer FIN' },
  { direction: 'opened', mode: 'local-end', initiator: 'local-rst', cause: 'application', wire: 'local RST' },
  { direction: 'opened', mode: 'local-destroy', initiator: 'local-rst', cause: 'application', wire: 'local RST' },
] as const;

type Case = { direction: string; mode: string; initiator: string; cause: string; wire: string };

export interface Attributed {
  lp: number;
  rp: number;
  direction: string;
  initiator: string;
  cause: string;
  lifetime: number;
  bytesRead: number;
  bytesWritten: number;
  origin?: string;
}

export interface CaseResult {
  case: Case;
  closes: number;
  /** Attributed as the case says and as tcpdump saw it. */
  right: number;
  wrong: Array<{ row: Attributed | undefined; wire: string | undefined }>;
}

class LineReader {
  lines: Array<Record<string, unknown>> = [];
  waiters: Array<() => void> = [];
  constructor(child: ChildProcess) {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async until(test: (l: Record<string, unknown>) => boolean, within = 120_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + within;
    for (;;) {
      const i = this.lines.findIndex(test);
      if (i >= 0) return this.lines.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error('no such line in time');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

/** Runs every case `n` times (each in its own batch, `concurrency` at once) and judges each connection. */
export async function runMatrix(
  tag: string,
  subnet: number,
  n: number,
  concurrency: number,
  env: Record<string, string> = {},
  cases: readonly Case[] = matrix,
): Promise<{ results: CaseResult[]; rows: Attributed[] }> {
  const peer = new VethPeer(tag, subnet).create();
  const children: ChildProcess[] = [];
  const pcap = `/tmp/socktune-ends-${process.pid}-${subnet}.pcap`;
  try {
    const p = spawn('ip', ['netns', 'exec', peer.ns.name, process.execPath, fixture('ends-peer.mjs'), peer.peerAddr, '7000'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(p);
    const peerLines = new LineReader(p);
    await peerLines.until((l) => l.ready === true, 30_000);
    const dump = spawn(
      'tcpdump',
      ['-i', peer.hostIf, '-nn', '-U', '--immediate-mode', '-s', '96', '-B', '16384', '-w', pcap, 'tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.push(dump);
    let dumpLog = '';
    dump.stderr!.setEncoding('utf8').on('data', (d: string) => (dumpLog += d));
    for (let i = 0; i < 200 && !dumpLog.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 25));
    const app = spawn(process.execPath, ['--import', 'socktune/register', fixture('ends-app.mjs'), peer.hostAddr, '7001'], {
      cwd: consumerProject(),
      env: cleanEnv({ SOCKTUNE_POLICY: 'gracefulHeartbeat', ...env }),
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(app);
    const appLines = new LineReader(app);
    await appLines.until((l) => l.ready === true, 30_000);
    for (const c of cases) {
      if (c.direction === 'opened') {
        app.stdin!.write(`open ${peer.peerAddr} 7000 ${c.mode} ${n} ${concurrency}\n`);
        await appLines.until((l) => l.opened === true);
      } else {
        p.stdin!.write(`connect ${peer.hostAddr} 7001 ${c.mode} ${n} ${concurrency}\n`);
        await peerLines.until((l) => l.done === true);
      }
    }
    // Every end published (the app's server side closes may trail the peer's).
    await new Promise((r) => setTimeout(r, 300));
    app.stdin!.write('flush\n');
    await appLines.until((l) => l.flushed === true);
    const rows = appLines.lines.filter((l) => typeof l.initiator === 'string') as unknown as Attributed[];
    await new Promise((r) => setTimeout(r, 300));
    dump.kill('SIGINT');
    await once(dump, 'exit');
    const wire = firstCloses(peer.hostAddr);
    // Each case is the only one with its direction, initiator and cause: n rows each, and every
    // row's first FIN or RST on the wire is the one its initiator names.
    const wireOf: Record<string, string> = {
      'peer-fin': 'peer FIN',
      'peer-rst': 'peer RST',
      'local-end': 'local FIN',
      'local-destroy': 'local FIN',
      'local-rst': 'local RST',
    };
    const results: CaseResult[] = cases.map((c) => ({ case: c, closes: 0, right: 0, wrong: [] }));
    const unmatched: CaseResult = { case: cases[0], closes: 0, right: 0, wrong: [] };
    // A port pair is used again once its connection is gone: the i-th row of a pair is its i-th connection.
    const seenOfPair = new Map<string, number>();
    for (const r of rows) {
      const key = `${r.lp} ${r.rp}`;
      const i = seenOfPair.get(key) ?? 0;
      seenOfPair.set(key, i + 1);
      const w = wire.get(key)?.[i];
      const target = results.find((x) => x.case.direction === r.direction && x.case.initiator === r.initiator && x.case.cause === r.cause) ?? unmatched;
      target.closes++;
      if (target !== unmatched && w === wireOf[r.initiator] && w === target.case.wire) target.right++;
      else target.wrong.push({ row: r, wire: w });
    }
    if (unmatched.wrong.length > 0) results.push(unmatched);
    return { results, rows };
    /**
     * For each port pair (this side's first), each connection in turn: its first FIN or RST. A
     * connection starts at its SYN-ACK after a SYN; what comes between a SYN and its SYN-ACK (a
     * pair used again while the peer held it in TIME_WAIT: its challenge ACK and our RST) belongs
     * to no connection, and a retransmitted SYN-ACK starts none.
     */
    function firstCloses(local: string): Map<string, Array<string | undefined>> {
      const text = spawnText('tcpdump', ['-r', pcap, '-nn', '-tt']);
      const pairs = new Map<string, { connections: Array<string | undefined>; opening: boolean }>();
      for (const line of text.split('\n')) {
        const m = /IP (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]+)\]/.exec(line);
        if (!m) continue;
        const [, src, sport, , dport, flags] = m;
        const fromUs = src === local;
        const key = fromUs ? `${sport} ${dport}` : `${dport} ${sport}`;
        let pair = pairs.get(key);
        if (pair === undefined) pairs.set(key, (pair = { connections: [], opening: false }));
        if (flags === 'S') {
          pair.opening = true;
        } else if (flags === 'S.') {
          if (pair.opening) pair.connections.push(undefined);
          pair.opening = false;
        } else if (!pair.opening && pair.connections.length > 0) {
          const last = pair.connections.length - 1;
          if (pair.connections[last] === undefined && /[FR]/.test(flags))
            pair.connections[last] = `${fromUs ? 'local' : 'peer'} ${flags.includes('R') ? 'RST' : 'FIN'}`;
        }
      }
      return new Map([...pairs].map(([key, p]) => [key, p.connections]));
    }
  } finally {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await once(c, 'exit');
      }
    }
    await peer.destroy();
    if (process.env.KEEP_PCAP === undefined) rmSync(pcap, { force: true });
  }
}

function spawnText(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', maxBuffer: 512 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] });
}
