// Scenarios 4 and 5: sockets are borrowed. A destroyed socket whose fd number now belongs to
// another socket leaves that socket untouched; non-TCP sockets, plain objects and spoofed handles
// get clear errors and no syscall.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Guard, configure, presets, readOptions, resetClose, tcpInfo, sendQueue, receiveQueue, socketCookie, tcpState, tune } from '../src/index.js';
import { closeAll, pair, track } from './helpers/sockets.js';
import { canUse } from './helpers/env.js';
import { catchError } from './helpers/errors.js';
import { strace } from './helpers/strace.js';

afterEach(closeAll);

/** Node's TCP handle class, which the spoofs below copy the prototype of. */
const { TCP } = (process as unknown as { binding(name: string): { TCP: { prototype: object } } }).binding('tcp_wrap');

const fdOf = (s: net.Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;

describe('a destroyed socket whose fd was reused', () => {
  it('errors, and the socket that now owns the fd number is untouched', async () => {
    const a = await pair();
    const fd = fdOf(a.client);
    a.client.destroy();
    await once(a.client, 'close'); // the fd is closed by libuv on the next loop turn
    // The lowest free fd is handed out next: open sockets until one gets the old number.
    let owner: net.Socket | net.Server | undefined;
    for (let i = 0; i < 10 && !owner; i++) {
      const p = await pair();
      owner = [p.server, p.client, p.peer].find((s) => fdOf(s as net.Socket) === fd);
    }
    expect(owner, 'fd number was not reused').toBeDefined();
    const before = readOptions(owner!);
    for (const op of [
      () => configure(a.client, { userTimeout: 4242, linger: 0 }),
      () => readOptions(a.client),
      () => tcpInfo(a.client),
      () => sendQueue(a.client),
    ]) {
      expect(op).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
    }
    expect(readOptions(owner!)).toEqual(before);
  });

  it('a live socket carrying a closed handle is refused by the native fd check', async () => {
    const a = await pair();
    const stale = (a.client as unknown as { _handle: object })._handle;
    a.client.destroy();
    const b = await pair();
    const before = readOptions(b.client);
    const impostor = track(new net.Socket());
    (impostor as unknown as { _handle: object })._handle = stale;
    expect(() => configure(impostor, { userTimeout: 4242 })).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
    expect(readOptions(b.client)).toEqual(before);
  });
});

describe('not a TCP socket', () => {
  it('a Unix-domain socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'socktune-'));
    try {
      const server = track(net.createServer().listen(join(dir, 's.sock')));
      await once(server, 'listening');
      const client = track(net.connect(join(dir, 's.sock')));
      await once(client, 'connect');
      for (const target of [client, server]) {
        const err = catchError(() => configure(target, { noDelay: true }));
        expect(err).toBeInstanceOf(TypeError);
        expect(err).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
        expect(err.message).toMatch(/Unix-domain/);
      }
    } finally {
      await closeAll();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a UDP socket', async () => {
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
    try {
      const err = catchError(() => configure(udp as never, { noDelay: true }));
      expect(err).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
      expect(err.message).toMatch(/UDP/);
    } finally {
      udp.close();
    }
  });

  it.each([
    ['a plain object', {}],
    ['null', null],
    ['a number (an fd)', 3],
    ['an object with _handle', { _handle: { fd: 3 } }],
  ])('%s is an ERR_INVALID_ARG_TYPE', (_label, value) => {
    for (const op of [() => configure(value as never, { noDelay: true }), () => readOptions(value as never), () => tcpInfo(value as never)]) {
      expect(op).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    }
  });

  it('a net.Socket whose _handle is a plain object naming a live fd', async () => {
    const b = await pair();
    const spoof = track(new net.Socket());
    (spoof as unknown as { _handle: object })._handle = { fd: fdOf(b.client) };
    expect(() => configure(spoof, { userTimeout: 4242 })).toThrow(expect.objectContaining({ code: 'ERR_SOCKTUNE_INVALID_HANDLE' }));
  });

  it('a net.Socket whose _handle mimics a TCP handle (right prototype, own fd)', async () => {
    const b = await pair();
    const before = readOptions(b.client);
    const fake = Object.create(TCP.prototype, { fd: { value: fdOf(b.client) } });
    const spoof = track(new net.Socket());
    (spoof as unknown as { _handle: object })._handle = fake;
    const err = catchError(() => configure(spoof, { userTimeout: 4242 }));
    expect(err).toBeInstanceOf(TypeError);
    expect(err).toMatchObject({ code: 'ERR_SOCKTUNE_INVALID_HANDLE' });
    expect(readOptions(b.client)).toEqual(before);
  });

  it('a socket that never connected', () => {
    const s = track(new net.Socket());
    expect(() => readOptions(s)).toThrow(expect.objectContaining({ code: 'ERR_SOCKTUNE_NOT_CONNECTED' }));
    expect(() => configure(s, { noDelay: true })).toThrow(expect.objectContaining({ code: 'ERR_SOCKTUNE_NOT_CONNECTED' }));
  });
});

describe('hostile socket objects get coded errors from every call', () => {
  const thrown = new Error('from the object');
  const throwingHandle = () => {
    const s = track(new net.Socket());
    Object.defineProperty(s, '_handle', {
      get: () => {
        throw thrown;
      },
    });
    return s;
  };
  const revoked = () => {
    const r = Proxy.revocable({}, {});
    r.revoke();
    return r.proxy;
  };
  const cases: Array<[string, () => unknown, string]> = [
    // Not constructed: no stream state (the guard and the reset path would fail on it from a timer).
    ['Object.create(net.Socket.prototype)', () => Object.create(net.Socket.prototype), 'ERR_INVALID_ARG_TYPE'],
    ['a net.Socket whose _handle getter throws', throwingHandle, 'ERR_INVALID_ARG_VALUE'],
    ['a revoked Proxy', revoked, 'ERR_INVALID_ARG_VALUE'],
    ['a Symbol', () => Symbol('socket'), 'ERR_INVALID_ARG_TYPE'],
    ['a BigInt', () => 3n, 'ERR_INVALID_ARG_TYPE'],
  ];
  const calls: Array<[string, (s: never) => unknown]> = [
    ['configure', (s) => configure(s, { noDelay: true })],
    ['readOptions', readOptions],
    ['tcpInfo', tcpInfo],
    ['sendQueue', sendQueue],
    ['receiveQueue', receiveQueue],
    ['socketCookie', socketCookie],
    ['tcpState', tcpState],
  ];
  it.each(cases)('%s', (_label, make, code) => {
    for (const [name, call] of calls) {
      const err = catchError(() => call(make() as never));
      expect(err, name).toMatchObject({ code });
      if (code === 'ERR_INVALID_ARG_VALUE' && _label.includes('getter')) expect((err as Error & { cause?: unknown }).cause).toBe(thrown);
    }
  });

  it('Object.create(net.Socket.prototype) around a live TCP handle: tune() and guard.track() refuse it, and nothing fails later from a timer', async () => {
    const b = await pair();
    const impostor = Object.create(net.Socket.prototype) as net.Socket;
    (impostor as unknown as { _handle: unknown })._handle = (b.client as unknown as { _handle: unknown })._handle;
    const policy = presets.gracefulHeartbeat({ scanInterval: 10 });
    expect(catchError(() => tune(impostor, policy))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    const guard = new Guard(policy);
    expect(catchError(() => guard.track(impostor))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(guard.size).toBe(0);
    // Ten scans' time: no uncaught error from the guard's timer (vitest fails the file on one).
    await sleep(100);
  });

  it("a net.Socket whose _handle is an object made from TCP's prototype: every entry point answers ERR_SOCKTUNE_INVALID_HANDLE", async () => {
    const make = () => {
      const spoof = track(new net.Socket());
      (spoof as unknown as { _handle: object })._handle = Object.create(TCP.prototype);
      return spoof;
    };
    const calls: Array<[string, (s: net.Socket) => unknown]> = [
      ['configure', (s) => configure(s, { noDelay: true })],
      ['tune rstOnClose (no kernel option)', (s) => tune(s, presets.rstOnClose())],
      ['resetClose', (s) => resetClose(s)],
      ['guard.track', (s) => new Guard(presets.gracefulHeartbeat()).track(s)],
    ];
    for (const [name, call] of calls) {
      let thrown: unknown;
      try {
        await call(make());
      } catch (err) {
        thrown = err;
      }
      expect(thrown, name).toMatchObject({ code: 'ERR_SOCKTUNE_INVALID_HANDLE' });
    }
  });

  it('tune(socket, policy, guard) with something that is not a Guard: ERR_INVALID_ARG_TYPE before anything is set', async () => {
    const { client } = await pair();
    const before = readOptions(client);
    for (const guard of [{}, null, 'guard', Symbol('g')]) {
      expect(
        catchError(() => tune(client, presets.gracefulHeartbeat(presets.rstOnClose()), guard as never)),
        String(typeof guard),
      ).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    }
    expect(readOptions(client)).toEqual(before);
    expect(Object.hasOwn(client, 'end')).toBe(false);
    expect(Object.hasOwn(client, 'destroy')).toBe(false);
  });

  it('guard.untrack() and guard.drop() with something that is not a socket: ERR_INVALID_ARG_TYPE', async () => {
    const guard = new Guard(presets.gracefulHeartbeat());
    for (const value of [null, undefined, {}, 5]) {
      expect(catchError(() => guard.untrack(value as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
      await expect(guard.drop(value as never, 'idle')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    }
  });

  it('a frozen or sealed socket: tune, resetClose and guard.track answer ERR_INVALID_ARG_VALUE and change nothing', async () => {
    for (const seal of [Object.freeze, Object.seal, Object.preventExtensions]) {
      const { client } = await pair();
      seal(client);
      expect(
        catchError(() => tune(client, presets.rstOnClose())),
        seal.name,
      ).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      expect(
        catchError(() => resetClose(client)),
        seal.name,
      ).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      expect(
        catchError(() => new Guard(presets.gracefulHeartbeat()).track(client)),
        seal.name,
      ).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    }
  });

  it('a Proxy around a live socket is the socket (it is one)', async () => {
    const { client } = await pair();
    const proxied = new Proxy(client, {});
    expect(configure(proxied, { userTimeout: 4321 })).toBe('applied');
    expect(readOptions(client).userTimeout).toBe(4321);
  });
});

describe.runIf(canUse('strace'))('refused sockets reach no syscall (strace)', () => {
  it('destroyed, Unix-domain, UDP, spoofed and mimicking handles: no setsockopt or getsockopt', async () => {
    const { calls, stdout } = await strace('handles.mjs');
    const report = JSON.parse(stdout);
    expect(report.errors).toEqual([
      'ERR_SOCKET_CLOSED',
      'ERR_SOCKTUNE_NOT_TCP',
      'ERR_SOCKTUNE_NOT_TCP',
      'ERR_SOCKTUNE_INVALID_HANDLE',
      'ERR_SOCKTUNE_INVALID_HANDLE',
      'ERR_SOCKET_CLOSED',
    ]);
    expect(calls).toEqual([]);
  });
});
