// The policy agents as drop-ins for Node's: every createConnection call form Node's agents take
// (Node's test-https-agent-create-connection), the keepSocketAlive veto of a base class or a
// subclass, idle limits the user set are limits (hint or not; undici too), methods that work when
// another class borrows them (agentkeepalive copies https.Agent.prototype.createConnection), and
// one definition of the pool behaviour over both base classes (every table runs both agents).
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, errors as undiciErrors, request as undiciRequest, type Dispatcher } from 'undici';
import { PolicyAgent, PolicyHttpsAgent, createAgent, createDispatcher, createHttpsAgent, presets, readOptions } from '../src/index.js';
import { track } from './helpers/sockets.js';
import { pools, undiciConnections } from './helpers/pools.js';
import { catchError } from './helpers/errors.js';
import { freed, rawServer, request, unixServer } from './helpers/http.js';

const keepAlive = { idle: 7000, interval: 2000, count: 4 };
const policy = presets.gracefulHeartbeat({ keepAlive });
const held = { keepAlive, userTimeout: 15_000 };

const keep = pools();

/** The two policy agents with their Node counterparts: every behaviour below is checked on both. */
const kinds = [
  { kind: 'http', secure: false, client: http, make: createAgent, Node: http.Agent },
  { kind: 'https', secure: true, client: https, make: createHttpsAgent, Node: https.Agent },
] as const;

/** Sends a request by hand on a connection `createConnection` returned; resolves with the status line or the error code. */
function exchange(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (got += d));
    socket.on('end', () => resolve(got.split('\r\n')[0]));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.once(socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect', () =>
      socket.end('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'),
    );
  });
}

/** Deep-frozen, so a form that writes into the caller's options throws. */
function frozen<T extends object>(o: T): T {
  return Object.freeze(o);
}

describe("createConnection: every call form of Node's agents", () => {
  // https.Agent's forms, as Node's test-https-agent-create-connection calls them. The agent key
  // makes Node look up a cached TLS session, as an agent's own call does.
  const httpsForms: Array<[string, (port: number, agent: https.Agent) => net.Socket]> = [
    ['(options)', (port, a) => call(a, frozen({ port, host: 'localhost', rejectUnauthorized: false, _agentKey: a.getName({ port, host: 'localhost' }) }))],
    ['(port, options)', (port, a) => call(a, port, frozen({ rejectUnauthorized: false, _agentKey: a.getName({ port, host: 'localhost' }) }))],
    [
      '(port, host, options)',
      (port, a) => call(a, port, 'localhost', frozen({ rejectUnauthorized: false, _agentKey: a.getName({ port, host: 'localhost' }) })),
    ],
    ['(port, host, options) without an agent key', (port, a) => call(a, port, 'localhost', frozen({ rejectUnauthorized: false }))],
    [
      '(port, host, frozen options with another port): the options are not written to',
      (port, a) => call(a, port, 'localhost', frozen({ port: 3000, rejectUnauthorized: false })),
    ],
    ['(port, host, null): the certificate is checked', (port, a) => call(a, port, 'localhost', null)],
    ['(port, host, undefined): the certificate is checked', (port, a) => call(a, port, 'localhost', undefined)],
  ];

  function call(agent: http.Agent, ...args: unknown[]): net.Socket {
    return track((agent as unknown as { createConnection: (...a: unknown[]) => net.Socket }).createConnection(...args));
  }

  it.each(httpsForms)('https %s: the same outcome as https.Agent, and a tuned connection', async (_form, connect) => {
    const { port } = await rawServer('Connection: close\r\n', { tls: true });
    const nodeOutcome = await exchange(connect(port, keep(new https.Agent())));
    const agent = keep(createHttpsAgent(policy));
    const socket = connect(port, agent);
    let atConnect: unknown;
    socket.once('connect', () => (atConnect = readOptions(socket)));
    expect(await exchange(socket)).toBe(nodeOutcome);
    expect(nodeOutcome).toMatch(/^HTTP\/1\.1 200 OK$|^DEPTH_ZERO_SELF_SIGNED_CERT$/);
    expect(atConnect).toMatchObject(held);
    expect(agent.guard.stats().seen).toBe(1);
  });

  // http.Agent's createConnection is net.createConnection: its forms, with a connect listener.
  const httpForms: Array<[string, (port: number, path: string, agent: http.Agent, onConnect: () => void) => net.Socket]> = [
    ['(options, listener)', (port, _p, a, cb) => call(a, { port, host: '127.0.0.1' }, cb)],
    ['(port, host, listener)', (port, _p, a, cb) => call(a, port, '127.0.0.1', cb)],
    ['(options) without a listener', (port, _p, a, cb) => call(a, { port, host: '127.0.0.1' }).once('connect', cb)],
    ['(path, listener) to a Unix-domain socket: untouched', (_port, path, a, cb) => call(a, path, cb)],
  ];

  it.each(httpForms)('http %s: connects, the listener runs once, TCP is tuned', async (form, connect) => {
    const { port } = await rawServer('Connection: close\r\n');
    const unix = await unixServer();
    const agent = keep(createAgent(policy));
    for (const a of [keep(new http.Agent()), agent]) {
      let calls = 0;
      const socket = connect(port, unix.path, a, () => calls++);
      expect(await exchange(socket)).toBe('HTTP/1.1 200 OK');
      expect(calls).toBe(1);
    }
    const unixForm = form.includes('Unix');
    expect(agent.guard.stats()).toMatchObject({ seen: unixForm ? 0 : 1, untuned: unixForm ? 1 : 0 });
  });
});

