// A multi-option configure is all or nothing: when the kernel refuses one option (EPERM injected
// by strace into the third setsockopt), the earlier ones are put back and the error has Node's shape.
import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { canUse } from './helpers/env.js';
import { strace } from './helpers/strace.js';

const EPERM = -constants.errno.EPERM;

describe.runIf(canUse('strace'))('all or nothing (strace fault injection)', () => {
  it('restores the options set before the one that failed', async () => {
    const dry = await strace('atomic.mjs');
    const failAt = dry.setsBefore + 3; // TCP_KEEPCNT, after TCP_KEEPIDLE and TCP_KEEPINTVL
    const { calls, stdout } = await strace('atomic.mjs', [], ['-e', `inject=setsockopt:error=EPERM:when=${failAt}`]);
    const report = JSON.parse(stdout);
    expect(report.error).toMatchObject({ code: 'EPERM', errno: EPERM, syscall: 'setsockopt', option: 'TCP_KEEPCNT', isError: true });
    expect(report.error.message).toBe('setsockopt TCP_KEEPCNT EPERM: operation not permitted');
    expect(report.after).toEqual(report.before);
    const fd = report.fd;
    expect(calls.filter((c) => c.startsWith('setsockopt('))).toEqual([
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPIDLE, [10], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPINTVL, [2], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPCNT, [3], 4) = -1 EPERM (Operation not permitted) (INJECTED)`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPINTVL, [5], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPIDLE, [50], 4) = 0`,
    ]);
  });

  it('a refusal when deferred options meet the connection destroys the socket with that error', async () => {
    const dry = await strace('atomic.mjs', ['--deferred', '--dry']);
    const failAt = dry.setsBefore + 1; // the first option applied at 'connect'
    const { stdout } = await strace('atomic.mjs', ['--deferred'], ['-e', `inject=setsockopt:error=EPERM:when=${failAt}`]);
    const report = JSON.parse(stdout);
    expect(report.result).toBe('deferred');
    expect(report.error).toMatchObject({ code: 'EPERM', syscall: 'setsockopt', option: 'TCP_KEEPIDLE' });
    expect(report.destroyed).toBe(true);
  });
});
