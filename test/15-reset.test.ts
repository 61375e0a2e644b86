// RST-on-close, scenarios 15–18 of testing.md: a safe reset reaches the peer as ECONNRESET after
// every byte, leaves no TIME_WAIT and counts one TcpOutRsts; a large write to a slow or stopped
// reader is either delivered in full or its bytes at risk are reported; it works on TLS sockets;
// and it keeps a client with a small port range from running out of ports.
//
// Counters and TIME_WAIT are read inside namespaces of this file's own (other files run in the
// root namespace at the same time): the side that closes runs there as a fixture, or talks only
// to an address no one else uses.
//
// A Linux/libuv fact these tests account for: the kernel keeps received bytes readable after an
// RST (they are read before the error), but when the RST lands while bytes are still unread, libuv
// (Node 20) reports POLLHUP after a short read as end-of-stream (libuv/libuv#2319), so such a
// reader sees 'end' instead of ECONNRESET. Where the peer reads everything before the RST (the
// request-response exchanges below) it sees ECONNRESET. The slow reader keeps reading (its work is
// what makes it slow): a Node 24+ reader that had pause()d when the RST lands loses the
// acknowledged bytes it had not read (README, RST-on-close), which no sender can prevent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash, randomBytes } from 'node:crypto';
import { closeChannel, presets, resetClose, tune, type CloseReport } from '../src/index.js';
import { ask, linesByKey } from './helpers/children.js';
import { canUse } from './helpers/env.js';
import { nstat, ssCount } from './helpers/netns.js';
import { VethPeer } from './helpers/veth.js';
import { until } from './helpers/wait.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const caPath = fixture('tls/cert.pem');
const key = readFileSync(fixture('tls/key.pem'));
const cert = readFileSync(caPath);
const MiB = 1024 * 1024;
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** What the peer saw of one connection: the payload bytes, their checksum, and how the stream ended. */
interface Seen {
  received: number;
  sha256: string;
  end: string | null;
  closed: Promise<void>;
}

/**
 * The peer of the closing side: reads a 4-byte length and the payload, answers one byte once all
 * of it arrived (so the closer has read everything and the peer has nothing unread when the close
 * comes), and records how the stream ended. Keyed by the closer's port.
 */
function witness(secure: boolean): { server: net.Server; seen: Map<number, Seen> } {
  const seen = new Map<number, Seen>();
  const onConnection = (socket: net.Socket): void => {
    const hash = createHash('sha256');
    let header = Buffer.alloc(0);
    let expected = -1;
    let received = 0;
    let done!: () => void;
    const entry: Seen = { received: 0, sha256: '', end: null, closed: new Promise<void>((r) => (done = r)) };
    seen.set(socket.remotePort!, entry);
    socket.on('data', (data: Buffer) => {
      let chunk = data;
      if (expected < 0) {
        header = Buffer.concat([header, chunk]);
        if (header.length < 4) return;
        expected = header.readUInt32BE(0);
        chunk = header.subarray(4);
      }
      received += chunk.length;
      hash.update(chunk);
      if (received === expected) socket.write('k');
    });
    socket.on('end', () => (entry.end ??= 'end'));
    socket.on('error', (err: NodeJS.ErrnoException) => (entry.end ??= err.code ?? err.message));
    socket.on('close', () => {
      entry.received = received;
      entry.sha256 = hash.digest('hex');
      done();
    });
  };
  const server = secure ? tls.createServer({ key, cert }, onConnection) : net.createServer(onConnection);
  return { server, seen };
}

interface Closed {
  localPort: number;
  sha256: string;
  errors: string[];
  hadError: boolean;
  report: CloseReport | null;
  reason: string | null;
  failed?: string;
}