describe('keepSocketAlive: a veto stands', () => {
  it.each(kinds)("$kind: a subclass that returns false after the policy agent's answer: never pooled", async ({ secure, client }) => {
    const { port } = await rawServer('', { tls: secure });
    const Base = secure ? PolicyHttpsAgent : PolicyAgent;
    const agent = keep(
      new (class extends Base {
        override keepSocketAlive(socket: net.Socket): boolean {
          // Node's keepSocketAlive returns a boolean (typed void in @types/node).
          return (super.keepSocketAlive(socket) as unknown as boolean) && false;
        }
      })(policy),
    );
    const options = { host: '127.0.0.1', port, agent, rejectUnauthorized: false };
    const first = await request(options, client);
    expect(await freed(agent, first.socket)).toBe('dropped');
    const second = await request(options, client);
    expect(second.reused).toBe(false);
    expect(second.socket).not.toBe(first.socket);
  });

  it.each(kinds)(
    "$kind: the base class returns false (http.Agent.prototype.keepSocketAlive patched, as agentkeepalive's tests do): never pooled",
    async ({ secure, client, make }) => {
      const { port } = await rawServer('', { tls: secure });
      const agent = keep(make(policy));
      const original = http.Agent.prototype.keepSocketAlive;
      http.Agent.prototype.keepSocketAlive = () => false;
      try {
        const first = await request({ host: '127.0.0.1', port, agent, rejectUnauthorized: false }, client);
        expect(await freed(agent, first.socket)).toBe('dropped');
        expect(Object.keys(agent.freeSockets)).toEqual([]);
      } finally {
        http.Agent.prototype.keepSocketAlive = original;
      }
    },
  );

  it.each(kinds)(
    "$kind: Node's own veto (Keep-Alive: timeout=1) stands even with poolIdleMargin 0, as in Node's agent",
    async ({ secure, client, make, Node }) => {
      const { port } = await rawServer('Keep-Alive: timeout=1\r\n', { tls: secure });
      for (const agent of [keep(new Node({ keepAlive: true })), keep(make(presets.gracefulHeartbeat({ keepAlive, poolIdleMargin: 0 })))]) {
        const got = await request({ host: '127.0.0.1', port, agent, rejectUnauthorized: false }, client);
        expect(await freed(agent, got.socket)).toBe('dropped');
      }
    },
  );
});

