// The pre-connect stage: connect() makes the client socket itself (socket, the prebind options,
// IP_BIND_ADDRESS_NO_PORT for a pinned source address) inside Node's own connect, which then binds
// and connects it as its own. strace shows the order on one fd; everything after connect (events,
// errors, happy eyeballs, TLS on top, a policy, agents and undici) is Node's. The ports this saves
// are test/56-ports.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Agent, request as undiciRequest } from 'undici';
import { codes, configure, connect, createAgent, createConnector, createDispatcher, presets, readOptions, type ConnectOptions } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { closeAll, listen, track } from './helpers/sockets.js';
import { traceSyscalls } from './helpers/stage.js';
import { rawServer } from './helpers/http.js';

afterEach(closeAll);

const port = (server: net.Server) => (server.address() as net.AddressInfo).port;

/** Resolves with the socket once connected, or rejects with its error. */
function connected(socket: net.Socket): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe.runIf(canUse('strace'))('what reaches the kernel (strace): socket, options, bind, connect on one fd', () => {
  const syscalls = ['socket', 'setsockopt', 'bind', 'connect'];

  it.each([
    ['IPv4', '', 'AF_INET', 'SOL_IP'],
    ['IPv6', 'v6', 'AF_INET6', 'SOL_IPV6'],
  ])('%s, pinned source address: the options, IP_BIND_ADDRESS_NO_PORT, then bind with port 0 and connect', async (_, family, af, ipLevel) => {
    const { calls, stdout } = await traceSyscalls('prebind-trace.mjs', ['pinned', family], syscalls);
    const { fd, read } = JSON.parse(stdout);
    const onFd = calls.filter((c) => c.includes(`(${fd}, `) || c.endsWith(`= ${fd}`));
    const tos = family === 'v6' ? `setsockopt(${fd}, SOL_IPV6, IPV6_TCLASS, [16], 4) = 0` : `setsockopt(${fd}, SOL_IP, IP_TOS, [16], 4) = 0`;
    expect(onFd.map((c) => c.replace(/\{sa_family=.*\}, \d+\) = .*/, '{...})'))).toEqual([
      `socket(${af}, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_TCP) = ${fd}`,
      `setsockopt(${fd}, SOL_SOCKET, SO_REUSEPORT, [1], 4) = 0`,
      `setsockopt(${fd}, SOL_SOCKET, SO_RCVBUF, [65536], 4) = 0`,
      tos,
      `setsockopt(${fd}, SOL_IP, IP_BIND_ADDRESS_NO_PORT, [1], 4) = 0`,
      // Node's own bind (libuv: SO_REUSEADDR, and IPV6_V6ONLY off for an IPv6 socket)
      `setsockopt(${fd}, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0`,
      ...(family === 'v6' ? [`setsockopt(${fd}, SOL_IPV6, IPV6_V6ONLY, [0], 4) = 0`] : []),
      `bind(${fd}, {...})`,
      `connect(${fd}, {...})`,
    ]);
    void ipLevel;
    // The bind asks for no port: it is chosen at connect.
    expect(onFd.find((c) => c.startsWith('bind('))).toMatch(/sin6?_port=htons\(0\)/);
    expect(onFd.find((c) => c.startsWith('connect('))).toMatch(/EINPROGRESS/);
    expect(read).toMatchObject({ bindAddressNoPort: true, tos: 16, receiveBuffer: 131_072, reusePort: true });
  });

  it('no source address: no bind and no IP_BIND_ADDRESS_NO_PORT; the options before connect', async () => {
    const { calls, stdout } = await traceSyscalls('prebind-trace.mjs', ['free'], syscalls);
    const { fd, read } = JSON.parse(stdout);
    const onFd = calls
      .filter((c) => c.includes(`(${fd}, `) || c.endsWith(`= ${fd}`))
      .map((c) => c.split('(')[0] + (c.includes('setsockopt') ? ` ${c.split(', ')[2]}` : ''));
    expect(onFd).toEqual(['socket', 'setsockopt SO_REUSEPORT', 'setsockopt SO_RCVBUF', 'setsockopt IP_TOS', 'connect']);
    expect(read).toMatchObject({ bindAddressNoPort: false, tos: 16 });
  });

  it('a kernel refusal at the stage (EPERM injected into IP_TOS): the socket fails with the option named and what was set before, and never connects', async () => {
    const probe = await traceSyscalls('prebind-trace.mjs', ['pinned'], syscalls);
    // The third setsockopt of the traced section is IP_TOS.
    const when = probe.setsBefore + 3;
    const { calls, stdout } = await traceSyscalls('prebind-trace.mjs', ['pinned'], syscalls, ['-e', `inject=setsockopt:error=EPERM:when=${when}`]);
    const { error } = JSON.parse(stdout);
    expect(error).toMatchObject({ code: 'EPERM', syscall: 'setsockopt', option: 'IP_TOS', applied: ['SO_REUSEPORT', 'SO_RCVBUF'] });
    expect(calls.find((c) => c.includes('IP_TOS'))).toMatch(/EPERM \(Operation not permitted\) \(INJECTED\)/);
    expect(calls.filter((c) => c.startsWith('bind(') || c.startsWith('connect('))).toEqual([]);
  });
});

