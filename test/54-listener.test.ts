// The listener stage. tuneServer (and socktune/register) put a policy's inheritable options
// (keepalive, TCP_USER_TIMEOUT, TCP_NODELAY; never SO_LINGER) on the listener once, and Linux copies
// them to every connection it accepts: strace counts the setsockopt calls per accepted connection
// (control: the same policy tuned per connection, as before), and every accepted connection's options
// are read back, on whichever Node runs the suite. listen() makes the listening socket natively:
// SO_REUSEPORT on Node 20 (two processes share a port; control: Node's own listen), SO_REUSEADDR,
// TCP_DEFER_ACCEPT, the backlog, before bind.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { codes, configure, listen, presets, readOptions, tuneServer } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { closeAll, track } from './helpers/sockets.js';
import { traceServer, traceSyscalls } from './helpers/stage.js';
import { Netns } from './helpers/netns.js';

afterEach(closeAll);

const register = fileURLToPath(new URL('../dist/register/index.js', import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const port = (server: net.Server) => (server.address() as net.AddressInfo).port;
const COUNT = 400;

/** `n` connections to `p`, one after another, kept open (the server reads each back) until closed by the test. */
async function connections(p: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const c = track(net.connect(p, '127.0.0.1'));
    await once(c, 'connect');
  }
}

interface Report {
  accepted: number;
  carry: number;
  differ: unknown[];
}

async function perAccepted(mode: string, nodeArgs: string[] = [], env: NodeJS.ProcessEnv = process.env) {
  const { report, counts, calls } = await traceServer(
    'listener-app.mjs',
    [mode, String(COUNT)],
    ['setsockopt'],
    async (ready) => connections((JSON.parse(ready) as { port: number }).port, COUNT + 1),
    { nodeArgs, env },
  );
  return { report: JSON.parse(report) as Report, perConnection: (counts.setsockopt ?? 0) / COUNT, calls };
}

describe.runIf(canUse('strace'))('setsockopt per accepted connection (strace), and every accepted connection read back', () => {
  it('control: the policy tuned on each accepted connection, as before: five setsockopt each', async () => {
    const { report, perConnection } = await perAccepted('tune');
    expect(report).toMatchObject({ accepted: COUNT + 1, carry: COUNT + 1 });
    expect(perConnection).toBeGreaterThanOrEqual(5);
  });

  it(`tuneServer: the options go on the listener once; ${COUNT} accepted connections cost no setsockopt (goal ≤ 0.05 each) and all carry them`, async () => {
    const { report, perConnection, calls } = await perAccepted('tuneServer');
    expect(report).toMatchObject({ accepted: COUNT + 1, carry: COUNT + 1, differ: [] });
    expect(perConnection).toBeLessThanOrEqual(0.05);
    expect(calls).toEqual([]);
  });

  it('socktune/register (SOCKTUNE_POLICY=gracefulHeartbeat-like rules): the same for the servers an application makes', async () => {
    const { SOCKTUNE_POLICY: _, ...rest } = process.env;
    const env = { ...rest, SOCKTUNE_CONFIG: fixture('listener-rules.json') };
    delete (env as NodeJS.ProcessEnv).NODE_OPTIONS;
    const { report, perConnection } = await perAccepted('register', ['--import', register], env);
    expect(report).toMatchObject({ accepted: COUNT + 1, carry: COUNT + 1, differ: [] });
    expect(perConnection).toBeLessThanOrEqual(0.05);
  });

  it("an HTTP server: no setsockopt of socktune's; Node's own TCP_NODELAY (http's noDelay default) stays, one per connection", async () => {
    const { report, calls } = await perAccepted('http');
    expect(report).toMatchObject({ accepted: COUNT + 1, carry: COUNT + 1 });
    expect(calls.every((c) => /TCP_NODELAY, \[1\]/.test(c))).toBe(true);
    expect(calls.length).toBe(COUNT);
  });

  it("a server with Node's keepAlive option (Node sets keepalive on each connection itself): the per-connection path, the shorter budget kept as before", async () => {
    const { report, perConnection } = await perAccepted('keepAliveOption');
    // Node's setKeepAlive(true, 1000) is 1 s + 10 × 1 s, shorter than the policy's: it stays (design rule 9).
    expect(report.carry).toBe(0);
    expect(perConnection).toBeGreaterThanOrEqual(1);
  });
});

describe('the listener stage in process', () => {
  it('accepted connections carry the policy from the first one; a listener that listens again gets it again', async () => {
    const server = track(net.createServer((s) => s.on('error', () => {})));
    const keepAlive = { idle: 9000, interval: 3000, count: 2 };
    tuneServer(server, presets.gracefulHeartbeat({ keepAlive }));
    for (let round = 0; round < 2; round++) {
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      expect(readOptions(server)).toMatchObject({ keepAlive, userTimeout: 15_000, linger: false });
      const accepted = once(server, 'connection');
      const c = track(net.connect(port(server), '127.0.0.1'));
      const [s] = (await accepted) as [net.Socket];
      expect(readOptions(s)).toMatchObject({ keepAlive, userTimeout: 15_000, linger: false });
      c.destroy();
      s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('connections queued before the options were on the listener are tuned one by one, the later ones inherit', async () => {
    const server = track(net.createServer());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    // Two connections complete their handshake while this thread is blocked: they wait in the
    // kernel's accept queue, made before tuneServer put anything on the listener.
    const early = spawn(
      process.execPath,
      ['-e', `const n=require('net');for(let i=0;i<2;i++)n.connect(${port(server)},'127.0.0.1').on('connect',()=>console.log('up'));setInterval(()=>{},1e3)`],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    try {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 800);
      const keepAlive = { idle: 11_000, interval: 1000, count: 5 };
      const seen: net.Socket[] = [];
      server.on('connection', (s: net.Socket) => seen.push(track(s)));
      tuneServer(server, presets.gracefulHeartbeat({ keepAlive }));
      while (seen.length < 2) await new Promise((r) => setTimeout(r, 10));
      const late = track(net.connect(port(server), '127.0.0.1'));
      await once(late, 'connect');
      while (seen.length < 3) await new Promise((r) => setTimeout(r, 10));
      for (const s of seen) expect(readOptions(s)).toMatchObject({ keepAlive, userTimeout: 16_000 });
    } finally {
      early.kill('SIGKILL');
    }
  });
});

describe('listen(): the listening socket made natively', () => {
  it.runIf(canUse('strace'))(
    'strace: socket, SO_REUSEADDR, SO_REUSEPORT, TCP_DEFER_ACCEPT and the inheritable options before bind; Node listens with the backlog',
    async () => {
      const { calls, stdout } = await traceSyscalls('listen-trace.mjs', [], ['socket', 'setsockopt', 'bind', 'listen']);
      const { fd, read } = JSON.parse(stdout);
      const onFd = calls
        .filter((c) => (c.startsWith(`socket(`) ? c.endsWith(`= ${fd}`) : c.includes(`(${fd}, `)))
        .map((c) => c.replace(/\s*= .*$/, '').replace(/\{sa_family=.*\}, \d+\)/, '{...})'));
      expect(onFd).toEqual([
        `socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_TCP)`,
        `setsockopt(${fd}, SOL_TCP, TCP_KEEPIDLE, [9], 4)`,
        `setsockopt(${fd}, SOL_SOCKET, SO_KEEPALIVE, [1], 4)`,
        `setsockopt(${fd}, SOL_SOCKET, SO_REUSEPORT, [1], 4)`,
        `setsockopt(${fd}, SOL_TCP, TCP_DEFER_ACCEPT, [2], 4)`,
        `setsockopt(${fd}, SOL_SOCKET, SO_REUSEADDR, [1], 4)`,
        `bind(${fd}, {...})`,
        `listen(${fd}, 77)`,
      ]);
      expect(read).toMatchObject({ reusePort: true, reuseAddress: true, deferAccept: 3000 });
    },
  );

  it('what Node reports as for its own listen(): "listening", address(), connections; EADDRINUSE shaped as Node\'s', async () => {
    const server = track(net.createServer((s) => s.end('hi')));
    const ready = once(server, 'listening');
    expect(listen(server, { host: '127.0.0.1', port: 0 })).toBe(server);
    await ready;
    expect(server.address()).toMatchObject({ address: '127.0.0.1', family: 'IPv4' });
    const c = track(net.connect(port(server), '127.0.0.1'));
    const [data] = await once(c, 'data');
    expect(String(data)).toBe('hi');
    const taken = port(server);
    const mine = track(net.createServer());
    listen(mine, { host: '127.0.0.1', port: taken, prebind: { reuseAddress: true } });
    const [ours] = (await once(mine, 'error')) as [NodeJS.ErrnoException & { address: string; port: number }];
    const theirs = track(net.createServer());
    theirs.listen(taken, '127.0.0.1');
    const [node] = (await once(theirs, 'error')) as [NodeJS.ErrnoException & { address: string; port: number }];
    const shape = (e: typeof node) => ({ code: e.code, errno: e.errno, syscall: e.syscall, address: e.address, port: e.port, message: e.message });
    expect(shape(ours)).toEqual(shape(node));
  });

  it('no host: IPv6 and IPv4 on one socket (:: with IPV6_V6ONLY off), as Node does', async () => {
    const server = track(net.createServer((s) => s.end('x')));
    listen(server, { port: 0 });
    await once(server, 'listening');
    expect(server.address()).toMatchObject({ address: '::' });
    for (const host of ['127.0.0.1', '::1']) {
      const c = track(net.connect(port(server), host));
      await once(c, 'data');
    }
  });

  it('TCP_DEFER_ACCEPT: a connection that sends nothing is not handed to the server; its first data hands it over', async () => {
    const server = track(net.createServer());
    listen(server, { host: '127.0.0.1', port: 0, prebind: { deferAccept: 5000 } });
    await once(server, 'listening');
    let accepted = 0;
    server.on('connection', (s) => {
      accepted++;
      track(s);
    });
    const c = track(net.connect(port(server), '127.0.0.1'));
    await once(c, 'connect');
    await new Promise((r) => setTimeout(r, 500));
    expect(accepted).toBe(0);
    c.write('now');
    await once(server, 'connection');
    expect(accepted).toBe(1);
  });

  it.each([
    [{ port: 0, prebind: { linger: 0 } }, codes.STAGE, /SO_LINGER is never set on a listener/],
    [{ port: 0, prebind: { bindAddressNoPort: true } }, codes.STAGE, /IP_BIND_ADDRESS_NO_PORT takes effect only before bind, never on a listener/],
    [{ port: 0, prebind: { localPortRange: { min: 40_000, max: 40_999 } } }, codes.STAGE, /IP_LOCAL_PORT_RANGE/],
    [{ port: 65_536 }, 'ERR_OUT_OF_RANGE', /options\.port/],
    [{ port: 0, backlog: -1 }, 'ERR_OUT_OF_RANGE', /options\.backlog/],
    [{ port: 0, reusePort: true }, 'ERR_INVALID_ARG_VALUE', /has no option 'reusePort'/],
    [{ port: 0, prebind: { reusePrt: true } }, 'ERR_INVALID_ARG_VALUE', /did you mean 'reusePort'/],
    [{ port: 0, host: '' }, 'ERR_INVALID_ARG_TYPE', /options\.host/],
  ])('%j: %s before anything is opened', (options, code, message) => {
    const server = net.createServer();
    expect(() => listen(server, options as never)).toThrow(expect.objectContaining({ code, message: expect.stringMatching(message) }));
    expect(server.listening).toBe(false);
  });

  it('configure() on a listener: never SO_LINGER is the stage rule; the accepted-connection options are set as before', async () => {
    const server = track(net.createServer());
    listen(server, { host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    configure(server, { deferAccept: 2000, tos: 8 });
    expect(readOptions(server)).toMatchObject({ deferAccept: 3000, tos: 8 });
  });
});

describe.runIf(canUse('ip'))('reusePort on Node 20: two processes share one port', () => {
  it("control: Node's own listen({ reusePort }) in a second process on the port fails with EADDRINUSE on Node < 22.12", async () => {
    const major = Number(process.versions.node.split('.')[0]);
    const minor = Number(process.versions.node.split('.')[1]);
    const ns = new Netns('rpctl').create();
    try {
      const first = JSON.parse((await ns.start(fixture('reuseport-server.mjs'), ['node', '127.0.0.1', '0', 'a'])).ready) as { port: number };
      const second = JSON.parse((await ns.start(fixture('reuseport-server.mjs'), ['node', '127.0.0.1', String(first.port), 'b'])).ready) as {
        port?: number;
        error?: { code: string };
      };
      // Node 22.12 and 23.1 added listen({ reusePort }): there the second process listens too.
      if (major < 22 || (major === 22 && minor < 12)) expect(second.error?.code).toBe('EADDRINUSE');
      else expect(second).toEqual({ port: first.port });
    } finally {
      await ns.destroy();
    }
  });

  it('listen({ prebind: { reusePort } }): both processes listen, 10,000 connections split within 40/60', async () => {
    const ns = new Netns('rpsplit').create();
    try {
      const a = JSON.parse((await ns.start(fixture('reuseport-server.mjs'), ['socktune', '127.0.0.1', '0', 'a'])).ready) as { port: number };
      const b = JSON.parse((await ns.start(fixture('reuseport-server.mjs'), ['socktune', '127.0.0.1', String(a.port), 'b'])).ready) as {
        port?: number;
        error?: unknown;
      };
      expect(b).toEqual({ port: a.port });
      const out = await ns.exec(process.execPath, [fixture('reuseport-client.mjs'), '127.0.0.1', String(a.port), '10000', '32'], { timeout: 120_000 });
      const tally = JSON.parse(out) as Record<string, number>;
      expect((tally.a ?? 0) + (tally.b ?? 0)).toBe(10_000);
      const share = (tally.a ?? 0) / 10_000;
      console.log(`reusePort split over 10,000 connections: a ${tally.a}, b ${tally.b}`);
      expect(share).toBeGreaterThanOrEqual(0.4);
      expect(share).toBeLessThanOrEqual(0.6);
    } finally {
      await ns.destroy();
    }
  }, 180_000);
});
