// A live peer that stops reading is not a dead peer (backpressure is legitimate: a paused
// download, a slow consumer, a proxy waiting on its own client). Linux applies TCP_USER_TIMEOUT
// to a closed receive window even while the peer answers every window probe, so a policy's user
// timeout would cut such a peer off; the guard holds the kernel's deadline off while the window is
// closed and judges the peer by its answers to the probes. And the FIN-wait deadline does not
// count while the bytes before our FIN are still being delivered to a peer that answers.
// The reader is a real process in a namespace of this file's own, over a veth pair; the server is
// this process, under the policy (tuneServer) or with the same kernel options alone (control).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { configure, presets, tuneServer, type Guard } from '../../src/index.js';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';

const reader = fileURLToPath(new URL('../fixtures/stalled-reader.mjs', import.meta.url));
const MiB = 1024 * 1024;
const keepAlive = { idle: 2000, interval: 1000, count: 3 };
/** User timeout 5 s: the keepalive budget, as gracefulHeartbeat derives it. */
const policy = presets.gracefulHeartbeat({ keepAlive, finWaitTimeout: 3000 });

interface Outcome {
  /** The server's socket error, if any (ETIMEDOUT when the kernel gave up on the reader). */
  serverError: string | null;
  /** What the reader got and how its stream ended. */
  reader: { received: number; error: string | null };
}

describe.runIf(canUse('ip', 'nft'))('a live peer that stops reading', () => {
  const peer = new VethPeer('stl', 128);
  beforeAll(() => void peer.create());
  afterAll(() => peer.destroy());

  /**
   * Serves `total` bytes to a reader that pauses `pauseMs` first, then ends (our FIN follows the
   * bytes: FIN_WAIT1 while they are delivered); with the policy (`guarded`) or its kernel options alone.
   */
  async function serve(guarded: boolean, total: number, pauseMs: number): Promise<Outcome & { guard?: Guard }> {
    const server = net.createServer();
    let guard: Guard | undefined;
    if (guarded) guard = tuneServer(server, policy);
    else server.on('connection', (s) => configure(s, { keepAlive, userTimeout: 5000 }));
    server.listen(0, peer.hostAddr);
    await once(server, 'listening');
    const served = new Promise<string | null>((resolve) => {
      server.once('connection', (s: net.Socket) => {
        let error: string | null = null;
        s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
        s.on('close', () => resolve(error));
        const chunk = Buffer.alloc(MiB, 7);
        let sent = 0;
        const pump = (): void => {
          while (sent < total) {
            sent += chunk.length;
            if (!s.write(chunk)) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      });
    });
    const child = peer.ns.start(reader, [peer.hostAddr, String((server.address() as net.AddressInfo).port), String(pauseMs)]);
    const { child: proc } = await child;
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d));
    const [serverError] = await Promise.all([served, once(proc, 'exit')]);
    server.close();
    const last = out.trim().split('\n').pop()!;
    return { serverError, reader: JSON.parse(last) as Outcome['reader'], guard };
  }

  it('control: the kernel options alone (user timeout 5 s) cut off a reader that pauses 8 s while 96 MiB are written (server ETIMEDOUT)', async () => {
    const r = await serve(false, 96 * MiB, 8000);
    console.log('stalled reader, kernel options alone:', JSON.stringify({ serverError: r.serverError, reader: r.reader }));
    expect(r.serverError).toBe('ETIMEDOUT');
    expect(r.reader.received).toBeLessThan(96 * MiB);
  });

  it('under the policy the same reader gets all 96 MiB, the server sees no error, and the guard closed nothing (the FIN-wait deadline of 3 s waited too)', async () => {
    const r = await serve(true, 96 * MiB, 8000);
    console.log('stalled reader, policy:', JSON.stringify({ serverError: r.serverError, reader: r.reader, closed: r.guard!.stats().closed }));
    expect(r.serverError).toBeNull();
    expect(r.reader).toEqual({ received: 96 * MiB, error: null });
    expect(Object.values(r.guard!.stats().closed).every((n) => n === 0)).toBe(true);
  });

  it('a reply that fits in the kernel is ended at once (FIN_WAIT1, the FIN behind 2 MiB the reader has not taken): the FIN-wait deadline (3 s) waits for a reader that pauses 8 s', async () => {
    const r = await serve(true, 2 * MiB, 8000);
    console.log('stalled reader, FIN_WAIT1:', JSON.stringify({ serverError: r.serverError, reader: r.reader, closed: r.guard!.stats().closed }));
    expect(r.serverError).toBeNull();
    expect(r.reader).toEqual({ received: 2 * MiB, error: null });
    expect(r.guard!.stats().closed['fin-wait']).toBe(0);
  });

  it('a stalled reader that then vanishes is declared dead within the user timeout (5 s) of its last answer, + 2 s', async () => {
    const server = net.createServer();
    const guard = tuneServer(server, policy);
    server.listen(0, peer.hostAddr);
    await once(server, 'listening');
    const outcome = new Promise<{ error: string | null; at: number }>((resolve) => {
      server.once('connection', (s: net.Socket) => {
        let error: string | null = null;
        s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
        s.on('close', () => resolve({ error, at: performance.now() }));
        s.write(Buffer.alloc(8 * MiB, 7));
      });
    });
    const { child } = await peer.ns.start(reader, [peer.hostAddr, String((server.address() as net.AddressInfo).port), '600000']);
    try {
      // The window is closed and probed; the guard holds the kernel's deadline off meanwhile.
      await new Promise((r) => setTimeout(r, 7000));
      const vanished = performance.now();
      peer.vanish();
      const { error, at } = await outcome;
      console.log('stalled then vanished:', JSON.stringify({ error, noticedAfterMs: Math.round(at - vanished), closed: guard.stats().closed }));
      expect(error).toBe('ETIMEDOUT');
      expect(at - vanished).toBeLessThanOrEqual(5000 + 2000);
      expect(guard.stats().closed.dead).toBe(1);
    } finally {
      peer.restore();
      child.kill('SIGKILL');
      server.close();
    }
  });
});