describe('a socket of the stage behaves as one Node made', () => {
  it("Node's events, in Node's order, and data both ways", async () => {
    const server = await listen();
    server.on('connection', (s) => s.pipe(s));
    const socket = track(connect({ host: 'localhost', port: port(server), localAddress: '127.0.0.1', prebind: { tos: 8 } }));
    const events: string[] = [];
    for (const e of ['lookup', 'connect', 'ready', 'end', 'close']) socket.on(e, () => events.push(e));
    await once(socket, 'ready');
    socket.end('ping');
    let echoed = '';
    socket.on('data', (d) => (echoed += d));
    await once(socket, 'close');
    expect(echoed).toBe('ping');
    expect(events).toEqual(['lookup', 'connect', 'ready', 'end', 'close']);
  });

  it('a refused connection fails with the error net.connect gives (code, syscall, address, port)', async () => {
    const server = await listen();
    const free = port(server);
    await new Promise<void>((r) => server.close(() => r()));
    const theirs = await new Promise<NodeJS.ErrnoException>((r) => track(net.connect(free, '127.0.0.1')).once('error', r));
    const ours = await new Promise<NodeJS.ErrnoException>((r) => track(connect({ host: '127.0.0.1', port: free, prebind: { tos: 8 } })).once('error', r));
    const shape = (e: NodeJS.ErrnoException & { address?: string; port?: number }) => ({
      code: e.code,
      errno: e.errno,
      syscall: e.syscall,
      address: e.address,
      port: e.port,
      message: e.message,
    });
    expect(shape(ours)).toEqual(shape(theirs));
  });

  it('happy eyeballs: when the first address is refused, the next attempt (a new handle) goes through the stage too', async () => {
    const server = await listen('127.0.0.1');
    const lookup: ConnectOptions['lookup'] = (_host, _opts, cb) =>
      (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [
        { address: '::1', family: 6 },
        { address: '127.0.0.1', family: 4 },
      ]);
    const socket = track(connect({ host: 'both.test', port: port(server), lookup, autoSelectFamily: true, prebind: { tos: 8 } }));
    await connected(socket);
    expect(socket.autoSelectFamilyAttemptedAddresses).toEqual([`::1:${port(server)}`, `127.0.0.1:${port(server)}`]);
    expect(readOptions(socket).tos).toBe(8);
  });

  it('a bind the kernel refuses (an address not of this host) fails as Node reports it: bind EADDRNOTAVAIL', async () => {
    const server = await listen();
    const err = await new Promise<NodeJS.ErrnoException & { address?: string }>((r) =>
      track(connect({ host: '127.0.0.1', port: port(server), localAddress: '192.0.2.1' })).once('error', r),
    );
    const node = await new Promise<NodeJS.ErrnoException & { address?: string }>((r) =>
      track(net.connect({ host: '127.0.0.1', port: port(server), localAddress: '192.0.2.1' })).once('error', r),
    );
    expect({ code: err.code, syscall: err.syscall, address: err.address }).toEqual({ code: 'EADDRNOTAVAIL', syscall: 'bind', address: '192.0.2.1' });
    expect({ code: node.code, syscall: node.syscall, address: node.address }).toEqual({ code: err.code, syscall: err.syscall, address: err.address });
  });

  it('TLS on top: tls.connect({ socket }) over a socket of the stage', async () => {
    const dir = fileURLToPath(new URL('./fixtures/tls/', import.meta.url));
    const server = track(tls.createServer({ key: readFileSync(dir + 'key.pem'), cert: readFileSync(dir + 'cert.pem') }, (s) => s.end('over tls')));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const raw = connect({ host: '127.0.0.1', port: port(server), localAddress: '127.0.0.1' });
    const secure = track(tls.connect({ socket: raw, rejectUnauthorized: false }));
    let text = '';
    secure.on('data', (d) => (text += d));
    await once(secure, 'end');
    expect(text).toBe('over tls');
    expect(readOptions(raw).bindAddressNoPort).toBe(true);
  });

  it('a policy: tune()d as given, its keepalive held from connect', async () => {
    const server = await listen();
    const keepAlive = { idle: 7000, interval: 2000, count: 4 };
    const socket = track(connect({ host: '127.0.0.1', port: port(server), localAddress: '127.0.0.1', policy: presets.gracefulHeartbeat({ keepAlive }) }));
    await connected(socket);
    expect(readOptions(socket)).toMatchObject({ keepAlive, userTimeout: 15_000, bindAddressNoPort: true });
  });

  it("bindAddressNoPort: false keeps Node's bind that reserves a port; a localPort is bound as given", async () => {
    const server = await listen();
    const off = track(connect({ host: '127.0.0.1', port: port(server), localAddress: '127.0.0.1', prebind: { bindAddressNoPort: false, tos: 4 } }));
    await connected(off);
    expect(readOptions(off)).toMatchObject({ bindAddressNoPort: false, tos: 4 });
    const probe = await listen();
    const fixed = port(probe);
    await new Promise<void>((r) => probe.close(() => r()));
    const pinned = track(connect({ host: '127.0.0.1', port: port(server), localAddress: '127.0.0.1', localPort: fixed }));
    await connected(pinned);
    expect(pinned.localPort).toBe(fixed);
  });
});

