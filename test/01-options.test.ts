// Scenario 1: every option round-trips on IPv4 and IPv6; the initial value differs from the one
// set; strace shows the syscall and value that reached the kernel.
import { afterEach, describe, expect, it } from 'vitest';
import { configure, readOptions, type SocketOptions } from '../src/index.js';
import { closeAll, pair } from './helpers/sockets.js';
import { canUse } from './helpers/env.js';
import { strace } from './helpers/strace.js';

afterEach(closeAll);

interface Case {
  name: string;
  set: SocketOptions;
  read: (o: ReturnType<typeof readOptions>) => unknown;
  expected: unknown;
}

const cases: Case[] = [
  {
    name: 'keepAlive on with timings',
    set: { keepAlive: { idle: 45_000, interval: 7_000, count: 4 } },
    read: (o) => o.keepAlive,
    expected: { idle: 45_000, interval: 7_000, count: 4 },
  },
  { name: 'userTimeout', set: { userTimeout: 12_345 }, read: (o) => o.userTimeout, expected: 12_345 },
  { name: 'linger 0 (RST on close)', set: { linger: 0 }, read: (o) => o.linger, expected: 0 },
  { name: 'reuseAddress', set: { reuseAddress: true }, read: (o) => o.reuseAddress, expected: true },
  { name: 'reusePort', set: { reusePort: true }, read: (o) => o.reusePort, expected: true },
];

describe.each(['127.0.0.1', '::1'])('round trip over %s', (host) => {
  it.each(cases)('$name', async ({ set, read, expected }) => {
    const { client } = await pair(host);
    expect(read(readOptions(client))).not.toEqual(expected);
    expect(configure(client, set)).toBe('applied');
    expect(read(readOptions(client))).toEqual(expected);
  });

  it('noDelay both ways', async () => {
    const { client } = await pair(host);
    const initial = readOptions(client).noDelay;
    configure(client, { noDelay: !initial });
    expect(readOptions(client).noDelay).toBe(!initial);
    configure(client, { noDelay: initial });
    expect(readOptions(client).noDelay).toBe(initial);
  });

  it('keepAlive false turns SO_KEEPALIVE off and keeps the timings', async () => {
    const { client } = await pair(host);
    configure(client, { keepAlive: { idle: 30_000, interval: 5_000, count: 3 } });
    configure(client, { keepAlive: false });
    const o = readOptions(client);
    expect(o.keepAlive).toBe(false);
    expect(o.keepAliveTimings).toEqual({ idle: 30_000, interval: 5_000, count: 3 });
  });

  it('keepAlive fields left out keep their values', async () => {
    const { client } = await pair(host);
    configure(client, { keepAlive: { idle: 30_000, interval: 5_000, count: 3 } });
    configure(client, { keepAlive: { count: 7 } });
    expect(readOptions(client).keepAlive).toEqual({ idle: 30_000, interval: 5_000, count: 7 });
  });

  it('linger false after 0', async () => {
    const { client } = await pair(host);
    configure(client, { linger: 0 });
    configure(client, { linger: false });
    expect(readOptions(client).linger).toBe(false);
  });
});

describe('seconds are rounded up, never down', () => {
  it.each([
    [1, 1_000],
    [999, 1_000],
    [1_000, 1_000],
    [1_001, 2_000],
    [1_500, 2_000],
    [32_766_001, 32_767_000],
  ])('idle and interval %i ms read back as %i ms', async (given, held) => {
    const { client } = await pair();
    configure(client, { keepAlive: { idle: given, interval: given } });
    const { keepAlive } = readOptions(client);
    expect(keepAlive).toMatchObject({ idle: held, interval: held });
  });
});

// What readOptions asks the kernel, in the table's order: one getsockopt per option, and SO_DOMAIN
// first for IP_TOS (IPV6_TCLASS on an IPv6 socket). strace 6.1 prints IP_LOCAL_PORT_RANGE (51) by number.
const readNames = [
  'SO_KEEPALIVE',
  'TCP_KEEPIDLE',
  'TCP_KEEPINTVL',
  'TCP_KEEPCNT',
  'TCP_USER_TIMEOUT',
  'SO_LINGER',
  'TCP_NODELAY',
  'SO_REUSEADDR',
  'SO_REUSEPORT',
  'SO_RCVBUF',
  'SO_SNDBUF',
  'SO_DOMAIN',
  'IP_TOS',
  'IP_BIND_ADDRESS_NO_PORT',
  expect.stringMatching(/^(IP_LOCAL_PORT_RANGE|0x33 \/\* IP_\?\?\? \*\/)$/),
  'TCP_DEFER_ACCEPT',
];

describe.runIf(canUse('strace'))('what reaches the kernel (strace)', () => {
  it('configure issues exactly the expected setsockopt calls, SO_KEEPALIVE last', async () => {
    const { calls, stdout } = await strace('configure.mjs');
    const { fd } = JSON.parse(stdout);
    const sets = calls.filter((c) => c.startsWith('setsockopt('));
    expect(sets).toEqual([
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPIDLE, [45], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPINTVL, [7], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_KEEPCNT, [4], 4) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_USER_TIMEOUT, [12345], 4) = 0`,
      `setsockopt(${fd}, SOL_SOCKET, SO_KEEPALIVE, [1], 4) = 0`,
      `setsockopt(${fd}, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0`,
      `setsockopt(${fd}, SOL_TCP, TCP_NODELAY, [0], 4) = 0`,
      `setsockopt(${fd}, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0`,
      `setsockopt(${fd}, SOL_SOCKET, SO_REUSEPORT, [1], 4) = 0`,
    ]);
    // configure reads nothing back (no snapshot): the section is the nine sets, then readOptions'
    // reads (one per option, and SO_DOMAIN for IP_TOS's family), all on the same fd.
    expect(calls.slice(0, 9)).toEqual(sets);
    for (const c of calls.slice(9)) expect(c).toMatch(new RegExp(`^getsockopt\\(${fd},`));
    expect(calls).toHaveLength(9 + readNames.length);
    expect(JSON.parse(stdout).read).toMatchObject({
      keepAlive: { idle: 45_000, interval: 7_000, count: 4 },
      keepAliveTimings: { idle: 45_000, interval: 7_000, count: 4 },
      userTimeout: 12_345,
      linger: 0,
      noDelay: false,
      reuseAddress: true,
      reusePort: true,
    });
  });

  it('readOptions reads every option with getsockopt and sets nothing', async () => {
    const { calls, stdout } = await strace('configure.mjs', ['--read-only']);
    const { fd } = JSON.parse(stdout);
    expect(calls.filter((c) => c.startsWith('setsockopt('))).toEqual([]);
    const names = calls.map((c) => c.split(', ')[2]);
    expect(names).toEqual(readNames);
    for (const c of calls) expect(c.startsWith(`getsockopt(${fd},`)).toBe(true);
  });
});
