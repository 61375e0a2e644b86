// RST-on-close against a peer that is not Node (a Python reader across a veth pair): the drain
// waits as long as the peer keeps acknowledging, gives up `drainTimeout` after it stopped (counted
// from end(), even while Node's own buffer is still full), and a close that gives up says so on the
// socket itself; destroy() keeps Node's meaning (destroyed at once), destroy(err) resets at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import { closeChannel, presets, tune, type CloseReport } from '../src/index.js';
import { linesByKey, runCommand } from './helpers/children.js';
import { canUse } from './helpers/env.js';
import { ssCount } from './helpers/netns.js';
import { VethPeer } from './helpers/veth.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

interface ReaderLine {
  port: number;
  received: number;
  sha256: string;
  end: 'eof' | 'reset';
}

interface WriterLine {
  localPort: number;
  elapsed: number;
  destroyedAtOnce: boolean;
  hadError: boolean;
  errored: string | null;
  endCallback: string;
  errors: string[];
  report: CloseReport | null;
}

describe.runIf(canUse('ip', 'ss', 'python3'))('the reset drain against a Python reader', () => {
  const veth = new VethPeer('rdr', 124);
  let ports: { slow: number; stall: number };
  /** What the reader saw of the connection from a port (bounded: 20 s). */
  let readerSaw: (localPort: number) => Promise<ReaderLine>;

  beforeAll(async () => {
    veth.create();
    const started = await veth.ns.start(fixture('drain-reader.py'), [veth.peerAddr]);
    ports = JSON.parse(started.ready).ports;
    readerSaw = linesByKey<ReaderLine>(started.child, (r) => r.port);
  }, 60_000);

  afterAll(async () => {
    await veth.destroy();
  });

  /** Sockets this test's namespace holds towards the reader in `state` (ss, not the code under test). */
  const ssTowards = (state: string, port: number): Promise<number> => ssCount(state, `dst ${veth.peerAddr}:${port}`);

  /** Runs the writer fixture in a process of its own in this namespace; resolves with its line and exit code. */
  async function writer(action: string, port: number, size: number, drainTimeout: number, listen: boolean): Promise<{ line: WriterLine; code: number | null }> {
    const { code, stdout, stderr } = await runCommand(
      process.execPath,
      [fixture('drain-writer.mjs'), veth.peerAddr, String(port), action, String(size), String(drainTimeout), listen ? 'listen' : 'nolisten'],
      { timeout: 60_000 },
    );
    const text = stdout.trim();
    if (!text) throw new Error(`drain-writer printed nothing (exit ${code}): ${stderr}`);
    return { line: JSON.parse(text.split('\n').pop()!), code: code ?? -1 };
  }

  it('a slow reader that keeps acknowledging gets every byte: 30 closes with a 300 ms drainTimeout, each needing ~0.6 s', async () => {
    const reports = new Map<net.Socket, CloseReport>();
    const onClose = (m: unknown): void => {
      const { socket, report } = m as { socket: net.Socket; report: CloseReport };
      reports.set(socket, report);
    };
    closeChannel.subscribe(onClose);
    try {
      const policy = presets.rstOnClose({ drainTimeout: 300 });
      const runs = await Promise.all(
        Array.from({ length: 30 }, async () => {
          const payload = randomBytes(256 * KiB);
          const socket = net.connect(ports.slow, veth.peerAddr);
          const errors: string[] = [];
          socket.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
          tune(socket, policy);
          await once(socket, 'connect');
          const localPort = socket.localPort!;
          const start = performance.now();
          socket.end(payload);
          await once(socket, 'close');
          return { socket, payload, localPort, errors, took: performance.now() - start };
        }),
      );
      let complete = 0;
      for (const r of runs) {
        const saw = await readerSaw(r.localPort);
        if (saw.received === r.payload.length && saw.sha256 === sha256(r.payload)) complete++;
        expect(reports.get(r.socket)).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
        expect(r.errors).toEqual([]);
      }
      const took = runs.map((r) => Math.round(r.took)).sort((a, b) => a - b);
      console.log(JSON.stringify({ slowAcknowledgingReader: { complete, of: runs.length, closeMs: { min: took[0], median: took[15], max: took[29] } } }));
      // Each close took longer than drainTimeout: the drain waited because the peer progressed.
      expect(took[0]).toBeGreaterThan(300);
      expect(complete).toBe(runs.length);
    } finally {
      closeChannel.unsubscribe(onClose);
    }
  }, 60_000);

  it.each([
    ['with an error listener', true],
    ['without one (the process is not crashed)', false],
  ])(
    'end(64 MiB) to a reader that stopped: given up drainTimeout after it stopped, and the socket says so — %s',
    async (_name, listen) => {
      const drainTimeout = 1000;
      const { line, code } = await writer('end', ports.stall, 64 * MiB, drainTimeout, listen);
      const saw = await readerSaw(line.localPort);
      console.log(JSON.stringify({ stalledReaderEnd64MiB: { listen, ...line, readerReceived: saw.received } }));
      expect(code).toBe(0);
      // The kernel queues fill within a few ms of end() and nothing moves after: the timeout then
      // runs out. A loaded machine adds timer lateness, never seconds.
      expect(line.elapsed).toBeGreaterThanOrEqual(drainTimeout - 100);
      expect(line.elapsed).toBeLessThan(drainTimeout + 1500);
      expect(line.report).toMatchObject({ method: 'rst', drained: false });
      expect(line.report!.bytesAtRisk).toBeGreaterThan(60 * MiB);
      expect(line).toMatchObject({ hadError: true, errored: 'ERR_SOCKTUNE_DRAIN_TIMEOUT', endCallback: 'ERR_SOCKTUNE_DRAIN_TIMEOUT' });
      expect(line.errors).toEqual(listen ? ['ERR_SOCKTUNE_DRAIN_TIMEOUT'] : []);
      // Nothing unaccounted for: the reader's bytes and the reported ones are all that was written.
      expect(saw.end).toBe('reset');
      expect(saw.received + line.report!.bytesAtRisk).toBe(64 * MiB);
    },
    60_000,
  );

  it('end() to a reader that stopped: what the reader got plus the bytes at risk is exactly what was written', async () => {
    const size = 2 * MiB;
    const payload = randomBytes(size);
    const socket = net.connect(ports.stall, veth.peerAddr);
    socket.on('error', () => {});
    tune(socket, presets.rstOnClose({ drainTimeout: 500 }));
    let report: CloseReport | undefined;
    const onClose = (m: unknown): void => {
      if ((m as { socket: net.Socket }).socket === socket) report = (m as { report: CloseReport }).report;
    };
    closeChannel.subscribe(onClose);
    try {
      await once(socket, 'connect');
      const localPort = socket.localPort!;
      socket.end(payload);
      await new Promise((resolve) => socket.once('close', resolve));
      const saw = await readerSaw(localPort);
      expect(report).toMatchObject({ method: 'rst', drained: false });
      expect(saw.end).toBe('reset');
      expect(saw.received + report!.bytesAtRisk).toBe(size);
      expect(saw.sha256).toBe(sha256(payload.subarray(0, saw.received)));
    } finally {
      closeChannel.unsubscribe(onClose);
    }
  }, 30_000);

  it("destroy() keeps Node's meaning: destroyed at once; the kernel queue still reaches the peer, then RST, no TIME_WAIT", async () => {
    const { line } = await writer('destroy', ports.slow, 256 * KiB, 5000, true);
    console.log(JSON.stringify({ destroyToSlowReader: line }));
    expect(line.destroyedAtOnce).toBe(true);
    expect(line.hadError).toBe(false);
    expect(line.errors).toEqual([]);
    expect(line.report).toMatchObject({ method: 'rst', drained: true, bytesAtRisk: 0 });
    expect(await ssTowards('time-wait', ports.slow)).toBe(0);
  }, 30_000);

  it('destroy(err) with bytes unacknowledged resets at once: no FIN, no FIN_WAIT or TIME_WAIT left, the bytes at risk reported', async () => {
    const before = { finWait: await ssTowards('fin-wait-1', ports.stall), timeWait: await ssTowards('time-wait', ports.stall) };
    const { line } = await writer('destroy-error', ports.stall, 4 * MiB, 5000, true);
    console.log(JSON.stringify({ destroyErrorToStalledReader: line }));
    expect(line.destroyedAtOnce).toBe(true);
    expect(line.elapsed).toBeLessThan(500);
    expect(line).toMatchObject({ hadError: true, errored: 'EAPP', errors: ['EAPP'] });
    expect(line.report).toMatchObject({ method: 'rst', drained: false });
    expect(line.report!.bytesAtRisk).toBeGreaterThan(0);
    // A FIN close would leave an orphan here delivering the queue (FIN_WAIT1), then TIME_WAIT.
    expect(await ssTowards('fin-wait-1', ports.stall)).toBe(before.finWait);
    expect(await ssTowards('time-wait', ports.stall)).toBe(before.timeWait);
  }, 30_000);
});