describe.runIf(canUse('ip', 'ss', 'nstat'))('RST instead of FIN, seen from both ends', () => {
  // The closer runs in the peer namespace; the witness server is this process, at hostAddr.
  const veth = new VethPeer('rst', 15);
  const plain = witness(false);
  const secure = witness(true);
  let closeThere: (cmd: object) => Promise<Closed>;

  beforeAll(async () => {
    veth.create();
    for (const { server } of [plain, secure]) {
      server.listen(0, veth.hostAddr);
      await once(server, 'listening');
    }
    const { child } = await veth.ns.start(fixture('reset-closer.mjs'));
    closeThere = async (cmd) => {
      const answer = (await ask(child, JSON.stringify(cmd))) as Closed;
      expect(answer.failed).toBeUndefined();
      return answer;
    };
  }, 60_000);

  afterAll(async () => {
    await veth.destroy();
    for (const { server } of [plain, secure]) server.close();
  });

  /** Runs one close in the namespace and returns it with the counter deltas, TIME_WAIT and the peer's view. */
  async function close(cmd: object, secureServer = false) {
    const { server, seen } = secureServer ? secure : plain;
    const port = (server.address() as net.AddressInfo).port;
    const before = await nstat(veth.ns, 'TcpOutRsts', 'TcpExtTCPAbortOnData');
    const closed = await closeThere({ host: veth.hostAddr, port, bytes: 64 * 1024, ...cmd, ...(secureServer ? { tls: caPath } : {}) });
    const peer = seen.get(closed.localPort)!;
    await Promise.race([peer.closed, sleep(5000)]);
    const after = await nstat(veth.ns, 'TcpOutRsts', 'TcpExtTCPAbortOnData');
    return {
      closed,
      peer,
      outRsts: after.TcpOutRsts - before.TcpOutRsts,
      abortOnData: after.TcpExtTCPAbortOnData - before.TcpExtTCPAbortOnData,
      timeWait: await ssCount('time-wait', `sport = :${closed.localPort}`, veth.ns),
    };
  }

  // Reset arms: ECONNRESET at the peer after every byte, one RST from a zero-linger close
  // (TcpExtTCPAbortOnData is the kernel's count of exactly that), no TIME_WAIT, no local error.
  it.each([
    ['resetClose(socket)', { close: 'resetClose' }],
    ['rstOnClose: socket.end()', { policy: 'always', close: 'end' }],
    ['rstOnClose: socket.destroy()', { policy: 'always', close: 'destroy' }],
    ["rstOnClose({ reset: 'timeout' }): 'timeout' then destroy()", { policy: 'timeout', close: 'timeout' }],
    [
      "rstOnClose({ reset: 'timeout' }): 'timeout' then destroy(), the application's listener added before tune()",
      { policy: 'timeout', close: 'timeout', listenerFirst: true },
    ],
  ])('%s: peer ECONNRESET after all data, TcpOutRsts +1, no TIME_WAIT, no local error', async (_name, cmd) => {
    const r = await close(cmd);
    expect(r.peer.end).toBe('ECONNRESET');
    expect(r.peer.received).toBe(64 * 1024);
    expect(r.peer.sha256).toBe(r.closed.sha256);
    expect(r.closed.errors).toEqual([]);
    expect(r.closed.hadError).toBe(false);
    expect(r.closed.report).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
    expect([r.outRsts, r.abortOnData]).toEqual([1, 1]);
    expect(r.timeWait).toBe(0);
  });

  // FIN arms: Node's close, and reset 'timeout' (nginx's reset_timedout_connection) for a close
  // that did not time out.
  it.each([
    ['no policy: socket.end()', { close: 'end' }],
    ["rstOnClose({ reset: 'timeout' }): socket.end()", { policy: 'timeout', close: 'end' }],
  ])('%s: FIN, the peer sees the end, TcpOutRsts +0, TIME_WAIT on the closing side', async (_name, cmd) => {
    const r = await close(cmd);
    expect(r.peer.end).toBe('end');
    expect(r.peer.sha256).toBe(r.closed.sha256);
    expect(r.closed.errors).toEqual([]);
    expect([r.outRsts, r.abortOnData]).toEqual([0, 0]);
    expect(r.timeWait).toBe(1);
  });

  describe('tls.TLSSocket', () => {
    it("Node's resetAndDestroy() throws on it", async () => {
      const { server } = secure;
      const client = tls.connect({ port: (server.address() as net.AddressInfo).port, host: veth.hostAddr, ca: cert, servername: 'localhost' });
      client.on('error', () => {});
      await once(client, 'secureConnect');
      try {
        expect(() => client.resetAndDestroy()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_HANDLE_TYPE' }));
      } finally {
        client.destroy();
      }
    });

    it.each([
      ['resetClose(tlsSocket)', { close: 'resetClose' }],
      ['rstOnClose: tlsSocket.end()', { policy: 'always', close: 'end' }],
    ])('%s: the peer gets all data then ECONNRESET, TcpOutRsts +1, no TIME_WAIT', async (_name, cmd) => {
      const r = await close({ ...cmd, bytes: MiB }, true);
      expect(r.peer.received).toBe(MiB);
      expect(r.peer.sha256).toBe(r.closed.sha256);
      expect(r.peer.end).toBe('ECONNRESET');
      expect(r.closed.errors).toEqual([]);
      expect(r.closed.report).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
      expect([r.outRsts, r.abortOnData]).toEqual([1, 1]);
      expect(r.timeWait).toBe(0);
    });
  });
});

describe.runIf(canUse('ip', 'ss'))('large writes, reset-closed (scenario 16) and 10,000 reset closes', () => {
  // This process writes and closes; the readers and the checksum server live in the namespace.
  const veth = new VethPeer('rsr', 115);
  let readerPorts: Record<'slow' | 'stall' | 'late', number>;
  /** The reader's line for a connection, by the writer's port, once the connection has closed (bounded: 20 s). */
  let readerSaw: (localPort: number) => Promise<Record<string, any>>;
  const reports: Array<{ socket: net.Socket; report: CloseReport }> = [];
  const onClose = (msg: unknown): void => {
    reports.push(msg as { socket: net.Socket; report: CloseReport });
  };
  const open: net.Socket[] = [];

  beforeAll(async () => {
    veth.create();
    const { child, ready } = await veth.ns.start(fixture('reset-reader.mjs'), [veth.peerAddr, '2', '1500']);
    readerPorts = JSON.parse(ready).ports;
    readerSaw = linesByKey<Record<string, any>>(child, (seen) => seen.remotePort);
    closeChannel.subscribe(onClose);
  }, 60_000);

  afterAll(async () => {
    closeChannel.unsubscribe(onClose);
    for (const s of open) s.destroy();
    await veth.destroy();
  });

  /**
   * Connects to a reader and writes 8 MiB of random bytes in 1 MiB writes (so some wait in Node's
   * buffer, one is with libuv and the kernel has the rest); resolves once they are handed to the socket.
   */
  async function writeTo(mode: keyof typeof readerPorts, policy?: ReturnType<typeof presets.rstOnClose>) {
    const socket = net.connect(readerPorts[mode], veth.peerAddr);
    open.push(socket);
    const errors: string[] = [];
    socket.on('error', (err: NodeJS.ErrnoException) => errors.push(err.code ?? err.message));
    if (policy) tune(socket, policy);
    await once(socket, 'connect');
    const payload = randomBytes(8 * MiB);
    for (let at = 0; at < payload.length; at += MiB) socket.write(payload.subarray(at, at + MiB));
    return { socket, payload, errors, closed: once(socket, 'close') };
  }

  it('slow reader, resetClose with a long drainTimeout: drained, every byte arrives (sha256)', async () => {
    const { socket, payload, errors, closed } = await writeTo('slow');
    const localPort = socket.localPort!;
    // The close starts with most of the 8 MiB not even in the kernel yet.
    expect(socket.writableLength).toBeGreaterThan(0);
    const report = await resetClose(socket, { drainTimeout: 30_000 });
    await closed;
    const seen = await readerSaw(localPort);
    console.log(JSON.stringify({ slowReader: { report, peerEnd: seen.end } }));
    expect(report).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
    expect(seen.received).toBe(payload.length);
    expect(seen.sha256).toBe(sha256(payload));
    // Acknowledged but unread when the RST landed: libuv may report the end as EOF (see the top).
    expect(['ECONNRESET', 'end']).toContain(seen.end);
    expect(errors).toEqual([]);
  }, 60_000);

  it('slow reader, rstOnClose end() with a long drainTimeout: the same, reported on socktune:close', async () => {
    const { socket, payload, errors, closed } = await writeTo('slow', presets.rstOnClose({ drainTimeout: 30_000 }));
    const localPort = socket.localPort!;
    socket.end();
    await closed;
    const seen = await readerSaw(localPort);
    const report = reports.find((r) => r.socket === socket)?.report;
    expect(report).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
    expect(seen.received).toBe(payload.length);
    expect(seen.sha256).toBe(sha256(payload));
    expect(errors).toEqual([]);
  }, 60_000);

  it('reader that stopped, short drainTimeout: reset anyway, bytesAtRisk accounts for every byte the peer did not get', async () => {
    const { socket, payload, errors, closed } = await writeTo('stall');
    const localPort = socket.localPort!;
    const report = await resetClose(socket, { drainTimeout: 500 });
    await closed;
    const seen = await readerSaw(localPort);
    console.log(
      JSON.stringify({
        stoppedReader: { report, received: seen.received, queuedAtReset: seen.queuedAtReset, stateAtReset: seen.stateAtReset, peerEnd: seen.end },
      }),
    );
    expect(report).toMatchObject({ method: 'rst', drained: false });
    expect(report.bytesAtRisk).toBeGreaterThan(0);
    // Linux keeps what it acknowledged readable after the RST: the reader, resuming only once
    // its kernel had closed the connection, still gets all of it...
    expect(seen.stateAtReset).toBe('CLOSE');
    expect(seen.received).toBe(seen.queuedAtReset);
    // ...as an exact prefix of what was written, and what it did not get is what was reported.
    expect(seen.sha256).toBe(sha256(payload.subarray(0, seen.received)));
    expect(seen.received).toBeLessThan(payload.length);
    expect(seen.received + report.bytesAtRisk).toBe(payload.length);
    // The reader is told nothing of the loss: Node sees a plain end here (libuv, see the top), so
    // the writer's report is what says the bytes did not arrive.
    expect(['ECONNRESET', 'end']).toContain(seen.end);
    expect(errors).toEqual([]);
  }, 60_000);

  it("reader that stopped for a while, onDrainTimeout 'fin': a normal end, and the peer eventually gets everything", async () => {
    const { socket, payload, errors, closed } = await writeTo('late');
    const localPort = socket.localPort!;
    const report = await resetClose(socket, { drainTimeout: 500, onDrainTimeout: 'fin' });
    expect(report).toMatchObject({ method: 'fin', drained: false });
    expect(report.bytesAtRisk).toBeGreaterThan(0);
    await closed;
    const seen = await readerSaw(localPort);
    console.log(JSON.stringify({ finAfterDrainTimeout: { report, queuedAtStart: seen.queuedAtStart, received: seen.received, peerEnd: seen.end } }));
    // The bytes reported still in delivery are exactly those the reader's kernel had not taken in.
    expect(report.bytesAtRisk).toBe(payload.length - seen.queuedAtStart);
    expect(seen.received).toBe(payload.length);
    expect(seen.sha256).toBe(sha256(payload));
    expect(seen.end).toBe('end');
    expect(errors).toEqual([]);
  }, 60_000);

  it('10,000 reset closes under the policy: every payload arrives (checksums), 0 TIME_WAIT on the closing side', async () => {
    const { child, ready } = await veth.ns.start(fixture('reset-verify.mjs'), [veth.peerAddr, '4']);
    const ports = JSON.parse(ready).ports as number[];
    const policy = presets.rstOnClose();
    const total = 10_000;
    const errors: string[] = [];
    const mine = new Set<net.Socket>();
    let next = 0;
    const start = performance.now();
    const one = (i: number) =>
      new Promise<void>((resolve) => {
        const payload = randomBytes(1024 + Math.floor(Math.random() * 7 * 1024));
        const head = Buffer.alloc(36);
        head.writeUInt32BE(payload.length, 0);
        createHash('sha256').update(payload).digest().copy(head, 4);
        const socket = net.connect(ports[i % ports.length], veth.peerAddr);
        mine.add(socket);
        tune(socket, policy);
        socket.on('error', (err: NodeJS.ErrnoException) => errors.push(err.code ?? err.message));
        socket.on('close', () => resolve());
        socket.end(Buffer.concat([head, payload]));
      });
    // 200 at a time, bounded in time by the test's own timeout.
    await Promise.all(
      Array.from({ length: 200 }, async () => {
        while (next < total) await one(next++);
      }),
    );
    const ms = Math.round(performance.now() - start);
    // The server's tally, once it has counted every close (or after 10 s: judged below).
    let counted: Record<string, any> = {};
    await until(async () => (counted = await ask(child, 'report')).closed >= total, 10_000, 100);
    const methods: Record<string, number> = {};
    for (const { socket, report } of reports) if (mine.has(socket)) methods[report.method] = (methods[report.method] ?? 0) + 1;
    const twRoot = await ssCount('time-wait', `dst ${veth.peerAddr} and ( ${ports.map((p) => `dport = :${p}`).join(' or ')} )`);
    console.log(
      JSON.stringify({
        resetCloses: { total, ms, server: counted, methods, timeWaitClosingSide: twRoot, timeWaitServerSide: await ssCount('time-wait', veth.ns) },
      }),
    );
    expect(errors).toEqual([]);
    expect(counted).toMatchObject({ closed: total, matched: total, mismatched: 0, short: 0 });
    expect(methods).toEqual({ rst: total });
    expect(twRoot).toBe(0);
  }, 120_000);
});

describe.runIf(canUse('ip', 'ss'))('a 1000-port client with tcp_tw_reuse=0 (scenario 18)', () => {
  // Two client namespaces (one per arm, so one arm's TIME_WAIT cannot affect the other), each
  // with 1000 ephemeral ports; this process serves both over their veths.
  const plainPeer = new VethPeer('rsp', 18);
  const policyPeer = new VethPeer('rsq', 118);
  const servers: net.Server[] = [];
  const total = 3000;

  beforeAll(() => {
    for (const peer of [plainPeer, policyPeer]) {
      peer.create();
      peer.ns.sysctl('net.ipv4.ip_local_port_range', '40000 40999');
      peer.ns.sysctl('net.ipv4.tcp_tw_reuse', '0');
    }
  });

  afterAll(async () => {
    for (const s of servers) s.close();
    await Promise.all([plainPeer.destroy(), policyPeer.destroy()]);
  });

  /**
   * Two answering server ports on `host`. A TIME_WAIT blocks one four-tuple, so 2 ports × 1000
   * local ports is room for 2000 plain closes out of 3000; a third port would make room for all
   * of them, and a single port slows connect() once most even ports are taken (testing.md).
   */
  async function serve(host: string): Promise<number[]> {
    const ports: number[] = [];
    for (let i = 0; i < 2; i++) {
      const server = net.createServer((s) => {
        s.on('error', () => {});
        s.on('data', () => s.write('a'));
      });
      servers.push(server);
      server.listen(0, host);
      await once(server, 'listening');
      ports.push((server.address() as net.AddressInfo).port);
    }
    return ports;
  }

  it(`${total} connect+request+close: plain close runs out of ports (EADDRNOTAVAIL); the RST-on-close policy completes every one, 0 TIME_WAIT`, async () => {
    const churn = async (peer: VethPeer, mode: 'plain' | 'policy') => {
      const ports = await serve(peer.hostAddr);
      const { ready } = await peer.ns.start(fixture('reset-churn.mjs'), [peer.hostAddr, ports.join(','), String(total), '20', mode]);
      return { ...JSON.parse(ready), timeWait: await ssCount('time-wait', peer.ns) };
    };
    const [plainRun, policyRun] = await Promise.all([churn(plainPeer, 'plain'), churn(policyPeer, 'policy')]);
    console.log(JSON.stringify({ portExhaustion: { plain: plainRun, policy: policyRun } }));
    // Plain close: every local port ends up in TIME_WAIT towards both server ports, and the
    // connections past that fail with EADDRNOTAVAIL (and with nothing else).
    expect(plainRun.failed.EADDRNOTAVAIL).toBeGreaterThan(0);
    expect(Object.keys(plainRun.failed)).toEqual(['EADDRNOTAVAIL']);
    expect(plainRun.completed + plainRun.failed.EADDRNOTAVAIL).toBe(total);
    expect(plainRun.timeWait).toBeGreaterThan(0);
    expect(policyRun.failed).toEqual({});
    expect(policyRun).toMatchObject({ completed: total, methods: { rst: total }, timeWait: 0 });
  }, 120_000);
});
