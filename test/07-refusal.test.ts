// A kernel refusal in a multi-option configure (EPERM injected by strace into the Nth setsockopt):
// the options are applied in order, the kernel's error is thrown in Node's shape with `applied`
// (the options set before the refused one), and the socket is left as it is: no getsockopt
// snapshot, no rollback. strace is the witness that `applied` is exactly what reached the kernel.
import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { canUse } from './helpers/env.js';
import { strace } from './helpers/strace.js';

const EPERM = -constants.errno.EPERM;
// configure's order for { keepAlive: { idle, interval, count }, userTimeout }.
const order = ['TCP_KEEPIDLE', 'TCP_KEEPINTVL', 'TCP_KEEPCNT', 'TCP_USER_TIMEOUT', 'SO_KEEPALIVE'];

/** The option name of a strace setsockopt line. */
const optionOf = (line: string) => line.split(', ')[2];

describe.runIf(canUse('strace'))('a kernel refusal (strace fault injection)', () => {
  it.each([1, 3, 5])('refusing setsockopt %i of 5: applied lists exactly the calls strace saw succeed', async (nth) => {
    const dry = await strace('refusal.mjs');
    const { calls, stdout } = await strace('refusal.mjs', [], ['-e', `inject=setsockopt:error=EPERM:when=${dry.setsBefore + nth}`]);
    const report = JSON.parse(stdout);
    const refused = order[nth - 1];
    expect(report.result).toBeUndefined();
    expect(report.error).toEqual({
      code: 'EPERM',
      errno: EPERM,
      syscall: 'setsockopt',
      option: refused,
      applied: order.slice(0, nth - 1),
      message: `setsockopt ${refused} EPERM: operation not permitted`,
      isError: true,
    });

    // The witness: the calls that reached the kernel, in order, the last one refused, and no
    // getsockopt (no snapshot) or setsockopt after it (no rollback).
    const { fd } = report;
    expect(calls.every((c) => c.startsWith(`setsockopt(${fd}, `))).toBe(true);
    expect(calls.map(optionOf)).toEqual(order.slice(0, nth));
    const succeeded = calls.filter((c) => c.endsWith(' = 0'));
    expect(succeeded.map(optionOf)).toEqual(report.error.applied);
    expect(calls.at(-1)).toMatch(/ = -1 EPERM \(Operation not permitted\) \(INJECTED\)$/);

    // The socket holds what `applied` says, and its old values for the rest.
    const held = {
      TCP_KEEPIDLE: (o: Read) => o.keepAliveTimings.idle,
      TCP_KEEPINTVL: (o: Read) => o.keepAliveTimings.interval,
      TCP_KEEPCNT: (o: Read) => o.keepAliveTimings.count,
      TCP_USER_TIMEOUT: (o: Read) => o.userTimeout,
      SO_KEEPALIVE: (o: Read) => o.keepAlive !== false,
    };
    const wanted = { TCP_KEEPIDLE: 10_000, TCP_KEEPINTVL: 2_000, TCP_KEEPCNT: 3, TCP_USER_TIMEOUT: 9_000, SO_KEEPALIVE: true };
    for (const name of order) {
      const read = held[name as keyof typeof held];
      const expected = report.error.applied.includes(name) ? wanted[name as keyof typeof wanted] : read(report.before);
      expect(read(report.after), name).toEqual(expected);
      // Each option's new value differs from the old one, so "held" and "untouched" are told apart.
      expect(read(report.before), name).not.toEqual(wanted[name as keyof typeof wanted]);
    }
  });

  it.each([1, 2])('a refusal of option %i when deferred options meet the connection destroys the socket with that error', async (nth) => {
    const dry = await strace('refusal.mjs', ['--deferred', '--dry']);
    const { calls, stdout } = await strace('refusal.mjs', ['--deferred'], ['-e', `inject=setsockopt:error=EPERM:when=${dry.setsBefore + nth}`]);
    const report = JSON.parse(stdout);
    expect(report.result).toBe('deferred');
    expect(report.error).toMatchObject({ code: 'EPERM', syscall: 'setsockopt', option: order[nth - 1], applied: order.slice(0, nth - 1) });
    expect(report.destroyed).toBe(true);
    const sets = calls.filter((c) => c.startsWith('setsockopt('));
    expect(sets.filter((c) => c.endsWith(' = 0')).map(optionOf)).toEqual(report.error.applied);
  });
});

interface Read {
  keepAlive: false | object;
  keepAliveTimings: { idle: number; interval: number; count: number };
  userTimeout: number;
}
