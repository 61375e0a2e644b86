// Scenarios 9 and 10 of testing.md: a peer that silently vanishes (nftables drops inside its
// namespace: no RST, no ICMP). With the graceful-heartbeat policy the kernel declares it dead
// (ETIMEDOUT) within the keepalive budget when the connection is idle, and within the user
// timeout when data is in flight; without the policy nothing happens for a minute; and keepalive
// alone never fires while data is unacknowledged (design rule 7).
//
// One vanish serves every arm: all connections are made and exercised, the peer vanishes, and the
// arms are observed side by side, so the 60 s control costs 60 s once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { configure, keepAliveBudget, presets, readOptions, sendQueue, tcpInfo, tcpState, tune } from '../../src/index.js';
import { canUse } from '../helpers/env.js';
import { VethPeer } from '../helpers/veth.js';
import { until } from '../helpers/wait.js';

const echoServer = fileURLToPath(new URL('../fixtures/deadpeer-server.mjs', import.meta.url));

/** Keepalive idle I, interval V, count C (ms): small, so a vanished idle peer is found in I + C·V = 5 s. */
const keepAlive = { idle: 2000, interval: 1000, count: 3 } as const;
const budget = keepAliveBudget(keepAlive);
/** Keepalive timers fire on jiffies: the spec allows 1 s beyond the budget. */
const slack = 1000;
const userTimeout = 3000;
const idleConnections = 100;
const controlWindow = 60_000;

interface Watched {
  socket: net.Socket;
  /** performance.now() of the last packet received before the vanish, as the kernel recorded it. */
  lastPacket: number;
  /** performance.now() just before the chunk written after the vanish (in-flight arms). */
  sentAt: number;
  error?: NodeJS.ErrnoException;
  errorAt: number;
  closedAt: number;
}

