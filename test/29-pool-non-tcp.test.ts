// Pools and connections a policy cannot apply to (design rule 7): a Unix-domain socket, or a
// stream a user's createConnection / connector returns, goes through every pool entry point
// exactly as through Node's agent or undici's Agent: no policy, no stale check, no idle limit of
// the policy, pooled and reused (5 requests, 1 connection), counted in guard.stats().untuned.
// Each case runs the same requests through the plain Node/undici pool as the control.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import { once } from 'node:events';
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import {
  PolicyAgent,
  PolicyHttpsAgent,
  createAgent,
  createConnector,
  createDispatcher,
  createHttpsAgent,
  presets,
  readOptions,
  type Guard,
} from '../src/index.js';
import { pools, undiciConnections } from './helpers/pools.js';
import { freed, rawServer, request, unixServer } from './helpers/http.js';

const keepAlive = { idle: 7000, interval: 2000, count: 4 };
// A policy with every part that could touch a connection: kernel options, RST on close,
// deadlines, a short pool idle limit.
const policy = presets.gracefulHeartbeat(presets.rstOnClose({ keepAlive, poolIdleTimeout: 200, halfCloseTimeout: 100, scanInterval: 50 }));

const keep = pools();

/** No close of any kind by the guard: nothing stale, idle, half-closed, ... */
function untouched(guard: Guard, untuned: number): void {
  const stats = guard.stats();
  expect(stats).toMatchObject({ tracked: 0, seen: 0, untuned });
  expect(Object.values(stats.closed).every((n) => n === 0)).toBe(true);
}

interface Run {
  connections: number;
  reused: boolean[];
  bodies: string[];
}

/** `n` requests one after the other, each after the previous socket went back to the pool. */
async function sequential(agent: http.Agent, options: https.RequestOptions, client: typeof http | typeof https, peers: net.Socket[], n = 5): Promise<Run> {
  const run: Run = { connections: 0, reused: [], bodies: [] };
  for (let i = 0; i < n; i++) {
    const got = await request({ ...options, agent }, client);
    run.reused.push(got.reused);
    run.bodies.push(got.body);
    expect(await freed(agent, got.socket)).toBe('free');
  }
  run.connections = peers.length;
  return run;
}

const pooled: Run = { connections: 1, reused: [false, true, true, true, true], bodies: Array(5).fill('ok') };

describe('http.Agent pools: socketPath', () => {
  const cases = [
    { name: 'createAgent, HTTP', tls: false, client: http, make: () => createAgent(policy), control: () => new http.Agent({ keepAlive: true }) },
    { name: 'createHttpsAgent, HTTPS', tls: true, client: https, make: () => createHttpsAgent(policy), control: () => new https.Agent({ keepAlive: true }) },
  ];

  it.each(cases)("$name: 5 requests over 1 connection, as Node's agent; untuned, no guard close", async ({ tls: secure, client, make, control }) => {
    const server = await unixServer({ tls: secure });
    const options = { socketPath: server.path, rejectUnauthorized: false };
    const node = await sequential(keep(control()), options, client, server.peers);
    expect(node).toEqual(pooled);
    server.peers.length = 0;
    const agent = keep(make());
    expect(await sequential(agent, options, client, server.peers)).toEqual(node);
    untouched(agent.guard, 1);
    expect(agent.staleDropped).toBe(0);
  });

  it("no idle limit of the policy: a free Unix-domain socket keeps Node's timeout (none) while a TCP one of the same agent gets poolIdleTimeout", async () => {
    const unix = await unixServer();
    const tcp = await rawServer();
    const agent = keep(createAgent(policy));
    const overUnix = await request({ socketPath: unix.path, agent });
    const overTcp = await request({ host: '127.0.0.1', port: tcp.port, agent });
    await freed(agent, overUnix.socket);
    await freed(agent, overTcp.socket);
    expect(overUnix.socket.timeout ?? 0).toBe(0);
    expect(overTcp.socket.timeout).toBe(200);
    // The TCP connection carries the policy and is tracked; the Unix-domain one is only counted.
    expect(readOptions(overTcp.socket)).toMatchObject({ keepAlive });
    expect(agent.guard.stats()).toMatchObject({ tracked: 1, untuned: 1 });
    // The TCP socket leaves at its limit; the Unix-domain socket is still pooled after it.
    await once(overTcp.socket, 'close');
    expect(overUnix.socket.destroyed).toBe(false);
    expect(Object.values(agent.freeSockets).flat()).toEqual([overUnix.socket]);
    const again = await request({ socketPath: unix.path, agent });
    expect(again.socket).toBe(overUnix.socket);
    expect(again.reused).toBe(true);
  });

  it('RST-on-close does not touch a Unix-domain socket: agent.destroy() ends it with FIN, the server reads EOF', async () => {
    const server = await unixServer();
    const agent = createAgent(policy);
    const got = await request({ socketPath: server.path, agent });
    await freed(agent, got.socket);
    const [peer] = server.peers;
    const ended = once(peer, 'end');
    const closed = once(got.socket, 'close');
    agent.destroy();
    await ended;
    expect(await closed).toEqual([false]);
    expect(peer.errored).toBeNull();
  });
});