describe('idle limits the user set are limits', () => {
  // The socket's timeout after release is the pool idle limit (the agent destroys a free socket
  // on 'timeout'): read it, for every combination, on both agents.
  const limits = [
    {
      name: 'poolIdleTimeout 300 given, server hint timeout=5: 300 (the hint does not lift it)',
      hint: 'Keep-Alive: timeout=5\r\n',
      overrides: { poolIdleTimeout: 300 },
      options: {},
      limit: 300,
    },
    { name: 'poolIdleTimeout 300 given, no hint: 300', hint: '', overrides: { poolIdleTimeout: 300 }, options: {}, limit: 300 },
    {
      name: "poolIdleTimeout 3000 given (the default's value), hint timeout=60: 3000",
      hint: 'Keep-Alive: timeout=60\r\n',
      overrides: { poolIdleTimeout: 3000 },
      options: {},
      limit: 3000,
    },
    { name: 'defaults, hint timeout=5: 3000 (the 2 s margin)', hint: 'Keep-Alive: timeout=5\r\n', overrides: {}, options: {}, limit: 3000 },
    {
      name: 'defaults, hint timeout=60: 58000 (the default gives way to the hint)',
      hint: 'Keep-Alive: timeout=60\r\n',
      overrides: {},
      options: {},
      limit: 58_000,
    },
    { name: 'defaults, no hint: poolIdleTimeout 3000', hint: '', overrides: {}, options: {}, limit: 3000 },
    { name: 'agent timeout 1000, no hint: 1000', hint: '', overrides: {}, options: { timeout: 1000 }, limit: 1000 },
    {
      name: 'freeSocketTimeout 30000, no hint: 30000 (in place of poolIdleTimeout)',
      hint: '',
      overrides: {},
      options: { freeSocketTimeout: 30_000 },
      limit: 30_000,
    },
    {
      name: 'freeSocketTimeout 30000, hint timeout=5: 3000 (before the server)',
      hint: 'Keep-Alive: timeout=5\r\n',
      overrides: {},
      options: { freeSocketTimeout: 30_000 },
      limit: 3000,
    },
    {
      name: 'freeSocketTimeout 500 and agent timeout 100: 500 (timeout bounds sockets in use)',
      hint: '',
      overrides: {},
      options: { freeSocketTimeout: 500, timeout: 100 },
      limit: 500,
    },
  ];
  const table = kinds.flatMap((k) => limits.map((l) => ({ ...k, ...l })));

  it.each(table)('$kind: $name', async ({ secure, client, make, hint, overrides, options, limit }) => {
    const { port } = await rawServer(hint, { tls: secure });
    const agent = keep(make(presets.gracefulHeartbeat({ keepAlive, ...overrides }), options));
    const got = await request({ host: '127.0.0.1', port, agent, rejectUnauthorized: false }, client);
    expect(await freed(agent, got.socket)).toBe('free');
    expect(got.socket.timeout).toBe(limit);
  });

  it.each(kinds)(
    '$kind: poolIdleTimeout 300 with hint timeout=5: the client closes the socket at its limit (FIN to the server)',
    async ({ secure, client, make }) => {
      const { port, peers } = await rawServer('Keep-Alive: timeout=5\r\n', { tls: secure });
      const agent = keep(make(presets.gracefulHeartbeat({ keepAlive, poolIdleTimeout: 300 })));
      const got = await request({ host: '127.0.0.1', port, agent, rejectUnauthorized: false }, client);
      await freed(agent, got.socket);
      const start = performance.now();
      const ended = once(peers[0], 'end');
      await once(got.socket, 'close');
      // A timer never fires early: at least the limit, measured from after the release.
      expect(performance.now() - start).toBeGreaterThanOrEqual(295);
      await ended;
      expect(agent.guard.stats().seen).toBe(1);
    },
  );

  describe('createDispatcher', () => {
    const connected = undiciConnections();

    async function get(url: string, dispatcher: Dispatcher): Promise<string> {
      const { body } = await undiciRequest(url, { dispatcher });
      return body.text();
    }

    it("poolIdleTimeout 300 given, server hint timeout=5: evicted at 300 ms, not at the hint's 3 s", async () => {
      const { url } = await rawServer('Keep-Alive: timeout=5\r\n');
      const dispatcher = keep(createDispatcher(presets.gracefulHeartbeat({ keepAlive, poolIdleTimeout: 300 }), { connections: 1 }));
      expect(await get(url, dispatcher)).toBe('ok');
      // undici arms a 300 ms timer (Node's own below 1 s) when the response ends; a timer armed
      // later for longer fires after it, whatever the load: ordered by the timer queue, not clocks.
      await sleep(1000);
      expect(connected[0].destroyed).toBe(true);
      expect(await get(url, dispatcher)).toBe('ok');
      expect(connected).toHaveLength(2);
    });

    it('control: the default poolIdleTimeout gives way to the hint: still pooled and reused after 1 s', async () => {
      const { url } = await rawServer('Keep-Alive: timeout=5\r\n');
      const dispatcher = keep(createDispatcher(policy, { connections: 1 }));
      await get(url, dispatcher);
      await sleep(1000);
      expect(connected[0].destroyed).toBe(false);
      await get(url, dispatcher);
      expect(connected).toHaveLength(1);
    });

    it("connect: false (or any non-object) is refused with undici's own error, as undici's Agent refuses it", () => {
      for (const connect of [false, 5, 'x']) {
        const own = catchError(() => new Agent({ connect: connect as never }));
        const ours = catchError(() => createDispatcher(policy, { connect: connect as never }));
        expect(own).toBeInstanceOf(undiciErrors.InvalidArgumentError);
        expect(ours).toBeInstanceOf(undiciErrors.InvalidArgumentError);
        expect(ours).toMatchObject({ code: 'UND_ERR_INVALID_ARG', message: own.message });
      }
    });
  });
});

