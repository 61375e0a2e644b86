// Policies as data (defaults, composition, validation) and their application to one socket and to
// a server's accepted connections, read back from the kernel.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { Guard, closeChannel, compose, configure, guardOf, presets, readOptions, tune, tuneServer, type PolicyOverrides } from '../src/index.js';
import { closeAll, listen, pair, track } from './helpers/sockets.js';
import { catchError } from './helpers/errors.js';

afterEach(closeAll);

describe('presets', () => {
  it('graceful heartbeat: a minute to notice a dead peer, deadlines of a minute or less', () => {
    const p = presets.gracefulHeartbeat();
    expect(p).toMatchObject({
      name: 'graceful-heartbeat',
      keepAlive: { idle: 30_000, interval: 10_000, count: 3 },
      userTimeout: 60_000,
      halfCloseTimeout: 30_000,
      finWaitTimeout: 30_000,
      idleTimeout: false,
      heartbeat: false,
      reset: false,
    });
    expect(Object.isFrozen(p)).toBe(true);
    // Below the shortest common middlebox idle timeout (Azure LB, 4 minutes).
    expect(p.keepAlive && p.keepAlive.idle).toBeLessThan(240_000);
  });

  it('the user timeout follows the keepalive budget unless given', () => {
    expect(presets.gracefulHeartbeat({ keepAlive: { idle: 2000, interval: 1000, count: 3 } }).userTimeout).toBe(5000);
    expect(presets.gracefulHeartbeat({ keepAlive: { count: 5 } }).userTimeout).toBe(80_000);
    expect(presets.gracefulHeartbeat({ userTimeout: 7000 }).userTimeout).toBe(7000);
  });

  it('rst-on-close: reset always, bounded drain, reset past it', () => {
    expect(presets.rstOnClose()).toMatchObject({ name: 'rst-on-close', reset: 'always', drainTimeout: 5000, onDrainTimeout: 'reset' });
    expect(presets.rstOnClose({ reset: 'timeout' }).reset).toBe('timeout');
  });

  it('compose keeps the fields each part was built with', () => {
    const both = presets.gracefulHeartbeat(presets.rstOnClose({ drainTimeout: 1000 }));
    expect(both).toMatchObject({ name: 'graceful-heartbeat+rst-on-close', reset: 'always', drainTimeout: 1000, halfCloseTimeout: 30_000, userTimeout: 60_000 });
    const other = compose(presets.rstOnClose(), presets.gracefulHeartbeat());
    expect(other).toMatchObject({ reset: 'always', halfCloseTimeout: 30_000 });
  });

  const bad: Array<[string, PolicyOverrides | unknown, string]> = [
    ['unknown field', { idleTimout: 5 }, 'ERR_INVALID_ARG_VALUE'],
    ['keepalive count out of range', { keepAlive: { count: 128 } }, 'ERR_OUT_OF_RANGE'],
    ['fractional timeout', { halfCloseTimeout: 1.5 }, 'ERR_OUT_OF_RANGE'],
    ['string timeout', { idleTimeout: '5' }, 'ERR_INVALID_ARG_TYPE'],
    ['zero deadline', { finWaitTimeout: 0 }, 'ERR_OUT_OF_RANGE'],
    ['bad reset', { reset: 'sometimes' }, 'ERR_INVALID_ARG_VALUE'],
    ['bad drain action', { onDrainTimeout: 'drop' }, 'ERR_INVALID_ARG_VALUE'],
    ['heartbeat without ping', { heartbeat: { interval: 1000, timeout: 1000 } }, 'ERR_INVALID_ARG_TYPE'],
    ['keepalive true', { keepAlive: true }, 'ERR_INVALID_ARG_VALUE'],
    ['scan too often', { scanInterval: 1 }, 'ERR_OUT_OF_RANGE'],
  ];
  it.each(bad)('rejects %s where the policy is built', (_name, overrides, code) => {
    expect((catchError(() => presets.gracefulHeartbeat(overrides as PolicyOverrides)) as Error & { code: string }).code).toBe(code);
  });
});

const policy = presets.gracefulHeartbeat({ keepAlive: { idle: 11_000, interval: 4_000, count: 5 }, noDelay: true });
const expected = { keepAlive: { idle: 11_000, interval: 4_000, count: 5 }, userTimeout: 31_000, noDelay: true };

// Node's setKeepAlive(true, d) writes idle d, interval 1 s, count 10: a budget of d + 10 s. Where
// that budget stays, the user timeout follows it (Linux's keepalive waits out a user timeout).
const nodeKeepAlive = (delay: number) => ({ keepAlive: { idle: delay, interval: 1000, count: 10 }, userTimeout: delay + 10_000, noDelay: true });

function held(socket: net.Socket): unknown {
  const o = readOptions(socket);
  return { keepAlive: o.keepAlive, userTimeout: o.userTimeout, noDelay: o.noDelay };
}