describe.runIf(canUse('ip', 'nft'))('a peer that vanishes', () => {
  const peer = new VethPeer('dead', 16);
  const all: Watched[] = [];
  let idle: Watched[] = [];
  let control: Watched[] = [];
  let inFlightUser: Watched[] = [];
  let inFlightKeepAliveOnly: Watched[] = [];
  let vanishedAt = 0;
  const heartbeat = presets.gracefulHeartbeat({ keepAlive });
  const withUserTimeout = presets.gracefulHeartbeat({ keepAlive, userTimeout });
  // userTimeout 0 is the kernel's "no user timeout": keepalive is the only dead-peer detector.
  const keepAliveOnly = presets.gracefulHeartbeat({ keepAlive, userTimeout: 0 });

  /** Connects (tuned while connecting, when a policy is given) and exchanges one echo, so each connection has just heard from the peer. */
  async function open(port: number, policy?: typeof heartbeat): Promise<Watched> {
    const socket = net.connect(port, peer.peerAddr);
    const w: Watched = { socket, lastPacket: 0, sentAt: 0, errorAt: 0, closedAt: 0 };
    all.push(w);
    socket.on('error', (err) => {
      w.error = err;
      w.errorAt = performance.now();
    });
    socket.on('close', () => (w.closedAt = performance.now()));
    if (policy) expect(tune(socket, policy)).toBe('deferred');
    await once(socket, 'connect');
    socket.write('ping');
    await once(socket, 'data');
    return w;
  }

  /** Resolves when every one of `arm` has closed, or at `deadline` (performance.now()). */
  const settled = (arm: Watched[], deadline: number): Promise<boolean> => until(() => arm.every((w) => w.closedAt !== 0), deadline - performance.now());

  beforeAll(async () => {
    peer.create();
    const { ready } = await peer.ns.start(echoServer, [peer.peerAddr]);
    const { port } = JSON.parse(ready) as { port: number };
    idle = await Promise.all(Array.from({ length: idleConnections }, () => open(port, heartbeat)));
    control = await Promise.all(Array.from({ length: 3 }, () => open(port)));
    inFlightUser = await Promise.all(Array.from({ length: 2 }, () => open(port, withUserTimeout)));
    inFlightKeepAliveOnly = await Promise.all(Array.from({ length: 2 }, () => open(port, keepAliveOnly)));
    // The last packet each connection received, as the kernel's keepalive clock sees it (the later
    // of the last data and the last ACK), read just before the vanish.
    for (const w of all) {
      const info = tcpInfo(w.socket);
      w.lastPacket = performance.now() - Math.min(info.lastDataReceived, info.lastAckReceived);
    }
    peer.vanish();
    vanishedAt = performance.now();
    // Data in flight: written after the vanish, so it is never acknowledged.
    for (const w of [...inFlightUser, ...inFlightKeepAliveOnly]) {
      w.sentAt = performance.now();
      w.socket.write(Buffer.alloc(1024, 1));
    }
  }, 60_000);

  afterAll(async () => {
    for (const w of all) {
      if (w.socket.destroyed) continue;
      // A FIN to the vanished peer would leave an orphan retrying in the root namespace: reset.
      try {
        configure(w.socket, { linger: 0 });
      } catch {
        // the kernel has closed it already
      }
      w.socket.destroy();
    }
    await peer.destroy();
  });

  it('the policy is what the kernel holds: keepalive I/V/C and user timeout I + C·V', () => {
    expect(readOptions(idle[0].socket)).toMatchObject({ keepAlive, userTimeout: budget });
    expect(readOptions(inFlightUser[0].socket)).toMatchObject({ keepAlive, userTimeout });
    expect(readOptions(inFlightKeepAliveOnly[0].socket)).toMatchObject({ keepAlive, userTimeout: 0 });
    expect(readOptions(control[0].socket).keepAlive).toBe(false);
  });

  it(`idle, ${idleConnections} connections at once: every one 'error' ETIMEDOUT within I + C·V + 1 s of its last packet`, async () => {
    await settled(idle, vanishedAt + budget + slack + 2000);
    const after = idle.map((w) => w.errorAt - w.lastPacket);
    console.log(JSON.stringify({ idleDetection: { n: idle.length, budget, minMs: Math.round(Math.min(...after)), maxMs: Math.round(Math.max(...after)) } }));
    for (const w of idle) {
      expect(w.error).toMatchObject({ code: 'ETIMEDOUT', syscall: 'read' });
      const elapsed = w.errorAt - w.lastPacket;
      expect(elapsed).toBeLessThanOrEqual(budget + slack);
      // Not before the probes had their chance: it is keepalive that decided.
      expect(elapsed).toBeGreaterThanOrEqual(budget - slack / 2);
    }
  }, 30_000);

  it('data in flight, user timeout U: ETIMEDOUT within U + 1 s of the write', async () => {
    await settled(inFlightUser, vanishedAt + userTimeout + slack + 2000);
    for (const w of inFlightUser) {
      expect(w.error).toMatchObject({ code: 'ETIMEDOUT' });
      const elapsed = w.errorAt - w.sentAt;
      console.log(JSON.stringify({ inFlightUserTimeout: { userTimeout, elapsedMs: Math.round(elapsed) } }));
      expect(elapsed).toBeLessThanOrEqual(userTimeout + slack);
      expect(elapsed).toBeGreaterThanOrEqual(userTimeout - slack / 2);
    }
  }, 30_000);

  it('data in flight, keepalive alone: nothing within U + 1 s, nor within I + C·V + 1 s (no probe is sent while data is unacknowledged)', async () => {
    const until = Math.max(...inFlightKeepAliveOnly.map((w) => w.sentAt)) + Math.max(userTimeout, budget) + slack;
    await sleep(Math.max(0, until - performance.now()));
    for (const w of inFlightKeepAliveOnly) {
      expect(w.error).toBeUndefined();
      expect(w.closedAt).toBe(0);
      expect(tcpState(w.socket)).toBe('ESTABLISHED');
      expect(sendQueue(w.socket).unacked).toBe(1024);
    }
  }, 30_000);

  it(
    'without the policy (and keepalive alone with data in flight): nothing within 60 s',
    async () => {
      await sleep(Math.max(0, vanishedAt + controlWindow - performance.now()));
      const watched = [...control, ...inFlightKeepAliveOnly];
      for (const w of watched) {
        expect(w.error).toBeUndefined();
        expect(w.closedAt).toBe(0);
        expect(tcpState(w.socket)).toBe('ESTABLISHED');
      }
      console.log(JSON.stringify({ control: { connections: watched.length, windowMs: Math.round(performance.now() - vanishedAt), errors: 0 } }));
    },
    controlWindow + 10_000,
  );
});
