// The connection guard: connections the application never closes (idle, silent after a ping,
// half-closed by the peer, waiting for the peer's FIN) are closed on their deadlines, through the
// policy, with typed errors, events and statistics. The kernel is the witness: `ss` for states,
// /proc/<pid>/fd and /proc/net/sockstat for what the server holds.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Guard, closeChannel, keepAliveBudget, presets, readOptions, tcpState, tuneServer, type GuardCloseEvent, type IdleEvent } from '../src/index.js';
import { ask } from './helpers/children.js';
import { canUse } from './helpers/env.js';
import { Netns, ssCount } from './helpers/netns.js';
import { closeAll, listen, track } from './helpers/sockets.js';
import { until } from './helpers/wait.js';

const serverFixture = fileURLToPath(new URL('./fixtures/guard-server.mjs', import.meta.url));
const clientsFixture = fileURLToPath(new URL('./fixtures/guard-clients.mjs', import.meta.url));

// Scans this often in the tests: deadlines are then met within a tenth of a second of their value.
const SCAN = 100;
// The slack every deadline gets, from testing.md ("within the deadline + 1 s").
const SLACK = 1000;

afterEach(closeAll);

/** A listening server (closed in afterEach) and a promise of its first accepted socket. */
async function serve(opts: net.ServerOpts = {}, onConnection: (s: net.Socket) => void = (s) => s.resume()) {
  const server = await listen('127.0.0.1', opts);
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  server.on('connection', onConnection);
  return { server, accepted, port: (server.address() as net.AddressInfo).port };
}

/** A client (destroyed in afterEach) that has connected; `opts` as for net.connect. */
async function connect(port: number, opts: Partial<net.NetConnectOpts> = {}): Promise<net.Socket> {
  const client = track(net.connect({ port, host: '127.0.0.1', ...opts } as net.NetConnectOpts));
  await once(client, 'connect');
  return client;
}

/** How the peer sees the connection end first: 'end' (FIN), an error code (RST: 'ECONNRESET'), or 'open' at close. */
function endOf(socket: net.Socket): Promise<string> {
  return new Promise<string>((resolve) => {
    socket.once('end', () => resolve('end'));
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    socket.once('close', () => resolve('open'));
  });
}

