// TCP_INFO, queue sizes and SO_COOKIE agree with what `ss` reports for the same connection.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { receiveQueue, sendQueue, socketCookie, tcpInfo } from '../src/index.js';
import { closeAll, listen, pair, track } from './helpers/sockets.js';
import { canUse } from './helpers/env.js';

afterEach(closeAll);

/** The `ss` line for this connection, seen from `socket`'s side — the external witness. */
function ss(args: string[], socket: net.Socket): string {
  const filter = `sport = :${socket.localPort} and dport = :${socket.remotePort}`;
  return execFileSync('ss', ['-Htn', ...args, 'state', 'all', filter], { encoding: 'utf8' }).trim();
}

describe('tcpInfo', () => {
  it('reports ESTABLISHED with a measured round-trip time', async () => {
    const { client } = await pair();
    const info = tcpInfo(client);
    expect(info.state).toBe('ESTABLISHED');
    expect(info.rtt).toBeGreaterThan(0);
    expect(info.rtt).toBeLessThan(1000);
    expect(info.pmtu).toBeGreaterThan(0);
    expect(info.sndCwnd).toBeGreaterThan(0);
    expect(info.unacked).toBe(0);
  });

  it.runIf(canUse('ss'))('names CLOSE_WAIT and FIN_WAIT2 as ss sees them after a half-close', async () => {
    const server = await listen('127.0.0.1');
    const accepted = once(server, 'connection');
    const client = track(net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true }));
    await once(client, 'connect');
    const [peer] = (await accepted) as [net.Socket];
    peer.end();
    await once(client, 'end');
    await sleep(20);
    expect(tcpInfo(client).state).toBe('CLOSE_WAIT');
    expect(tcpInfo(peer).state).toBe('FIN_WAIT2');
    expect(ss([], client)).toMatch(/^CLOSE-WAIT/);
    expect(ss([], peer)).toMatch(/^FIN-WAIT-2/);
  });
});

describe('sendQueue and receiveQueue', () => {
  it('count bytes held by the kernel when the reader is paused, and drain to 0', async () => {
    const { client, peer } = await pair();
    peer.pause();
    const chunk = Buffer.alloc(1 << 20, 7);
    for (let i = 0; i < 8; i++) client.write(chunk);
    await sleep(100);
    const q = sendQueue(client);
    expect(q.unacked + q.unsent).toBeGreaterThan(0);
    expect(receiveQueue(peer)).toBeGreaterThan(0);
    const ssLine = ss([], client);
    const sendQ = Number(ssLine.split(/\s+/)[2]);
    expect(sendQ).toBe(q.unacked + q.unsent); // ss's Send-Q is SIOCOUTQ
    let received = 0;
    peer.on('data', (d: Buffer) => (received += d.length));
    peer.resume();
    while (received < 8 << 20) await sleep(10);
    await sleep(20);
    expect(sendQueue(client)).toEqual({ unacked: 0, unsent: 0 });
    expect(receiveQueue(peer)).toBe(0);
  });
});

describe.runIf(canUse('ss'))('socketCookie', () => {
  it('is the cookie ss -e prints as sk:<hex>', async () => {
    const { client, peer } = await pair();
    const a = socketCookie(client);
    const b = socketCookie(peer);
    expect(a).not.toBe(b);
    expect(ss(['-e'], client)).toContain(` sk:${a.toString(16)} `);
  });
});