describe('tune', () => {
  it('applies to a connected socket now', async () => {
    const { client } = await pair();
    expect(held(client)).not.toEqual(expected);
    expect(tune(client, policy)).toBe('applied');
    expect(held(client)).toEqual(expected);
  });

  it.each([
    [60_000, expected],
    [1000, nodeKeepAlive(1000)],
  ])('applies to a connecting socket on connect, after Node applies its own setKeepAlive(true, %i): the shorter budget stays', async (delay, want) => {
    const server = await listen();
    const client = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    client.setKeepAlive(true, delay); // Node defers this to connect too
    expect(tune(client, policy)).toBe('deferred');
    await once(client, 'connect');
    expect(held(client)).toEqual(want);
  });

  it("Node's later setKeepAlive calls put the policy back, unless what they set is the shorter budget", async () => {
    const { client } = await pair();
    tune(client, policy);
    // 30 s + 10 × 1 s = 40 s is longer than the policy's 11 s + 5 × 4 s = 31 s; 1 s and 5 s are shorter.
    for (const [delay, want] of [
      [30_000, expected],
      [1000, nodeKeepAlive(1000)],
      [30_000, expected],
      [5000, nodeKeepAlive(5000)],
    ] as const) {
      client.setKeepAlive(true, delay);
      expect(held(client), `setKeepAlive(true, ${delay})`).toEqual(want);
    }
  });

  it('keeps a shorter non-zero user timeout the socket has, and sets the policy over a longer one', async () => {
    const { client } = await pair();
    configure(client, { userTimeout: 20_000 });
    tune(client, policy);
    expect(readOptions(client).userTimeout).toBe(20_000);
    const other = (await pair()).client;
    configure(other, { userTimeout: 45_000 });
    tune(other, policy);
    expect(readOptions(other).userTimeout).toBe(31_000);
  });

  it('follows the socket when it connects again: options, guard and close behaviour on every connection', async () => {
    const server = await listen();
    const port = (server.address() as net.AddressInfo).port;
    const client = track(new net.Socket());
    client.connect(port, '127.0.0.1');
    const guard = new Guard(compose(policy, presets.rstOnClose()));
    tune(client, guard.policy, guard);
    for (let i = 0; i < 3; i++) {
      if (i > 0) client.connect(port, '127.0.0.1');
      await once(client, 'connect');
      expect(held(client), `connection ${i + 1}`).toEqual(expected);
      expect(guardOf(client), `connection ${i + 1}`).toBe(guard);
      // The close of each connection is the policy's: a reset, whose report is published.
      const closed = new Promise<string>((resolve) => {
        const onClose = (message: unknown) => {
          if ((message as { socket?: unknown }).socket !== client) return;
          closeChannel.unsubscribe(onClose);
          resolve((message as { report: { method: string } }).report.method);
        };
        closeChannel.subscribe(onClose);
      });
      client.end();
      expect(await closed).toBe('rst');
      await once(client, 'close');
    }
  });

  it('takes overrides as well as a policy, and rejects servers', async () => {
    const { client, server } = await pair();
    tune(client, { userTimeout: 9000 });
    expect(readOptions(client).userTimeout).toBe(9000);
    expect((catchError(() => tune(server as unknown as net.Socket, policy)) as Error & { code: string }).code).toBe('ERR_SOCKTUNE_NOT_TCP');
  });
});

describe('tuneServer', () => {
  it.each([
    [60_000, expected],
    [1000, nodeKeepAlive(1000)],
  ])("applies to every accepted connection; the server's own keepAlive option (%i ms) stays where it is the shorter budget", async (delay, want) => {
    const server = track(net.createServer({ keepAlive: true, keepAliveInitialDelay: delay, noDelay: false }));
    const guard = tuneServer(server, policy);
    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(track(s)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    for (let i = 0; i < 3; i++) {
      const c = track(net.connect(port, '127.0.0.1'));
      await once(c, 'connect');
    }
    while (accepted.length < 3) await once(server, 'connection');
    for (const s of accepted) expect(held(s)).toEqual(want);
    expect(guard.stats()).toMatchObject({ tracked: 3, seen: 3 });
  });
});

describe('close under rst-on-close, seen from the peer', () => {
  it('end() delivers everything, then the peer reads ECONNRESET; the local side has no error', async () => {
    const { client, peer } = await pair();
    tune(client, presets.rstOnClose());
    let received = 0;
    peer.on('data', (d) => (received += d.length));
    // A peer that still has acknowledged bytes unread when the RST lands may be told 'end' by
    // libuv instead (libuv/libuv#2319; test/15-reset.test.ts): both are the end of this stream.
    const peerEnd = new Promise<string>((resolve) => {
      peer.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      peer.once('end', () => resolve('end'));
    });
    let localError: Error | undefined;
    client.on('error', (e) => (localError = e));
    // The local 'close' may come before the peer's end (it does on a slow or emulated CPU):
    // listen for it from the start.
    const closed = once(client, 'close');
    let ended = 'not called';
    client.write(Buffer.alloc(256 * 1024, 1));
    client.end(Buffer.alloc(1024, 2), (e?: Error | null) => (ended = e ? String(e) : 'ok'));
    expect(['ECONNRESET', 'end']).toContain(await peerEnd);
    expect(received).toBe(257 * 1024);
    await closed;
    expect(localError).toBeUndefined();
    // end()'s callback runs, as for any end that delivered everything.
    expect(ended).toBe('ok');
  });

  it('a passive close (the peer ended first) keeps FIN', async () => {
    const { client, peer } = await pair();
    tune(client, presets.rstOnClose());
    const peerEnd = once(peer.resume(), 'end');
    const clientClose = once(client.resume(), 'close');
    let peerError: Error | undefined;
    peer.on('error', (e) => (peerError = e));
    peer.end();
    await peerEnd; // the client answered with FIN: allowHalfOpen=false ends it, and the policy kept FIN
    await clientClose;
    expect(peerError).toBeUndefined();
  });
});
