// A Prometheus scrape never stalls the event loop on the socket table: the dump runs on another
// thread (strace shows which thread opens the sock_diag socket), the event loop keeps turning while
// it runs, each scrape dumps once (not once per gauge or per scope), and scrapes that arrive while
// a dump is in flight share it. The kernel is the witness: strace counts the sock_diag sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { createCollector, presets, Guard } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { Netns } from './helpers/netns.js';

const run = promisify(execFile);
const fixture = fileURLToPath(new URL('./fixtures/scrape.mjs', import.meta.url));
const generator = fileURLToPath(new URL('../scripts/bench/timewait.mjs', import.meta.url));

interface Dumps {
  /** Thread ids that opened a NETLINK_SOCK_DIAG socket between the marks. */
  tids: number[];
  pid: number;
  timeWait: number;
}

/** Runs the fixture in `ns` under strace -f and returns who opened sock_diag sockets between the marks. */
async function traced(ns: Netns, mode: string, n: number): Promise<Dumps> {
  const { stdout, stderr } = await run(
    'ip',
    [
      'netns',
      'exec',
      ns.name,
      'strace',
      '-f',
      '-qq',
      '-e',
      'trace=socket,access,faccessat,faccessat2',
      '-e',
      'signal=none',
      process.execPath,
      fixture,
      mode,
      String(n),
    ],
    { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 },
  );
  const out = JSON.parse(stdout);
  const lines = stderr.split('\n');
  const begin = lines.findIndex((l) => l.includes('/socktune-mark-begin'));
  const end = lines.findIndex((l) => l.includes('/socktune-mark-end'));
  expect(begin).toBeGreaterThanOrEqual(0);
  expect(end).toBeGreaterThan(begin);
  const tids = lines
    .slice(begin + 1, end)
    .filter((l) => /socket\(AF_NETLINK, [^)]*NETLINK_SOCK_DIAG\)/.test(l))
    .map((l) => Number(/^\[pid\s+(\d+)\]/.exec(l)?.[1] ?? out.pid));
  return { tids, pid: out.pid, timeWait: out.timeWait };
}

describe.runIf(canUse('ip', 'strace', 'cc'))('collector scrapes against 20,000 TIME_WAIT sockets', () => {
  const ns = new Netns('scrape');
  beforeAll(async () => {
    ns.create();
    ns.sysctl('net.ipv4.ip_local_port_range', '10000 65000');
    ns.sysctl('net.ipv4.tcp_tw_reuse', '0');
    // TIME_WAIT lasts 60 s: every test here finishes well inside it (each checks the count it read).
    await ns.exec(process.execPath, [generator, '--count', '20000', '--addresses', '2', '--ports', '4']);
  }, 60_000);
  afterAll(() => ns.destroy());

  it('the dump runs on another thread, and the event loop keeps turning while it does', async () => {
    const { tids, pid, timeWait } = await traced(ns, 'sequential', 1);
    expect(timeWait).toBe(20_000);
    expect(tids).toHaveLength(1);
    expect(tids[0]).not.toBe(pid);
    const { ticks, timeWait: tw } = JSON.parse(await ns.exec(process.execPath, [fixture, 'ticks']));
    expect(tw).toBe(20_000);
    // A synchronous dump would let no setImmediate run before the scrape resolved.
    expect(ticks).toBeGreaterThan(0);
  });

  it('each scrape dumps once: 3 scrapes, 3 sock_diag sockets (both scopes and the audit share it)', async () => {
    const { tids, timeWait } = await traced(ns, 'sequential', 3);
    expect(timeWait).toBe(20_000);
    expect(tids).toHaveLength(3);
  });

  it('8 concurrent scrapes share one dump', async () => {
    const { tids, timeWait } = await traced(ns, 'concurrent', 8);
    expect(timeWait).toBe(20_000);
    expect(tids).toHaveLength(1);
  });
});

describe('createCollector refuses bad options with a code, before registering anything', () => {
  it.each([
    [null, 'ERR_INVALID_ARG_TYPE'],
    ['x', 'ERR_INVALID_ARG_TYPE'],
    [[], 'ERR_INVALID_ARG_TYPE'],
    [{ registy: {} }, 'ERR_INVALID_ARG_VALUE'],
    [{ registry: {} }, 'ERR_INVALID_ARG_TYPE'],
    [{ prefix: 5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ prefix: 'app-tcp_' }, 'ERR_INVALID_ARG_VALUE'],
    [{ namespace: 'yes' }, 'ERR_INVALID_ARG_TYPE'],
    [{ process: 1 }, 'ERR_INVALID_ARG_TYPE'],
    [{ audit: null }, 'ERR_INVALID_ARG_TYPE'],
    [{ closes: 0 }, 'ERR_INVALID_ARG_TYPE'],
    [{ auditMaxAge: -1 }, 'ERR_OUT_OF_RANGE'],
    [{ auditMaxAge: 2.5 }, 'ERR_OUT_OF_RANGE'],
    [{ auditMaxAge: NaN }, 'ERR_OUT_OF_RANGE'],
    [{ auditMaxAge: '5' }, 'ERR_INVALID_ARG_TYPE'],
    [{ guards: [] }, 'ERR_INVALID_ARG_TYPE'],
    [{ guards: { api: {} } }, 'ERR_INVALID_ARG_TYPE'],
    [{ guards: { api: { stats: () => ({}) } } }, 'ERR_INVALID_ARG_TYPE'],
  ])('%j: %s', async (options, code) => {
    const registry = new Registry();
    const withRegistry =
      options !== null && typeof options === 'object' && !Array.isArray(options) && !('registry' in options) ? { registry, ...options } : options;
    await expect(createCollector(withRegistry as never)).rejects.toMatchObject({ code });
    expect(await registry.getMetricsAsJSON()).toEqual([]);
  });

  it('accepts a real Guard', async () => {
    const registry = new Registry();
    const guard = new Guard(presets.gracefulHeartbeat());
    await expect(createCollector({ registry, guards: { api: guard }, namespace: false, process: false, audit: false, closes: false })).resolves.toMatchObject({
      metrics: expect.arrayContaining(['socktune_guard_connections']),
    });
    guard.close();
  });
});