describe('tuneServer(server, presets.gracefulHeartbeat())', () => {
  it('turns the guard on with deadlines of a minute or less, and tracks every accepted connection', async () => {
    const { server, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    expect(guard).toBeInstanceOf(Guard);
    const p = guard.policy;
    expect(p).toMatchObject({
      halfCloseTimeout: 30_000,
      finWaitTimeout: 30_000,
      scanInterval: 5000,
      idleTimeout: false,
      readerIdleTimeout: false,
      writerIdleTimeout: false,
      heartbeat: false,
    });
    // A deadline is met within one scan after it passes: still a minute or less.
    for (const deadline of [
      (p.halfCloseTimeout as number) + p.scanInterval,
      (p.finWaitTimeout as number) + p.scanInterval,
      p.userTimeout!,
      p.keepAlive ? keepAliveBudget(p.keepAlive) : 0,
    ]) {
      expect(deadline).toBeGreaterThan(0);
      expect(deadline).toBeLessThanOrEqual(60_000);
    }

    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(s));
    for (let i = 0; i < 3; i++) await connect(port);
    await expect.poll(() => accepted.length, { timeout: 2000 }).toBe(3);
    expect(guard.stats()).toMatchObject({ tracked: 3, seen: 3 });
    expect(guard.scanNow().states).toEqual({ ESTABLISHED: 3 });
    // Tuned as well as tracked: the kernel holds the policy.
    expect(readOptions(accepted[0])).toMatchObject({ keepAlive: { idle: 30_000, interval: 10_000, count: 3 }, userTimeout: 60_000 });

    accepted[0].destroy();
    await once(accepted[0], 'close');
    expect(guard.stats()).toMatchObject({ tracked: 2, seen: 3 });
    expect(Object.values(guard.stats().closed).every((n) => n === 0)).toBe(true);
  });

  it('stats(): tracked connections by kernel state', async () => {
    const { server, port } = await serve({ allowHalfOpen: true });
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(s));
    await connect(port); // stays ESTABLISHED
    const ended = await connect(port);
    ended.end(); // the server never ends: CLOSE_WAIT
    const waiting = await connect(port, { allowHalfOpen: true });
    await expect.poll(() => accepted.length, { timeout: 2000 }).toBe(3);
    // The server ends, the peer never does: FIN_WAIT2.
    const toWaiting = accepted.find((s) => s.remotePort === waiting.localPort)!;
    const finished = once(toWaiting, 'finish');
    const peerEnded = once(waiting, 'end');
    waiting.resume();
    toWaiting.end();
    await Promise.all([finished, peerEnded]);
    await expect.poll(() => guard.scanNow().states, { timeout: 2000 }).toMatchObject({ CLOSE_WAIT: 1, FIN_WAIT2: 1 });
    expect(guard.stats()).toMatchObject({ tracked: 3, seen: 3, states: { ESTABLISHED: 1, CLOSE_WAIT: 1, FIN_WAIT2: 1 } });
  });

  it('stats(): closes counted by reason; closed connections are forgotten', async () => {
    const T = 500;
    const { server, port } = await serve({ allowHalfOpen: true });
    const guard = tuneServer(server, presets.gracefulHeartbeat({ halfCloseTimeout: T, idleTimeout: 2 * T, scanInterval: SCAN }));
    const reasons: string[] = [];
    guard.on('closed', (e: GuardCloseEvent) => reasons.push(e.reason));
    await connect(port); // idle
    const half = await connect(port);
    half.end();
    await expect.poll(() => reasons.length, { timeout: 2 * T + SCAN + SLACK }).toBe(2);
    expect(reasons).toEqual(['half-closed', 'idle']);
    const { closed, tracked, seen, states, scans } = guard.stats();
    expect(closed).toEqual({
      'half-closed': 1,
      'fin-wait': 0,
      idle: 1,
      heartbeat: 0,
      dead: 0,
      reset: 0,
      shutdown: 0,
      stale: 0,
      'max-age': 0,
      'too-many-pings': 0,
    });
    expect({ tracked, seen, states }).toEqual({ tracked: 0, seen: 2, states: {} });
    expect(scans).toBeGreaterThan(0);
  });
});