/** A Duplex that is not a net.Socket, carrying bytes to and from `inner`: a user's own transport. */
class Tunnel extends Duplex {
  timeout = 0;
  constructor(readonly inner: net.Socket) {
    super();
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (err) => this.destroy(err));
    inner.on('close', () => this.destroy());
  }
  override _read(): void {
    this.inner.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.inner.write(chunk, cb);
  }
  override _final(cb: () => void): void {
    this.inner.end(cb);
  }
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.inner.destroy();
    cb(err);
  }
  // What Node's agent and client call on a connection.
  setKeepAlive(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setTimeout(ms: number): this {
    this.timeout = ms;
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}

describe("http.Agent pools: a createConnection of the user's own", () => {
  // How users supply one: a subclass's method (returned or called back), or an own property.
  const makers: Array<[string, (path: string) => http.Agent, (path: string) => http.Agent]> = [
    [
      'a subclass returns a Unix-domain net.Socket',
      (path) =>
        new (class extends PolicyAgent {
          override createConnection(): net.Socket {
            return net.connect(path);
          }
        })(policy),
      (path) =>
        new (class extends http.Agent {
          override createConnection(): net.Socket {
            return net.connect(path);
          }
        })({ keepAlive: true }),
    ],
    [
      'an own createConnection calls back a stream that is not a net.Socket',
      (path) => Object.assign(createAgent(policy), { createConnection: tunnelLater(path) }),
      (path) => Object.assign(new http.Agent({ keepAlive: true }), { createConnection: tunnelLater(path) }),
    ],
    [
      'a subclass returns a TLS socket over a user stream (no TCP handle under it)',
      (path) =>
        new (class extends PolicyHttpsAgent {
          override createConnection(options: tls.ConnectionOptions): tls.TLSSocket {
            return tls.connect({ ...options, socket: new Tunnel(net.connect(path)) });
          }
        })(policy),
      (path) =>
        new (class extends https.Agent {
          override createConnection(options: tls.ConnectionOptions): tls.TLSSocket {
            return tls.connect({ ...options, socket: new Tunnel(net.connect(path)) });
          }
        })({ keepAlive: true }),
    ],
  ];

  function tunnelLater(path: string) {
    return (_options: unknown, cb: (err: Error | null, stream?: Duplex) => void): undefined => {
      const inner = net.connect(path, () => cb(null, new Tunnel(inner)));
      return undefined;
    };
  }

  it.each(makers)("%s: 5 requests over 1 connection as with Node's agent; untuned, never dropped as stale", async (name, make, control) => {
    const secure = name.includes('TLS');
    const client = secure ? https : http;
    const server = await unixServer({ tls: secure });
    const options = { host: 'localhost', port: 1, rejectUnauthorized: false };
    const node = await sequential(keep(control(server.path)), options, client, server.peers);
    expect(node).toEqual(pooled);
    server.peers.length = 0;
    const agent = keep(make(server.path)) as ReturnType<typeof createAgent>;
    expect(await sequential(agent, options, client, server.peers)).toEqual(node);
    untouched(agent.guard, 1);
    expect(agent.staleDropped).toBe(0);
  });
});

describe('undici pools: socketPath', () => {
  const connected = undiciConnections();

  async function five(dispatcher: Dispatcher): Promise<string[]> {
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { body } = await undiciRequest('http://localhost/', { dispatcher });
      bodies.push(await body.text());
    }
    return bodies;
  }

  // One connection per origin (as in undici's own keep-alive tests): a request that arrives while
  // undici still counts the previous one as running would otherwise open a second connection.
  const cases: Array<[string, (path: string) => Dispatcher & { guard: Guard }, (path: string) => Dispatcher]> = [
    [
      'createDispatcher({ socketPath })',
      (path) => createDispatcher(policy, { socketPath: path, connections: 1 }),
      (path) => new Agent({ socketPath: path, connections: 1 }),
    ],
    [
      'createDispatcher({ connect: { socketPath } })',
      (path) => createDispatcher(policy, { connect: { socketPath: path }, connections: 1 }),
      (path) => new Agent({ connect: { socketPath: path }, connections: 1 }),
    ],
    [
      'undici Agent with createConnector(policy, { socketPath })',
      (path) => {
        const connector = createConnector(policy, { socketPath: path });
        return Object.assign(new Agent({ connect: connector, connections: 1 }), { guard: connector.guard });
      },
      (path) => new Agent({ connect: { socketPath: path }, connections: 1 }),
    ],
    [
      "createDispatcher with a connector function of the user's own (Unix-domain net.Socket)",
      (path) =>
        createDispatcher(policy, {
          connect: (_options, cb) => {
            const socket = net.connect(path, () => cb(null, socket));
            socket.once('error', (err) => cb(err, null));
          },
          connections: 1,
        }),
      (path) =>
        new Agent({
          connect: (_options, cb) => {
            const socket = net.connect(path, () => cb(null, socket));
            socket.once('error', (err) => cb(err, null));
          },
          connections: 1,
        }),
    ],
  ];

  it.each(cases)("%s: 5 requests over 1 connection, as undici's own; untuned", async (_name, make, control) => {
    const server = await unixServer();
    expect(await five(keep(control(server.path)))).toEqual(Array(5).fill('ok'));
    const own = server.peers.length;
    expect(own).toBe(1);
    server.peers.length = 0;
    const dispatcher = keep(make(server.path));
    expect(await five(dispatcher)).toEqual(Array(5).fill('ok'));
    expect(server.peers.length).toBe(own);
    untouched(dispatcher.guard, 1);
  });

  it("the pool is undici's own: its keepAliveTimeout is accepted and applies, not the policy's poolIdleTimeout", async () => {
    // No Keep-Alive hint from the server: undici's keepAliveTimeout is what applies.
    const server = await unixServer({ keepAliveTimeout: 0 });
    const dispatcher = keep(createDispatcher(policy, { socketPath: server.path, keepAliveTimeout: 1000, connections: 1 }));
    await five(dispatcher);
    const [socket] = connected;
    const start = performance.now();
    // undici closes it with an InformationalError ('socket idle timeout'): wait for 'close' only.
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
    // undici's 1000 ms (its timer started at the end of the last response, a little before
    // `start`), not the policy's 200 ms: a timer never fires early, so this holds under any load.
    expect(performance.now() - start).toBeGreaterThanOrEqual(900);
    expect(server.peers).toHaveLength(1);
  });
});
