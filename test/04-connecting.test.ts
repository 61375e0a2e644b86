// Scenario 6: options given while connecting (hostname and IP) are in effect after 'connect';
// tls.TLSSocket works on both ends; a kernel refusal at connect time destroys the socket with it.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { configure, readOptions, tcpInfo, sendQueue } from '../src/index.js';
import { closeAll, listen, track } from './helpers/sockets.js';

afterEach(closeAll);

const wanted = { keepAlive: { idle: 20_000, interval: 3_000, count: 5 }, userTimeout: 25_000 } as const;
const held = { keepAlive: wanted.keepAlive, userTimeout: wanted.userTimeout };

describe('options given while connecting', () => {
  it.each(['127.0.0.1', 'localhost'])('connect to %s: deferred, then held after connect', async (host) => {
    const server = await listen('127.0.0.1');
    const client = track(net.connect({ port: (server.address() as net.AddressInfo).port, host, family: 4 }));
    expect(client.connecting).toBe(true);
    expect(configure(client, wanted)).toBe('deferred');
    await once(client, 'connect');
    expect(readOptions(client)).toMatchObject(held);
  });

  it('several deferred calls apply in order', async () => {
    const server = await listen('127.0.0.1');
    const client = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    configure(client, { userTimeout: 1000 });
    configure(client, { userTimeout: 2000, noDelay: false });
    await once(client, 'connect');
    expect(readOptions(client)).toMatchObject({ userTimeout: 2000, noDelay: false });
  });

  it('invalid options are refused at once, not at connect', async () => {
    const server = await listen('127.0.0.1');
    const client = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    expect(() => configure(client, { userTimeout: -5 })).toThrow(RangeError);
    await once(client, 'connect');
    expect(readOptions(client).userTimeout).toBe(0);
  });

  it('views that need a connection say so while connecting', async () => {
    const server = await listen('127.0.0.1');
    const client = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    for (const op of [() => readOptions(client), () => tcpInfo(client), () => sendQueue(client)]) {
      expect(op).toThrow(expect.objectContaining({ code: 'ERR_SOCKTUNE_NOT_CONNECTED' }));
    }
    await once(client, 'connect');
  });
});

describe('tls.TLSSocket', () => {
  const key = readFileSync(new URL('./fixtures/tls/key.pem', import.meta.url));
  const cert = readFileSync(new URL('./fixtures/tls/cert.pem', import.meta.url));

  it('client (configured while connecting) and server ends hold their options', async () => {
    const server = track(tls.createServer({ key, cert }));
    const accepted = new Promise<tls.TLSSocket>((resolve) => server.on('secureConnection', (s) => resolve(track(s))));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = track(tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', ca: cert, servername: 'localhost' }));
    expect(configure(client, wanted)).toBe('deferred');
    await once(client, 'secureConnect');
    expect(readOptions(client)).toMatchObject(held);
    expect(tcpInfo(client).state).toBe('ESTABLISHED');

    const peer = await accepted;
    expect(readOptions(peer).userTimeout).toBe(0);
    configure(peer, { userTimeout: 7000, linger: 0 });
    expect(readOptions(peer)).toMatchObject({ userTimeout: 7000, linger: 0 });
    // The options sit on the TCP socket under the TLS layer: the data still flows.
    const echoed = once(client, 'data');
    peer.write('over tls');
    expect(String((await echoed)[0])).toBe('over tls');
  });
});

describe('listening servers', () => {
  it('configure on a net.Server sets the listening socket (accepted sockets inherit keepalive on Linux)', async () => {
    const server = await listen('127.0.0.1');
    configure(server, { keepAlive: { idle: 33_000, interval: 4_000, count: 6 } });
    expect(readOptions(server).keepAlive).toEqual({ idle: 33_000, interval: 4_000, count: 6 });
    const accepted = once(server, 'connection');
    track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    const [peer] = (await accepted) as [net.Socket];
    expect(readOptions(peer).keepAlive).toEqual({ idle: 33_000, interval: 4_000, count: 6 });
  });
});