describe('scenario 11: idle timeouts close a live but silent connection with a typed error', () => {
  const T = 800;
  // [kind, policy field, who keeps writing (so only the other direction is idle)]
  const cases: Array<[string, Record<string, number>, 'server' | 'peer' | 'nobody']> = [
    ['reader', { readerIdleTimeout: T }, 'server'],
    ['writer', { writerIdleTimeout: T }, 'peer'],
    ['all', { idleTimeout: T }, 'nobody'],
  ];
  it.each(cases)('%s-idle: the idle event first, then ERR_SOCKTUNE_IDLE_TIMEOUT', async (kind, field, writer) => {
    const { server, accepted, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat({ ...field, scanInterval: SCAN }));
    const order: string[] = [];
    let idle: IdleEvent | undefined;
    guard.on('idle', (e: IdleEvent) => {
      idle = e;
      order.push('idle');
    });
    guard.on('closing', () => order.push('closing'));
    guard.on('closed', (e: GuardCloseEvent) => order.push(`closed:${e.reason}`));
    // Before connect(): the kernel's idle clock starts at the handshake, which can be well before
    // the client's 'connect' event runs on a loaded machine.
    const start = performance.now();
    const client = await connect(port);
    client.resume();
    const peer = endOf(client);
    const socket = await accepted;
    const error = new Promise<Error & { code?: string; reason?: string }>((resolve) =>
      socket.on('error', (err) => {
        order.push('error');
        resolve(err);
      }),
    );
    const writes = setInterval(() => {
      if (writer === 'server' && socket.writable) socket.write('x');
      if (writer === 'peer' && client.writable) client.write('x');
    }, 100);
    try {
      const err = await error;
      const took = performance.now() - start;
      expect(err).toMatchObject({ code: 'ERR_SOCKTUNE_IDLE_TIMEOUT', reason: 'idle' });
      expect(idle).toMatchObject({ socket, kind });
      expect(idle!.idle).toBeGreaterThanOrEqual(T);
      expect(took).toBeGreaterThanOrEqual(T - 20); // TCP_INFO times are jiffies
      expect(took).toBeLessThan(T + SLACK);
      // A byte from a writing peer may arrive just before the close, unread: the kernel then
      // sends RST instead of FIN (close() with unread data), whatever the policy.
      expect(writer === 'peer' ? ['end', 'ECONNRESET'] : ['end']).toContain(await peer);
      await expect.poll(() => order, { timeout: 1000 }).toContain('closed:idle');
      expect(order.indexOf('idle')).toBe(0);
      expect(order.indexOf('closing')).toBeLessThan(order.indexOf('error'));
      expect(order).toContain('closed:idle');
      expect(guard.stats().closed.idle).toBe(1);
    } finally {
      clearInterval(writes);
    }
  });

  it('traffic in one direction keeps a connection open under idleTimeout (both directions must be idle)', async () => {
    const { server, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat({ idleTimeout: 400, scanInterval: SCAN }));
    const client = await connect(port);
    const writes = setInterval(() => client.write('x'), 100);
    try {
      await sleep(1200);
      expect(guard.stats()).toMatchObject({ tracked: 1, closed: { idle: 0 } });
      expect(client.destroyed).toBe(false);
    } finally {
      clearInterval(writes);
    }
  });
});

describe('scenario 11: application heartbeat', () => {
  const interval = 400;
  const timeout = 400;
  const heartbeat = { interval, timeout, ping: (s: net.Socket) => s.write('ping\n') };

  /** A tuned server and a client that counts the pings it receives, and answers them if `answer`. */
  async function pinged(answer: boolean, serverWrites = false) {
    const { server, accepted, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat({ heartbeat, scanInterval: SCAN }));
    const client = await connect(port);
    const start = performance.now();
    const pings: number[] = [];
    client.setEncoding('utf8');
    client.on('data', (d: string) => {
      for (const _ of d.matchAll(/ping\n/g)) {
        pings.push(performance.now() - start);
        if (answer) client.write('pong\n');
      }
    });
    const socket = await accepted;
    const writes = serverWrites ? setInterval(() => socket.writable && socket.write('data\n'), 100) : undefined;
    return { guard, client, socket, pings, start, stop: () => clearInterval(writes) };
  }

  it('a ping after writer-idle; a peer that answers stays open', async () => {
    const { guard, client, pings, stop } = await pinged(true);
    try {
      await sleep(4 * interval + 300);
      expect(pings.length).toBeGreaterThanOrEqual(3);
      expect(pings[0]).toBeGreaterThanOrEqual(interval - 20);
      expect(pings[0]).toBeLessThan(interval + SLACK);
      expect(client.destroyed).toBe(false);
      expect(guard.stats()).toMatchObject({ tracked: 1, closed: { heartbeat: 0 } });
    } finally {
      stop();
    }
  });

  it('no ping while the connection is sending anyway', async () => {
    const { guard, client, pings, stop } = await pinged(false, true);
    try {
      await sleep(3 * interval);
      expect(pings).toEqual([]);
      expect(client.destroyed).toBe(false);
      expect(guard.stats().closed.heartbeat).toBe(0);
    } finally {
      stop();
    }
  });

  it('a peer that stays silent after the ping is closed with ERR_SOCKTUNE_HEARTBEAT_TIMEOUT', async () => {
    const { guard, client, socket, pings, start } = await pinged(false);
    const peer = endOf(client);
    const [err] = (await once(socket, 'error')) as [Error & { code?: string; reason?: string }];
    const took = performance.now() - start;
    expect(err).toMatchObject({ code: 'ERR_SOCKTUNE_HEARTBEAT_TIMEOUT', reason: 'heartbeat' });
    expect(pings.length).toBe(1);
    expect(took - pings[0]).toBeGreaterThanOrEqual(timeout - 20);
    expect(took).toBeLessThan(interval + timeout + SLACK);
    expect(await peer).toBe('end');
    expect(guard.stats().closed.heartbeat).toBe(1);
  });
});