describe("borrowable methods: they work when another class borrows them, as Node's do", () => {
  it("PolicyHttpsAgent.prototype.createConnection on another agent class: a TLS connection, as with https.Agent's", async () => {
    const { port } = await rawServer('Connection: close\r\n', { tls: true });
    for (const borrowed of [https.Agent.prototype.createConnection, PolicyHttpsAgent.prototype.createConnection]) {
      const Borrower = class extends http.Agent {};
      Object.defineProperty(Borrower.prototype, 'createConnection', { value: borrowed });
      const agent = keep(new Borrower());
      const socket = track(
        (agent as unknown as { createConnection: (o: object) => net.Socket }).createConnection({ port, host: 'localhost', rejectUnauthorized: false }),
      );
      expect(socket).toBeInstanceOf(tls.TLSSocket);
      expect(await exchange(socket)).toBe('HTTP/1.1 200 OK');
    }
  });

  it("every PolicyAgent method copied onto a plain http.Agent subclass: 5 requests over 1 connection, as Node's agent", async () => {
    const { port, peers } = await rawServer();
    const Borrower = class extends http.Agent {};
    const source = Object.getPrototypeOf(PolicyAgent.prototype) as object;
    for (const name of Object.getOwnPropertyNames(source)) {
      if (name !== 'constructor') Object.defineProperty(Borrower.prototype, name, Object.getOwnPropertyDescriptor(source, name)!);
    }
    const agent = keep(new Borrower({ keepAlive: true })) as unknown as PolicyAgent;
    for (let i = 0; i < 5; i++) {
      const got = await request({ host: '127.0.0.1', port, agent });
      expect(got.reused).toBe(i > 0);
      expect(await freed(agent, got.socket)).toBe('free');
    }
    expect(peers).toHaveLength(1);
    expect(agent.staleDropped).toBe(0);
    expect(agent.statusChanged).toBe(false);
    expect(agent.getCurrentStatus()).toMatchObject({ createSocketCount: 0, freeSockets: { [`127.0.0.1:${port}:`]: 1 } });
  });

  it("agentkeepalive's HttpsAgent recipe over PolicyAgent (https.Agent's methods copied onto an http agent class): HTTPS requests pooled, connections tuned", async () => {
    const { port, peers } = await rawServer('', { tls: true });
    class KeepAliveHttpsAgent extends PolicyAgent {
      constructor(options?: https.AgentOptions) {
        super(policy, options);
        Object.assign(this, { defaultPort: 443, protocol: 'https:', maxCachedSessions: 100, _sessionCache: { map: {}, list: [] } });
      }
    }
    for (const name of ['createConnection', 'getName', '_getSession', '_cacheSession', '_evictSession']) {
      const from = name === 'createConnection' ? PolicyHttpsAgent.prototype : https.Agent.prototype;
      Object.defineProperty(KeepAliveHttpsAgent.prototype, name, {
        value: (from as unknown as Record<string, unknown>)[name],
        writable: true,
        configurable: true,
      });
    }
    const agent = keep(new KeepAliveHttpsAgent());
    let atConnect: unknown;
    for (let i = 0; i < 3; i++) {
      const got = await request({ host: '127.0.0.1', port, agent, rejectUnauthorized: false }, https, {
        onSocket: (s) => s.once('connect', () => (atConnect = readOptions(s))),
      });
      expect(got.socket).toBeInstanceOf(tls.TLSSocket);
      expect(await freed(agent, got.socket)).toBe('free');
    }
    expect(peers).toHaveLength(1);
    expect(atConnect).toMatchObject(held);
    expect(agent.guard.stats()).toMatchObject({ seen: 1, tracked: 1 });
  });
});