describe('the stage in pools and process-wide', () => {
  it('createAgent with localAddress: every socket binds without reserving a port', async () => {
    const { port: p } = await rawServer();
    const agent = createAgent(presets.gracefulHeartbeat(), { localAddress: '127.0.0.1' });
    const sockets: net.Socket[] = [];
    await Promise.all(
      [1, 2].map(
        () =>
          new Promise<void>((resolve, reject) => {
            const req = http.get({ host: '127.0.0.1', port: p, agent }, (res) => res.resume().on('end', resolve));
            req.on('socket', (s: net.Socket) => s.once('connect', () => sockets.push(s)));
            req.on('error', reject);
          }),
      ),
    );
    expect(sockets.map((s) => readOptions(s).bindAddressNoPort)).toEqual([true, true]);
    agent.destroy();
  });

  it('a plain http.Agent with connect() as its createConnection', async () => {
    const { port: p } = await rawServer();
    const agent = new http.Agent({ keepAlive: true, localAddress: '127.0.0.1' });
    agent.createConnection = connect as unknown as typeof agent.createConnection;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: p, agent }, (res) => res.resume().on('end', () => resolve(req.socket as net.Socket)));
      req.on('error', reject);
    });
    expect(readOptions(socket).bindAddressNoPort).toBe(true);
    agent.destroy();
  });

  it("undici: createDispatcher's connections with localAddress bind without reserving a port", async () => {
    const { port: p } = await rawServer();
    let seen: net.Socket | undefined;
    const connector = createConnector(presets.gracefulHeartbeat());
    const dispatcher = new Agent({
      localAddress: '127.0.0.1',
      connect: (options, cb) =>
        connector(options, (err, socket) => {
          seen = socket as net.Socket;
          cb(err as never, socket as never);
        }),
    });
    const res = await undiciRequest(`http://127.0.0.1:${p}/`, { dispatcher });
    await res.body.dump();
    expect(readOptions(seen!).bindAddressNoPort).toBe(true);
    await dispatcher.close();
    const policyDispatcher = createDispatcher(presets.gracefulHeartbeat(), { localAddress: '127.0.0.1' });
    await (await undiciRequest(`http://127.0.0.1:${p}/`, { dispatcher: policyDispatcher })).body.dump();
    const [tracked] = policyDispatcher.guard.trackedSockets();
    expect(readOptions(tracked).bindAddressNoPort).toBe(true);
    await policyDispatcher.close();
  });
});