describe.runIf(canUse('ss'))('scenario 12: the peer half-closes and the application never ends', () => {
  const T = 1000;
  // half-open: allowHalfOpen and a handler that never ends. paused: the handler pauses the
  // socket; a byte is left unread, so the EOF is never emitted and only the kernel scan sees it.
  const modes: Array<[string, net.ServerOpts, (s: net.Socket) => void]> = [
    ['half-open', { allowHalfOpen: true }, (s) => s.resume()],
    ['paused', {}, (s) => s.pause()],
  ];

  it.each(modes)('%s: CLOSE_WAIT (ss) back to 0 within halfCloseTimeout + 1 s', async (mode, opts, handler) => {
    const { server, accepted, port } = await serve(opts, handler);
    const guard = tuneServer(server, presets.gracefulHeartbeat({ halfCloseTimeout: T, scanInterval: SCAN }));
    const client = await connect(port);
    client.resume();
    const socket = await accepted;
    let sawEnd = false;
    socket.on('end', () => (sawEnd = true));
    const error = new Promise<Error & { code?: string }>((resolve) => socket.on('error', resolve));
    await new Promise<void>((resolve) => client.end('x', () => resolve()));
    const start = performance.now();
    await expect.poll(() => ssCount('close-wait', `sport = :${port}`), { timeout: 1000 }).toBe(1);
    await expect.poll(() => ssCount('close-wait', `sport = :${port}`), { timeout: T + SLACK }).toBe(0);
    const took = performance.now() - start;
    expect(took).toBeGreaterThanOrEqual(T - 20);
    expect(took).toBeLessThan(T + SLACK);
    expect(sawEnd).toBe(mode === 'half-open');
    expect(await error).toMatchObject({ code: 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT' });
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { 'half-closed': 1 } });
  });

  it.each(modes)('%s, control without the guard: CLOSE_WAIT stays', async (_mode, opts, handler) => {
    const { port } = await serve(opts, handler);
    const client = await connect(port);
    client.resume();
    await new Promise<void>((resolve) => client.end('x', () => resolve()));
    await sleep(T + SLACK);
    expect(await ssCount('close-wait', `sport = :${port}`)).toBe(1);
  });
});