describe("Node's own agent tests, with the policy agents swapped in", () => {
  it.each(kinds)(
    "$kind: addRequest's legacy form with a plain object as the request names the pool by localAddress (test-http-addrequest-localaddress)",
    ({ make }) => {
      const agent = keep(make(policy));
      agent.maxSockets = 0; // queue the request: no connection is made
      const req = { getHeader: () => undefined } as unknown as http.ClientRequest;
      (agent as unknown as { addRequest(...args: unknown[]): void }).addRequest(req, 'localhost', 8080, '127.0.0.1');
      expect(Object.keys(agent.requests)).toHaveLength(1);
      expect(Object.keys(agent.requests)[0]).toMatch(/^localhost:8080:127\.0\.0\.1/);
      (agent as unknown as { addRequest(...args: unknown[]): void }).addRequest(req, {
        host: 'localhost',
        port: 8080,
        localAddress: '127.0.0.1',
        path: '/foo',
      });
      expect(Object.keys(agent.requests)).toHaveLength(1);
    },
  );

  it("a CONNECT request takes its socket over with none of the pool's listeners left on it (test-http-connect), and the pool counts no close", async () => {
    const server = track(http.createServer());
    server.on('connect', (_req: http.IncomingMessage, socket: net.Socket) => {
      track(socket).write('HTTP/1.1 200 Connection established\r\n\r\n');
      socket.on('data', (d) => socket.write(d));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const agent = keep(createAgent(policy));
    const req = http.request({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, method: 'CONNECT', path: 'example.internal:443', agent });
    req.end();
    const [, socket] = (await once(req, 'connect')) as [http.IncomingMessage, net.Socket];
    track(socket);
    const counts = Object.fromEntries(
      ['close', 'drain', 'data', 'error', 'timeout', 'free', 'agentRemove', 'connect'].map((e) => [e, socket.listenerCount(e)]),
    );
    // test/helpers/sockets.ts's track() adds one 'error' listener of its own.
    expect(counts).toEqual({ close: 0, drain: 0, data: 0, error: 1, timeout: 0, free: 0, agentRemove: 0, connect: 0 });
    expect(readOptions(socket)).toMatchObject(held);
    socket.write('ping');
    const [echo] = await once(socket, 'data');
    expect(String(echo)).toBe('ping');
    expect(agent.closeSocketCount).toBe(0);
    socket.destroy();
  });
});

describe('options a user gets wrong are answered', () => {
  it.each(kinds)('$kind: a misspelt agent option is refused with a did-you-mean (maxSocket → maxSockets)', ({ make }) => {
    expect(catchError(() => make(policy, { maxSocket: 10 } as never))).toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringContaining("has no option 'maxSocket' (did you mean 'maxSockets'?)"),
    });
    expect(catchError(() => make(policy, { freeSocketTimout: 1000 } as never))).toMatchObject({
      message: expect.stringContaining("did you mean 'freeSocketTimeout'?"),
    });
    expect(catchError(() => make(policy, { wholly: 'unknown' } as never))).toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringContaining('known: keepAlive'),
    });
  });

  it.each(kinds)("$kind: http.Agent's options given first (createAgent({ keepAlive: true })) are told where they go", ({ make }) => {
    for (const given of [{ keepAlive: true }, { maxSockets: 10 }, { keepAlive: true, timeout: 5000 }]) {
      expect(
        catchError(() => make(given as never)),
        JSON.stringify(given),
      ).toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
        message: expect.stringContaining('the agents take the policy first and the agent options second'),
      });
    }
    // A policy with keepAlive: false (keepalive off) is a policy.
    expect(make({ keepAlive: false }).policy.keepAlive).toBe(false);
  });

  it.each(kinds)("$kind: every option Node's agents and agentkeepalive document is accepted", ({ make }) => {
    const agent = keep(
      make(policy, {
        keepAlive: true,
        keepAliveMsecs: 1000,
        maxSockets: 4,
        maxTotalSockets: 8,
        maxFreeSockets: 2,
        scheduling: 'fifo',
        timeout: 5000,
        localAddress: '127.0.0.1',
        family: 4,
        noDelay: true,
        rejectUnauthorized: false,
        servername: 'localhost',
        maxCachedSessions: 10,
        freeSocketTimeout: 4000,
        socketActiveTTL: 60_000,
      } as never),
    );
    expect(agent.maxSockets).toBe(4);
  });
});
