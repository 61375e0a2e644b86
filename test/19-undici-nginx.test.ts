// undici (and fetch) under a policy: createConnector tunes every socket before undici sees it and
// the policy survives undici's setKeepAlive(true, 60000) and the user's own (scenario 7);
// createDispatcher's pool evicts idle connections before the server closes them. Scenario 20: a
// real nginx with `keepalive_timeout 4s` (no Keep-Alive header): undici's own Agent fails requests
// sent at 4 s ± 10 ms, the policy dispatcher never does.
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { Agent, fetch as undiciFetch, request, type Dispatcher } from 'undici';
import { createConnector, createDispatcher, presets, readOptions } from '../src/index.js';
import { pools, undiciConnections } from './helpers/pools.js';
import { rawServer, tlsServer } from './helpers/http.js';

const keepAlive = { idle: 7000, interval: 2000, count: 4 };
const policy = presets.gracefulHeartbeat({ keepAlive });
const held = { keepAlive, userTimeout: 15_000 };

const keep = pools();
/** Sockets undici connects, in order. */
const connected = undiciConnections();

/** A GET through `dispatcher`; resolves with the body. */
async function get(url: string, dispatcher: Dispatcher): Promise<string> {
  const { body } = await request(url, { dispatcher });
  return body.text();
}

describe('createConnector / createDispatcher: the policy on every socket', () => {
  it('in place when undici receives the socket (connector callback) and on the connected channel', async () => {
    const { url } = await rawServer();
    const connector = createConnector(policy);
    let inCallback: unknown;
    const dispatcher = keep(
      new Agent({
        connect: (options, callback) =>
          connector(options, (err, socket) => {
            if (socket) inCallback = readOptions(socket as net.Socket);
            callback(err as null, socket as net.Socket);
          }),
      }),
    );
    expect(await get(url, dispatcher)).toBe('ok');
    expect(inCallback).toMatchObject(held);
    expect(connected).toHaveLength(1);
    expect(readOptions(connected[0])).toMatchObject(held);
    expect(connector.guard.stats().tracked).toBe(1);
  });

  it('scenario 7: user setKeepAlive(true, 30000), then 10 requests on the pooled socket: the kernel holds the policy after each', async () => {
    const { url } = await rawServer();
    // One connection per origin: a request that arrives while undici still counts the previous
    // one as running would otherwise open a second connection.
    const dispatcher = keep(createDispatcher(policy, { connections: 1 }));
    expect(await get(url, dispatcher)).toBe('ok');
    const [socket] = connected;
    socket.setKeepAlive(true, 30_000);
    expect(readOptions(socket)).toMatchObject(held);
    for (let i = 0; i < 10; i++) {
      expect(await get(url, dispatcher)).toBe('ok');
      expect(connected.length).toBe(1);
      expect(connected[0]).toBe(socket);
      expect(readOptions(socket)).toMatchObject(held);
      if (i % 3 === 0) socket.setKeepAlive(true, 30_000 + i * 1000);
    }
    expect(dispatcher.guard.stats().tracked).toBe(1);
  });

  it("control: undici's own connector leaves 60 s / 1 s / 10 probes", async () => {
    const { url } = await rawServer();
    const dispatcher = keep(new Agent());
    await get(url, dispatcher);
    expect(readOptions(connected[0]).keepAlive).toEqual({ idle: 60_000, interval: 1000, count: 10 });
  });

  it("TLS through undici's buildConnector: tuned on TCP connect, in place after the handshake", async () => {
    const { port } = await tlsServer();
    const dispatcher = keep(createDispatcher(policy, { connect: { rejectUnauthorized: false } }));
    expect(await get(`https://127.0.0.1:${port}/`, dispatcher)).toBe('ok');
    expect(readOptions(connected[0])).toMatchObject(held);
  });

  it("fetch: undici's fetch and Node's global fetch both take the dispatcher", async () => {
    const { url } = await rawServer();
    const dispatcher = keep(createDispatcher(policy));
    expect(await (await undiciFetch(url, { dispatcher })).text()).toBe('ok');
    const viaGlobal = await fetch(url, { dispatcher } as RequestInit);
    expect(await viaGlobal.text()).toBe('ok');
    expect(connected.length).toBeGreaterThan(0);
    for (const socket of connected) if (!socket.destroyed) expect(readOptions(socket)).toMatchObject(held);
  });

  it('refuses pool timeouts that bypass the policy over TCP, and bad options (Unix-domain pools: test 29)', () => {
    expect(() => createDispatcher(policy, { keepAliveTimeout: 1000 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => createDispatcher(policy, { keepAliveTimeoutThreshold: 1000 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => createConnector(policy, 5 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => createConnector({ keepAlive: { idle: 0, interval: 1000, count: 3 } })).toThrow(RangeError);
  });
});

describe('createDispatcher: idle eviction', () => {
  const cases = [
    { name: 'no hint: closed after poolIdleTimeout (1.5 s)', header: '', overrides: { poolIdleTimeout: 1500 }, within: [1450, 1950] },
    {
      name: "Keep-Alive: timeout=2, margin 500 ms: closed at 1.5 s, before the server's 2 s",
      header: 'Keep-Alive: timeout=2\r\n',
      overrides: { poolIdleMargin: 500 },
      within: [1450, 1950],
    },
  ];

  it.each(cases)('$name', async ({ header, overrides, within }) => {
    const { url } = await rawServer(header);
    const dispatcher = keep(createDispatcher(presets.gracefulHeartbeat({ keepAlive, ...overrides })));
    await get(url, dispatcher);
    const start = performance.now();
    const [socket] = connected;
    // undici closes it with an InformationalError ('socket idle timeout'): wait for 'close' only.
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
    const elapsed = performance.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(within[0]);
    expect(elapsed).toBeLessThan(within[1]);
  });

  it("a hint not above the margin (timeout=2, default margin 2 s, undici's own threshold): the connection is not reused", async () => {
    const { url } = await rawServer('Keep-Alive: timeout=2\r\n');
    const dispatcher = keep(createDispatcher(policy));
    await get(url, dispatcher);
    await get(url, dispatcher);
    expect(connected).toHaveLength(2);
  });
});
