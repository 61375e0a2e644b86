// Scenarios 2 and 3: kernel boundaries accepted at the edges and refused one step outside;
// values that are not what they claim (NaN, '5', 5n, 1.5 ...) refused; none reaches the kernel.
import { afterEach, describe, expect, it } from 'vitest';
import { configure, readOptions } from '../src/index.js';
import { closeAll, pair } from './helpers/sockets.js';
import { canUse } from './helpers/env.js';
import { catchError } from './helpers/errors.js';
import { strace } from './helpers/strace.js';
import { badValues, edges, optionFor } from './fixtures/validation-cases.mjs';

afterEach(closeAll);

describe('kernel boundaries', () => {
  it.each(edges)('$field = $value is accepted and held', async ({ field, value, held }) => {
    const { client } = await pair();
    configure(client, optionFor(field, value));
    const o = readOptions(client);
    const got = field === 'userTimeout' ? o.userTimeout : (o.keepAlive as Record<string, number>)[field];
    expect(got).toBe(held);
  });

  it.each([
    ['idle', 0],
    ['idle', 32_767_001],
    ['interval', 0],
    ['interval', 32_767_001],
    ['count', 0],
    ['count', 128],
    ['userTimeout', -1],
    ['userTimeout', 2 ** 31],
  ])('%s = %d one step outside is a RangeError', async (field, value) => {
    const { client } = await pair();
    const err = catchError(() => configure(client, optionFor(field, value)));
    expect(err).toBeInstanceOf(RangeError);
    expect(err).toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    expect(err.message).toContain(field);
  });
});