describe('validation: before anything is opened, by name', () => {
  const where = { host: '127.0.0.1', port: 9 };
  it.each([
    [{ deferAccept: 1000 }, codes.STAGE, /TCP_DEFER_ACCEPT is a listener's option/],
    [{ localPortRange: { min: 40_000, max: 40_000 } }, 'ERR_OUT_OF_RANGE', /localPortRange\.max/],
    [{ localPortRange: { min: 0, max: 40_000 } }, 'ERR_OUT_OF_RANGE', /localPortRange\.min/],
    [{ localPortRange: { min: 40_000, max: 65_536 } }, 'ERR_OUT_OF_RANGE', /localPortRange\.max/],
    [{ localPortRange: { min: 40_000 } }, 'ERR_INVALID_ARG_VALUE', /needs both min and max/],
    [{ localPortRange: { min: 1.5, max: 40_000 } }, 'ERR_OUT_OF_RANGE', /localPortRange\.min/],
    [{ localPortRange: { min: 40_000, max: 40_001, step: 1 } }, 'ERR_INVALID_ARG_VALUE', /has no option 'step'/],
    [{ localPortRange: true }, 'ERR_INVALID_ARG_TYPE', /false or a plain object/],
    [{ bindAddressNoPort: 1 }, 'ERR_INVALID_ARG_TYPE', /bindAddressNoPort/],
    [{ receiveBuffer: 0 }, 'ERR_OUT_OF_RANGE', /receiveBuffer/],
    [{ tos: 256 }, 'ERR_OUT_OF_RANGE', /tos/],
    [{ localPortRang: { min: 1, max: 2 } }, 'ERR_INVALID_ARG_VALUE', /did you mean 'localPortRange'/],
  ])('prebind %j: %s', (prebind, code, message) => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'TCPWRAP').length;
    expect(() => connect({ ...where, prebind } as ConnectOptions)).toThrow(expect.objectContaining({ code, message: expect.stringMatching(message) }));
    expect(process.getActiveResourcesInfo().filter((r) => r === 'TCPWRAP').length).toBe(before);
  });

  it('the stage-only options on a live socket: ERR_SOCKTUNE_STAGE, naming the stage that takes them', async () => {
    const server = await listen();
    const socket = track(net.connect(port(server), '127.0.0.1'));
    await connected(socket);
    expect(() => configure(socket, { bindAddressNoPort: true })).toThrow(
      expect.objectContaining({ code: codes.STAGE, message: expect.stringMatching(/IP_BIND_ADDRESS_NO_PORT takes effect only before bind.*prebind/) }),
    );
    expect(() => configure(socket, { localPortRange: { min: 40_000, max: 40_999 } })).toThrow(
      expect.objectContaining({ code: codes.STAGE, message: expect.stringMatching(/IP_LOCAL_PORT_RANGE takes effect only before connect/) }),
    );
    // The others are set on a live socket as well.
    configure(socket, { tos: 4, receiveBuffer: 32_768 });
    expect(readOptions(socket)).toMatchObject({ tos: 4, receiveBuffer: 65_536 });
  });

  it('options.path (a Unix-domain socket) is not a TCP connection', () => {
    expect(() => connect({ path: '/tmp/x' } as never)).toThrow(expect.objectContaining({ code: codes.NOT_TCP }));
  });
});
