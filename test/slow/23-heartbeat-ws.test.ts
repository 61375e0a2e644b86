// The application heartbeat with real `ws` clients: healthy clients that answer every ping are
// never closed, and a client that vanished (nftables drop in its namespace, no RST, no FIN) is
// closed within interval + timeout + scanInterval. "Data arrived after the ping" is decided by byte
// counters, never by the kernel's 4 ms last-receive timestamps.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer, type WebSocket } from 'ws';
import { presets, tuneServer, type GuardCloseEvent } from '../../src/index.js';
import { ask, stop } from '../helpers/children.js';
import { canUse } from '../helpers/env.js';
import { Netns } from '../helpers/netns.js';
import { VethPeer } from '../helpers/veth.js';
import { closeAll, track } from '../helpers/sockets.js';

const clientsFixture = fileURLToPath(new URL('../fixtures/ws-clients.mjs', import.meta.url));

afterEach(closeAll);

/**
 * An HTTP server with a ws server on it, tuned with a heartbeat whose ping is a WebSocket ping
 * frame. `ping(socket)` finds the WebSocket of the TCP socket through the upgrade request.
 */
async function wsServer(host: string, heartbeat: { interval: number; timeout: number }, scanInterval: number) {
  const server = track(http.createServer());
  const wss = new WebSocketServer({ server });
  const bySocket = new WeakMap<net.Socket, WebSocket>();
  wss.on('connection', (ws, req) => {
    bySocket.set(req.socket, ws);
    ws.on('error', () => {});
  });
  const ping = (socket: net.Socket) => bySocket.get(socket)?.ping();
  const guard = tuneServer(server, presets.gracefulHeartbeat({ scanInterval, heartbeat: { ...heartbeat, ping } }));
  const closed: GuardCloseEvent[] = [];
  guard.on('closed', (e) => closed.push(e));
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { server, wss, guard, closed, url: `ws://${host}:${port}/` };
}

describe('heartbeat with real ws clients', () => {
  const CLIENTS = 20;
  const heartbeat = { interval: 1000, timeout: 1500 };
  const scanInterval = 500;

  it('20 healthy clients that answer every ping: none closed in 20 s', async () => {
    const ns = new Netns('wshb').create();
    try {
      // The clients run in a process of their own on this namespace's loopback... of the test
      // process: loopback of the root (or test) namespace, where the server listens.
      const { server, wss, guard, closed, url } = await wsServer('127.0.0.1', heartbeat, scanInterval);
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, [clientsFixture, url, String(CLIENTS)], { stdio: ['pipe', 'pipe', 'inherit'] });
      try {
        const ready = await new Promise<string>((resolve, reject) => {
          createInterface({ input: child.stdout! }).once('line', resolve);
          child.once('exit', (code) => reject(new Error(`ws-clients exited with ${code}`)));
        });
        expect(JSON.parse(ready)).toEqual({ connected: CLIENTS });
        await sleep(20_000);
        const stats = (await ask(child, 'stats', 10_000)) as { open: number; closed: number; pings: number };
        console.log(`ws heartbeat, healthy: ${JSON.stringify({ clients: stats, guard: guard.stats() })}`);
        expect(closed.map((e) => e.reason)).toEqual([]);
        expect(stats).toMatchObject({ open: CLIENTS, closed: 0 });
        expect(wss.clients.size).toBe(CLIENTS);
        // Every client was pinged again and again: the heartbeat ran, and nobody was hurt by it.
        expect(stats.pings).toBeGreaterThanOrEqual(CLIENTS * 5);
        expect(guard.stats().closed.heartbeat).toBe(0);
      } finally {
        await stop(child, 'SIGKILL');
        for (const ws of wss.clients) ws.terminate();
        server.closeAllConnections();
      }
    } finally {
      await ns.destroy();
    }
  }, 40_000);

  it.runIf(canUse('ip', 'nft'))(
    'a client that vanished is closed within interval + timeout + scanInterval; the others stay',
    async () => {
      const peer = new VethPeer('wsv', 71).create();
      try {
        const { server, wss, guard, closed, url } = await wsServer(peer.hostAddr, heartbeat, scanInterval);
        // Two client processes in the peer namespace: both stay healthy until the namespace vanishes.
        const { child } = await peer.ns.start(clientsFixture, [url, '5']);
        await expect.poll(() => guard.stats().tracked, { timeout: 5000, interval: 20 }).toBe(5);
        await sleep(3000);
        expect(closed).toEqual([]);
        peer.vanish();
        const vanished = performance.now();
        const budget = heartbeat.interval + heartbeat.timeout + scanInterval;
        await expect.poll(() => closed.length, { timeout: budget + 2000, interval: 20 }).toBe(5);
        const took = performance.now() - vanished;
        console.log(`ws heartbeat, vanished: all 5 closed ${Math.round(took)} ms after the drop (budget ${budget} ms)`);
        expect(closed.every((e) => e.reason === 'heartbeat')).toBe(true);
        // Timers and scans are not exact on a loaded machine: a scan slice is a tick late at most.
        expect(took).toBeLessThanOrEqual(budget + scanInterval / 8 + 250);
        child.kill('SIGKILL');
        for (const ws of wss.clients) ws.terminate();
        server.closeAllConnections();
      } finally {
        await peer.destroy();
      }
    },
    40_000,
  );
});