describe.runIf(canUse('ss'))('scenario 13: this side ends and the peer never sends FIN', () => {
  const T = 1000;

  it('closed at the FIN-wait deadline: FIN_WAIT2 gone, with a reset (no orphan left for tcp_fin_timeout)', async () => {
    const { server, accepted, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat({ finWaitTimeout: T, scanInterval: SCAN }));
    const client = await connect(port, { allowHalfOpen: true }); // never ends
    client.resume();
    const peer = endOf(client);
    const socket = await accepted;
    const error = new Promise<Error & { code?: string }>((resolve) => socket.on('error', resolve));
    // When the guard decided, from its own event: what ss reports comes later on a loaded machine.
    const closing = new Promise<number>((resolve) => guard.on('closing', (e) => e.reason === 'fin-wait' && resolve(performance.now())));
    socket.end();
    await once(socket, 'finish');
    const start = performance.now();
    await expect.poll(() => ssCount('fin-wait-2', `sport = :${port}`), { timeout: 1000 }).toBe(1);
    const took = (await closing) - start;
    expect(took).toBeGreaterThanOrEqual(T - 20);
    expect(took).toBeLessThan(T + SLACK);
    await expect.poll(() => ssCount('fin-wait-2', `sport = :${port}`), { timeout: SLACK }).toBe(0);
    expect(await error).toMatchObject({ code: 'ERR_SOCKTUNE_FIN_WAIT_TIMEOUT' });
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { 'fin-wait': 1 } });
    // The peer got our FIN, then the reset: its kernel holds the connection as CLOSE (Node, done
    // reading, notices on its next write) and this side keeps no TIME_WAIT.
    expect(await peer).toBe('end');
    expect(tcpState(client)).toBe('CLOSE');
    expect(await ssCount('time-wait', `sport = :${port}`)).toBe(0);
  });

  it('control without the guard: FIN_WAIT2 stays', async () => {
    const { accepted, port } = await serve();
    const client = await connect(port, { allowHalfOpen: true });
    client.resume();
    const socket = await accepted;
    socket.end();
    await once(socket, 'finish');
    await sleep(T + SLACK);
    expect(await ssCount('fin-wait-2', `sport = :${port}`)).toBe(1);
  });
});

describe.runIf(canUse('ss'))('closing goes through the policy', () => {
  const T = 500;
  let messages: Array<{ reason: string; report: { method: string } }> = [];
  const onClose = (m: unknown) => messages.push(m as (typeof messages)[number]);
  beforeAll(() => closeChannel.subscribe(onClose));
  afterAll(() => closeChannel.unsubscribe(onClose));
  // Not afterEach: the file's teardown (closeAll) runs after it and may publish closes too.
  beforeEach(() => {
    messages = [];
  });

  const cases: Array<[string, ReturnType<typeof presets.gracefulHeartbeat>, string, string, number]> = [
    [
      'rstOnClose: RST, the peer reads ECONNRESET, no TIME_WAIT',
      presets.gracefulHeartbeat(presets.rstOnClose({ idleTimeout: T, scanInterval: SCAN })),
      'ECONNRESET',
      'rst',
      0,
    ],
    [
      'reset: false: FIN, the peer reads its end, TIME_WAIT here',
      presets.gracefulHeartbeat({ idleTimeout: T, scanInterval: SCAN, reset: false }),
      'end',
      'fin',
      1,
    ],
  ];
  it.each(cases)('an idle-timeout close under %s', async (_name, policy, seen, method, timeWait) => {
    const { server, accepted, port } = await serve();
    const guard = tuneServer(server, policy);
    const client = await connect(port);
    client.resume();
    const peer = endOf(client);
    const socket = await accepted;
    const error = new Promise<Error & { code?: string }>((resolve) => socket.on('error', resolve));
    const closed = once(guard, 'closed') as Promise<[GuardCloseEvent]>;
    expect(await peer).toBe(seen);
    expect(await error).toMatchObject({ code: 'ERR_SOCKTUNE_IDLE_TIMEOUT' });
    const [event] = await closed;
    expect(event).toMatchObject({ reason: 'idle', report: { method } });
    expect(messages).toEqual([expect.objectContaining({ socket, reason: 'idle', report: expect.objectContaining({ method }) })]);
    // Whoever closes first keeps the TIME_WAIT: here, unless it reset.
    await until(() => client.destroyed, 1000);
    await expect.poll(() => ssCount('time-wait', `sport = :${port}`), { timeout: 1000 }).toBe(timeWait);
  });

  const halfClosed: Array<[string, net.ServerOpts, (s: net.Socket) => void]> = [
    ['half-open', { allowHalfOpen: true }, (s) => s.resume()],
    ['paused', {}, (s) => s.pause()],
  ];
  it.each(halfClosed)('a half-closed (%s) connection under rstOnClose keeps FIN: the peer ended first, nothing to save', async (_mode, opts, handler) => {
    const { server, port } = await serve(opts, handler);
    const guard = tuneServer(server, presets.gracefulHeartbeat(presets.rstOnClose({ halfCloseTimeout: T, scanInterval: SCAN })));
    const client = await connect(port);
    client.resume();
    const peer = endOf(client);
    const closed = once(guard, 'closed') as Promise<[GuardCloseEvent]>;
    client.end('x');
    expect(await peer).toBe('end');
    const [event] = await closed;
    expect(event).toMatchObject({ reason: 'half-closed', report: { method: 'fin' } });
    await until(() => client.destroyed, 1000);
    // The passive closer keeps no TIME_WAIT either way.
    expect(await ssCount('time-wait', `sport = :${port}`)).toBe(0);
  });
});

