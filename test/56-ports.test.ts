// Ports that never run out. A client that pins its source address (`localAddress`) makes Node
// bind() before connect(), which reserves a port for every destination alike: a 1,000-port range
// holds 1,000 connections in all, whatever the destinations. At the pre-connect stage the port is
// chosen at connect, per destination (IP_BIND_ADDRESS_NO_PORT): 1,000 to each. And
// IP_LOCAL_PORT_RANGE gives each process its own slice of the range. Client and servers sit in two
// namespaces of the test's own joined by a veth pair, the client's range narrowed to 1,000 ports;
// each arm gets fresh namespaces (the ports one arm leaves in TIME_WAIT would decide the next).
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { canUse } from './helpers/env.js';
import { NsPair } from './helpers/stage.js';

const run = promisify(execFile);
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const register = fileURLToPath(new URL('../dist/register/index.js', import.meta.url));
const RANGE = { min: 40_000, max: 40_999 };
const DESTINATIONS = 10;

interface Held {
  held: number;
  error?: { code: string; syscall: string; message: string };
  perDestination: Record<string, number>;
  registered?: { opened: number; tuned: number };
}

let pairs: NsPair[] = [];
let subnet = 30;
afterEach(async () => {
  await Promise.all(pairs.map((p) => p.destroy()));
  pairs = [];
});

/** Fresh namespaces: the client's range narrowed to 1,000 ports, `DESTINATIONS` servers in the other. */
async function setup(mode: 'hold' | 'greet'): Promise<{ pair: NsPair; ports: number[] }> {
  const pair = new NsPair(`pt${subnet}`, subnet++).create();
  pairs.push(pair);
  pair.cli.sysctl('net.ipv4.ip_local_port_range', `${RANGE.min} ${RANGE.max}`);
  const { ready } = await pair.srv.start(fixture('port-servers.mjs'), [pair.srvAddr, String(DESTINATIONS), mode]);
  return { pair, ports: (JSON.parse(ready) as { ports: number[] }).ports };
}

async function hold(mode: 'node' | 'connect' | 'register'): Promise<Held> {
  const { pair, ports } = await setup('hold');
  const args = [fixture('port-hold.mjs'), mode === 'connect' ? 'connect' : 'node', pair.cliAddr, pair.srvAddr, JSON.stringify(ports), '15000'];
  const env: NodeJS.ProcessEnv = { ...process.env, ...(mode === 'register' ? { SOCKTUNE_POLICY: 'gracefulHeartbeat' } : {}) };
  delete env.NODE_OPTIONS;
  const { stdout } = await run('ip', ['netns', 'exec', pair.cli.name, process.execPath, ...(mode === 'register' ? ['--import', register] : []), ...args], {
    env,
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout) as Held;
}

describe.runIf(canUse('ip', 'ss', 'sysctl'))('a pinned source address, a 1,000-port range, 10 destinations: connections held before the first error', () => {
  let alone: Held;

  it('control, Node alone: 1,000 in all, then every destination fails (bind reserves the port for all of them)', async () => {
    alone = await hold('node');
    expect(alone.held).toBeLessThanOrEqual(1000);
    expect(alone.held).toBeGreaterThan(900);
    expect(['EADDRINUSE', 'EADDRNOTAVAIL']).toContain(alone.error?.code);
    // The range is spent on all destinations together: none got more than a tenth.
    for (const n of Object.values(alone.perDestination)) expect(n).toBeLessThanOrEqual(100);
  }, 60_000);

  it("connect(): the port is chosen per destination at connect, 1,000 to each (goal: at least 5× Node's)", async () => {
    const staged = await hold('connect');
    expect(staged.held).toBeGreaterThanOrEqual(5 * alone.held);
    expect(staged.held).toBeGreaterThan(9000);
    expect(staged.error?.code).toBe('EADDRNOTAVAIL');
    for (const n of Object.values(staged.perDestination)) expect(n).toBeGreaterThan(900);
    console.log(`connections held: Node alone ${alone.held} (${alone.error?.code}), connect() ${staged.held} (${(staged.held / alone.held).toFixed(1)}×)`);
  }, 60_000);

  it("socktune/register (SOCKTUNE_POLICY=gracefulHeartbeat): the same for the application's own net.connect", async () => {
    const registered = await hold('register');
    expect(registered.held).toBeGreaterThanOrEqual(5 * alone.held);
    expect(registered.registered?.tuned).toBe(registered.held);
  }, 60_000);
});

describe.runIf(canUse('ip', 'ss', 'sysctl'))('IP_LOCAL_PORT_RANGE: each process its own slice of the range', () => {
  it('two processes, 500-port slices, 10,000 short connections each to 10 destinations (this side closes first): no port outside its slice, 0 EADDRNOTAVAIL', async () => {
    const { pair, ports } = await setup('greet');
    // connect() reuses a port whose TIME_WAIT is over a second old (timestamps on).
    pair.cli.sysctl('net.ipv4.tcp_tw_reuse', '1');
    const slices = ['40000-40499', '40500-40999'];
    const results = await Promise.all(
      slices.map(async (slice) => {
        const out = await pair.cli.exec(
          process.execPath,
          [fixture('port-churn.mjs'), pair.cliAddr, pair.srvAddr, JSON.stringify(ports), '10000', slice, '32'],
          { timeout: 120_000 },
        );
        return JSON.parse(out) as { done: number; errors: Record<string, number>; outside: number };
      }),
    );
    for (const r of results) expect(r).toMatchObject({ done: 10_000, errors: {}, outside: 0 });
    // The kernel's view: every TIME_WAIT this side holds is inside the range, and both slices are used.
    const local = (await pair.cli.exec('ss', ['-Htan', 'state', 'time-wait']))
      .split('\n')
      .filter(Boolean)
      .map((l) => Number(l.trim().split(/\s+/)[2].split(':').pop()));
    expect(local.length).toBeGreaterThan(100);
    expect(local.every((p) => p >= RANGE.min && p <= RANGE.max)).toBe(true);
    expect(local.some((p) => p < 40_500) && local.some((p) => p >= 40_500)).toBe(true);
  }, 180_000);

  it('a kernel before 6.3 (uname made to say 2.6 by setarch): IP_LOCAL_PORT_RANGE is refused by name before anything is opened', async () => {
    const script = `
      import { connect } from ${JSON.stringify(fileURLToPath(new URL('../dist/index.js', import.meta.url)))};
      try { connect({ host: '127.0.0.1', port: 9, prebind: { localPortRange: { min: 40000, max: 40999 } } }); console.log('{}'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const { stdout } = await run('setarch', [
      process.arch === 'arm64' ? 'aarch64' : 'x86_64',
      '--uname-2.6',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({
      code: 'ERR_SOCKTUNE_UNSUPPORTED',
      message: expect.stringMatching(/^IP_LOCAL_PORT_RANGE needs Linux 6\.3 or later; this kernel is 2\.6\./),
    });
  });
});