describe('no coercion', () => {
  const fields = ['idle', 'interval', 'count', 'userTimeout'];
  const rows = fields.flatMap((field) => badValues.map(([label, , kind]) => ({ field, label, kind })));
  it.each(rows)('$field = $label is a $kind', async ({ field, label, kind }) => {
    const { client } = await pair();
    const value = badValues.find(([l]) => l === label)![1];
    const err = catchError(() => configure(client, optionFor(field, value)));
    expect(err.constructor.name).toBe(kind);
    expect((err as { code?: string }).code).toBe(kind === 'RangeError' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE');
  });

  it.each([
    ['noDelay', 1],
    ['noDelay', 'true'],
    ['reuseAddress', 0],
    ['reusePort', null],
    ['keepAlive', 1],
    ['keepAlive', 'yes'],
    ['keepAlive', null],
    ['linger', true],
    ['linger', null],
  ])('%s = %o is a TypeError', async (key, value) => {
    const { client } = await pair();
    const err = catchError(() => configure(client, { [key]: value } as never));
    expect(err).toBeInstanceOf(TypeError);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });

  it.each([1, 5, 30_000, 0.5, -1])('linger = %d is refused with the reason (it would block the event loop)', async (v) => {
    const { client } = await pair();
    const err = catchError(() => configure(client, { linger: v as 0 }));
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toMatch(/block the event loop/);
  });

  it('options must be an object; unknown names are refused with a hint', async () => {
    const { client } = await pair();
    expect(catchError(() => configure(client, null as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(catchError(() => configure(client, 5 as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    const typo = catchError(() => configure(client, { keepalive: true } as never));
    expect(typo).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(typo.message).toContain("did you mean 'keepAlive'");
    const inner = catchError(() => configure(client, { keepAlive: { idel: 5000 } } as never));
    expect(inner.message).toContain("did you mean 'idle'");
  });

  it('a failed validation leaves every option as it was (validation precedes all syscalls)', async () => {
    const { client } = await pair();
    const before = readOptions(client);
    catchError(() => configure(client, { userTimeout: 5000, noDelay: !before.noDelay, keepAlive: { count: 1.5 } }));
    expect(readOptions(client)).toEqual(before);
  });
});

describe.runIf(canUse('strace'))('bad input reaches no syscall (strace)', () => {
  it('every rejected call is rejected before setsockopt/getsockopt', async () => {
    const { calls, stdout } = await strace('validation.mjs');
    const report = JSON.parse(stdout);
    expect(report.rejected).toBeGreaterThan(60);
    expect(report.accepted).toBe(0);
    expect(calls).toEqual([]);
  });

  it('the edges reach the kernel as the exact values', async () => {
    const { calls, stdout } = await strace('validation.mjs', ['--edges']);
    const { fd } = JSON.parse(stdout);
    const sets = calls.filter((c) => c.startsWith('setsockopt(')).map((c) => c.replace(`(${fd}, `, '('));
    expect(sets).toEqual(
      expect.arrayContaining([
        'setsockopt(SOL_TCP, TCP_KEEPIDLE, [1], 4) = 0',
        'setsockopt(SOL_TCP, TCP_KEEPIDLE, [32767], 4) = 0',
        'setsockopt(SOL_TCP, TCP_KEEPINTVL, [1], 4) = 0',
        'setsockopt(SOL_TCP, TCP_KEEPINTVL, [32767], 4) = 0',
        'setsockopt(SOL_TCP, TCP_KEEPCNT, [1], 4) = 0',
        'setsockopt(SOL_TCP, TCP_KEEPCNT, [127], 4) = 0',
        'setsockopt(SOL_TCP, TCP_USER_TIMEOUT, [0], 4) = 0',
        'setsockopt(SOL_TCP, TCP_USER_TIMEOUT, [2147483647], 4) = 0',
      ]),
    );
  });
});

describe('options are own properties, each read once, before anything is encoded', () => {
  it('inherited properties are not options (a polluted Object.prototype changes nothing)', async () => {
    const { client } = await pair();
    const before = readOptions(client);
    const proto = Object.prototype as Record<string, unknown>;
    proto.linger = 0;
    proto.count = 99;
    try {
      expect(configure(client, { keepAlive: { idle: 5000 } })).toBe('applied');
    } finally {
      delete proto.linger;
      delete proto.count;
    }
    const after = readOptions(client);
    expect(after.linger).toBe(before.linger);
    expect(after.keepAlive).toEqual({ idle: 5000, interval: before.keepAliveTimings!.interval, count: before.keepAliveTimings!.count });
  });

  it('each getter runs exactly once per call, and the value it returned is the one applied', async () => {
    const { client } = await pair();
    const reads: string[] = [];
    let n = 0;
    const keepAlive = {
      get idle() {
        reads.push('idle');
        return 3000 + 1000 * n++;
      },
      get count() {
        reads.push('count');
        return 4;
      },
    };
    configure(client, {
      get keepAlive() {
        reads.push('keepAlive');
        return keepAlive;
      },
      get userTimeout() {
        reads.push('userTimeout');
        return 6000;
      },
    });
    expect(reads).toEqual(['keepAlive', 'userTimeout', 'idle', 'count']);
    expect(readOptions(client)).toMatchObject({ keepAlive: { idle: 3000, count: 4 }, userTimeout: 6000 });
  });

  it('a getter that throws is ERR_INVALID_ARG_VALUE naming the option, with the thrown error as cause', async () => {
    const { client } = await pair();
    const thrown = new Error('from a getter');
    const err = catchError(() =>
      configure(client, {
        keepAlive: {
          get count(): number {
            throw thrown;
          },
        },
      }),
    );
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', cause: thrown });
    expect(err.message).toContain("'options.keepAlive.count'");
  });

  it.each([
    ['noDelay', Symbol('x')],
    ['userTimeout', Symbol.iterator],
    ['keepAlive', Symbol('ka')],
    ['linger', Symbol('linger')],
  ])('a Symbol as %s is ERR_INVALID_ARG_TYPE', async (key, value) => {
    const { client } = await pair();
    const err = catchError(() => configure(client, { [key]: value } as never));
    expect(err).toBeInstanceOf(TypeError);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe.runIf(canUse('strace'))('hostile options reach the kernel only as what they own (strace)', () => {
  const sets = (calls: string[], fd: number) => calls.filter((c) => c.startsWith(`setsockopt(${fd}, `)).map((c) => c.replace(`(${fd}, `, '('));

  it('Object.prototype.linger, .count and .userTimeout set nothing', async () => {
    const { calls, stdout } = await strace('hostile-options.mjs', ['polluted']);
    const { fd } = JSON.parse(stdout);
    expect(calls).toHaveLength(3);
    expect(sets(calls, fd)).toEqual([
      'setsockopt(SOL_TCP, TCP_KEEPIDLE, [5], 4) = 0',
      'setsockopt(SOL_SOCKET, SO_KEEPALIVE, [1], 4) = 0',
      'setsockopt(SOL_TCP, TCP_NODELAY, [1], 4) = 0',
    ]);
  });

  it("a getter that configures another socket while it is read: that socket's option stays there", async () => {
    const { calls, stdout } = await strace('hostile-options.mjs', ['reentrant']);
    const { fd, otherFd, reads } = JSON.parse(stdout);
    expect(reads).toEqual({ idle: 1, userTimeout: 1 });
    expect(sets(calls, otherFd)).toEqual(['setsockopt(SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0']);
    expect(sets(calls, fd)).toEqual([
      'setsockopt(SOL_TCP, TCP_KEEPIDLE, [7], 4) = 0',
      'setsockopt(SOL_TCP, TCP_USER_TIMEOUT, [8000], 4) = 0',
      'setsockopt(SOL_SOCKET, SO_KEEPALIVE, [1], 4) = 0',
    ]);
  });

  it('Symbols, throwing getters and traps, revoked Proxies: coded errors and no syscall on the socket', async () => {
    const { calls, stdout } = await strace('hostile-options.mjs', ['rejected']);
    const { fd, otherFd, codes } = JSON.parse(stdout);
    expect(codes).toEqual([...Array(6).fill('ERR_INVALID_ARG_TYPE'), ...Array(8).fill('ERR_INVALID_ARG_VALUE'), 'ERR_INVALID_ARG_TYPE']);
    // The only syscall is the one the last getter made on the other socket, for its own call.
    expect(calls).toEqual([`setsockopt(${otherFd}, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0`]);
    expect(fd).not.toBe(otherFd);
  });
});