describe.runIf(canUse('ss'))('guard.close({ timeout })', () => {
  it('net.Server: stops accepting, ends every connection, closes what is left at the timeout', async () => {
    const { server, port } = await serve();
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(s));
    const polite = await connect(port); // answers our FIN with its own
    polite.resume();
    const stubborn = await connect(port, { allowHalfOpen: true }); // never ends
    stubborn.resume();
    const stubbornPeer = endOf(stubborn);
    await expect.poll(() => accepted.length, { timeout: 2000 }).toBe(2);
    const toStubborn = accepted.find((s) => s.remotePort === stubborn.localPort)!;
    const error = new Promise<Error & { code?: string }>((resolve) => toStubborn.on('error', resolve));

    const report = await guard.close({ timeout: 600 });
    expect(report).toMatchObject({ ended: 1, forced: 1 });
    expect(report.elapsed).toBeGreaterThanOrEqual(600);
    expect(report.elapsed).toBeLessThan(600 + SLACK);
    expect(await error).toMatchObject({ code: 'ERR_SOCKTUNE_SHUTDOWN' });
    expect(await stubbornPeer).toBe('end');
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { shutdown: 1 } });
    // Forced after this side's FIN: nothing left orphaned in FIN_WAIT2 for tcp_fin_timeout.
    expect(await ssCount('fin-wait-2', `sport = :${port}`)).toBe(0);
    expect(server.listening).toBe(false);
    const refused = net.connect(port, '127.0.0.1');
    const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('http.Server: idle keep-alive connections close at once, busy ones after their response, the rest at the timeout', async () => {
    const server = track(
      http.createServer((req, res) => {
        if (req.url === '/slow') setTimeout(() => res.end('slow'), 300);
        else if (req.url !== '/hang') res.end('ok');
      }),
    );
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    // One agent per connection, so each request has a connection of its own.
    const agents = [0, 1, 2].map(() => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    const get = (path: string, agent: http.Agent) =>
      new Promise<string>((resolve) => {
        const req = http.get({ port, host: '127.0.0.1', path, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(`${res.statusCode} ${body}`));
          res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        });
        req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
    try {
      expect(await get('/', agents[0])).toBe('200 ok');
      const idle = Object.values(agents[0].freeSockets).flat()[0]!;
      const idleClosed = once(idle, 'close');
      const slow = get('/slow', agents[1]);
      const hang = get('/hang', agents[2]);
      await expect.poll(() => guard.stats().tracked, { timeout: 2000 }).toBe(3);

      const timeout = 1500;
      const start = performance.now();
      const closing = guard.close({ timeout });
      await idleClosed;
      expect(performance.now() - start).toBeLessThan(200);
      expect(await slow).toBe('200 slow');
      // The connection that served /slow is idle now: closed then, not kept until the timeout.
      await expect.poll(() => guard.stats().tracked, { timeout: 500 }).toBe(1);
      const report = await closing;
      expect(report).toMatchObject({ ended: 2, forced: 1 });
      expect(await hang).toBe('ECONNRESET'); // "socket hang up"
      expect(guard.stats()).toMatchObject({ tracked: 0, closed: { shutdown: 1 } });
    } finally {
      for (const a of agents) a.destroy();
    }
  });

  it('http.Server: a connection that has not sent a byte is ended at once (Node keeps it until headersTimeout); half a request is left to the timeout', async () => {
    const server = track(http.createServer((_req, res) => res.end('ok')));
    const guard = tuneServer(server, presets.gracefulHeartbeat());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    // A client that opened a connection ahead of its first request (as browsers and pools do), and
    // one whose request headers are not complete.
    const unused = track(net.connect(port, '127.0.0.1'));
    const partial = track(net.connect(port, '127.0.0.1'));
    await Promise.all([once(unused, 'connect'), once(partial, 'connect')]);
    partial.write('GET / HTTP/1.1\r\nHost: socktune.test\r\n');
    const seen = { unused: [] as string[], partial: [] as string[] };
    for (const [name, s] of [
      ['unused', unused],
      ['partial', partial],
    ] as const) {
      s.on('end', () => seen[name].push('end'));
      s.on('error', (e: NodeJS.ErrnoException) => seen[name].push(e.code ?? 'error'));
    }
    await expect.poll(() => guard.stats().tracked, { timeout: 2000 }).toBe(2);
    // Both are tracked and the partial request's bytes reached the server before close().
    await expect.poll(() => partial.bytesWritten, { timeout: 1000 }).toBeGreaterThan(0);
    await sleep(50); // the partial request's bytes are read by the server

    const report = await guard.close({ timeout: 1500 });
    // The unused connection was ended with a FIN (the client saw EOF), not forced at the timeout.
    expect(report).toMatchObject({ ended: 1, forced: 1 });
    expect(seen.unused).toEqual(['end']);
    expect(guard.stats()).toMatchObject({ tracked: 0, closed: { shutdown: 1 } });
    await once(partial, 'close');
  });
});

// ---------------------------------------------------------------------------------------------------
// Scenario 14: a thousand peers at once, in a namespace of this file's own, so `ss` and
// /proc/net/sockstat count only this server and its peers.

/** TCP sockets in use in the namespace (/proc/net/sockstat `inuse`; TIME_WAIT is counted apart, as `tw`). */
async function sockstat(ns: Netns): Promise<{ inuse: number; tw: number }> {
  const text = await ns.exec('cat', ['/proc/net/sockstat']);
  const m = /^TCP: inuse (\d+) orphan \d+ tw (\d+)/m.exec(text);
  if (!m) throw new Error(`unexpected /proc/net/sockstat: ${text}`);
  return { inuse: Number(m[1]), tw: Number(m[2]) };
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

describe.runIf(canUse('ip', 'ss', 'prlimit'))('scenario 14: 1000 peers half-close at once', () => {
  const PEERS = 1000;
  const T = 2000;
  let ns: Netns | undefined;

  beforeAll(() => {
    // The children (server, peers) inherit this process's limit and Node raises its soft limit to
    // the hard one; each needs more than a default 1024 fds. Raising the hard limit needs
    // CAP_SYS_RESOURCE, which a container may not grant: then the hard limit must already do.
    try {
      execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=65536:65536'], { stdio: 'ignore' });
    } catch {
      // checked below
    }
    const hard = Number(
      execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '--output', 'HARD'], { encoding: 'utf8' }).trim(),
    );
    expect(hard).toBeGreaterThan(PEERS + 200);
  });
  afterEach(async () => {
    await ns?.destroy();
    ns = undefined;
  });

  const cases: Array<[string, boolean]> = [
    ['half-open', true],
    ['paused', true],
    ['half-open', false],
    ['paused', false],
  ];
  it.each(cases)(
    '%s server, guard %s',
    async (mode, guarded) => {
      ns = new Netns('guard').create();
      const { child: server, ready } = await ns.start(serverFixture, [JSON.stringify({ mode, guard: guarded, halfCloseTimeout: T, scanInterval: 200 })]);
      const { port, pid } = JSON.parse(ready) as { port: number; pid: number };
      const baseline = { fds: fds(pid), ...(await sockstat(ns)) };

      const { child: peers, ready: up } = await ns.start(clientsFixture, [String(port), String(PEERS)]);
      expect(JSON.parse(up)).toEqual({ connected: PEERS });
      await expect.poll(() => ssCount('established', `sport = :${port}`, ns), { timeout: 5000 }).toBe(PEERS);
      // ss counts connections still in the accept queue too: wait until the server has taken them all.
      await expect.poll(async () => ((await ask(server, 'stats')) as { connections: number }).connections, { timeout: 5000 }).toBe(PEERS);
      expect(await ask(server, 'stats')).toMatchObject({ connections: PEERS, ...(guarded ? { guard: { tracked: PEERS } } : {}) });
      const loaded = { fds: fds(pid), ...(await sockstat(ns)) };
      expect(loaded.fds - baseline.fds).toBe(PEERS);

      const { startedAt, endedAt } = (await ask(peers, 'end')) as { startedAt: number; endedAt: number };
      const deadline = endedAt + T + SLACK;
      await expect.poll(() => ssCount('close-wait', `sport = :${port}`, ns), { timeout: 2000 }).toBe(PEERS);

      if (!guarded) {
        await sleep(Math.max(0, deadline - Date.now()));
        const after = { closeWait: await ssCount('close-wait', `sport = :${port}`, ns), fds: fds(pid), ...(await sockstat(ns)) };
        console.log(`scenario 14 control (${mode}): ${JSON.stringify({ baseline, after })}`);
        expect(after.closeWait).toBe(PEERS);
        expect(after.fds - baseline.fds).toBe(PEERS);
        // The server's CLOSE_WAIT and the peers' FIN_WAIT2.
        expect(after.inuse - baseline.inuse).toBe(2 * PEERS);
        return;
      }

      // The deadline is the guard's: when it closed the last connection, on the server's clock
      // (Date.now() there and in the peers, both the machine's wall clock), so the test's own polling
      // of ss, /proc and sockstat, slow on a loaded machine, does not count. The kernel's witnesses
      // must then all be back: the sockets gone from CLOSE_WAIT, the fds closed, sockstat at baseline.
      const witnesses: Record<string, () => Promise<boolean> | boolean> = {
        closeWait: async () => (await ssCount('close-wait', `sport = :${port}`, ns)) === 0,
        fds: () => fds(pid) === baseline.fds,
        sockstat: async () => (await sockstat(ns!)).inuse === baseline.inuse,
      };
      const back: Record<string, boolean> = {};
      await until(
        async () => {
          for (const [name, check] of Object.entries(witnesses)) if (!back[name] && (await check())) back[name] = true;
          return Object.keys(back).length === 3;
        },
        deadline - Date.now() + 10_000,
        100,
      );
      const stats = (await ask(server, 'stats')) as {
        guard: { tracked: number; closed: Record<string, number> };
        closes: { first: number | null; last: number | null };
      };
      // first: from the first FIN sent; last: from the last.
      const closedAfter = { first: (stats.closes.first ?? NaN) - startedAt, last: (stats.closes.last ?? NaN) - endedAt };
      console.log(
        `scenario 14 guarded (${mode}): closed after ms ${JSON.stringify(closedAfter)}; back ${JSON.stringify(back)}; baseline ${JSON.stringify(baseline)}; loaded ${JSON.stringify(loaded)}; closed ${JSON.stringify(stats.guard.closed)}`,
      );
      expect(back).toEqual({ closeWait: true, fds: true, sockstat: true });
      // Not before the half-close timeout, and all within it plus the slack (a scan interval and a loaded machine).
      expect(closedAfter.first).toBeGreaterThanOrEqual(T);
      expect(closedAfter.last).toBeLessThan(T + SLACK);
      expect(stats.guard.tracked).toBe(0);
      expect(stats.guard.closed['half-closed']).toBe(PEERS);
    },
    60_000,
  );
});
