// Policies on HTTP/2 sessions, 1: a policy applies to an Http2Session (a client's from
// http2.connect, the sessions of http2.createServer and createSecureServer) through the same entry
// points as a socket (tune for a session, tuneServer for an HTTP/2 server) and under
// socktune/register, which sees the sessions grpc-js and undici open with no code change. The
// session's socket gets the kernel options (read back from the kernel, and by strace); its user
// timeout follows the keepalive budget (gRFC A18).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compose, guardOf, keepAliveBudget, presets, readOptions, tune, tuneServer } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { catchError } from './helpers/errors.js';
import { certificate } from './helpers/http.js';
import { expectRecipePolicy, fixtures, listenerFds, recipeBudget, recipeEnv, recipeKeepAlive, ssSockets, startApp, type App } from './helpers/register.js';

const keepAlive = { idle: 2000, interval: 1000, count: 3 };
const policy = presets.gracefulHeartbeat({ keepAlive });
const budget = keepAliveBudget(keepAlive);

const opened: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of opened.splice(0)) o.close();
});

/** A node:http2 server (plain or TLS) on loopback answering "ok", closed after the test. */
async function h2Server(
  secure = false,
): Promise<{ server: http2.Http2Server | http2.Http2SecureServer; url: string; sessions: Array<{ session: http2.ServerHttp2Session; socket: net.Socket }> }> {
  const server = secure ? http2.createSecureServer(certificate()) : http2.createServer();
  const sessions: Array<{ session: http2.ServerHttp2Session; socket: net.Socket }> = [];
  server.on('session', (session: http2.ServerHttp2Session) => {
    session.on('error', () => {});
    session.once('connect', (_s, socket) => sessions.push({ session, socket: socket as net.Socket }));
  });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  opened.push({
    close: () => {
      for (const { session } of sessions) session.destroy();
      server.close();
    },
  });
  const { port } = server.address() as net.AddressInfo;
  return { server, url: `${secure ? 'https' : 'http'}://127.0.0.1:${port}`, sessions };
}

function connect(url: string, options: http2.SecureClientSessionOptions = {}): http2.ClientHttp2Session {
  const session = http2.connect(url, { rejectUnauthorized: false, ...options });
  session.on('error', () => {});
  opened.push({ close: () => session.destroy() });
  return session;
}

/** The socket under a session, as the session's `'connect'` event gives it. */
async function connected(session: http2.ClientHttp2Session): Promise<net.Socket> {
  const [, socket] = (await once(session, 'connect')) as [unknown, net.Socket];
  return socket;
}

async function get(session: http2.ClientHttp2Session): Promise<string> {
  const req = session.request({ ':path': '/' });
  req.setEncoding('utf8');
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}

const held = { keepAlive, userTimeout: budget };

describe('tune(session, policy)', () => {
  it('a connecting client session: deferred; once connected its socket holds keepalive I/V/C and the user timeout I + C·V (gRFC A18)', async () => {
    const { url } = await h2Server();
    const session = connect(url);
    const before = session.connecting;
    expect(before).toBe(true);
    expect(tune(session, policy)).toBe('deferred');
    const socket = await connected(session);
    expect(readOptions(socket)).toMatchObject(held);
    expect(guardOf(socket)).toBeDefined();
    expect(await get(session)).toBe('ok');
  });

  it('a connected session (TLS too): applied at once; tuned again with a shorter budget, that one (a longer one would not lengthen it)', async () => {
    for (const secure of [false, true]) {
      const { url } = await h2Server(secure);
      const session = connect(url);
      const socket = await connected(session);
      // The initial value differs from the one set: Node leaves keepalive off.
      expect(readOptions(socket).keepAlive).toBe(false);
      expect(tune(session, policy)).toBe('applied');
      expect(readOptions(socket), secure ? 'tls' : 'plain').toMatchObject(held);
      const other = presets.gracefulHeartbeat({ keepAlive: { idle: 1000, interval: 1000, count: 2 } });
      tune(session, other);
      expect(readOptions(socket)).toMatchObject({ keepAlive: { idle: 1000, interval: 1000, count: 2 }, userTimeout: 3000 });
      expect(await get(session)).toBe('ok');
    }
  });

  it('what a policy cannot apply to: a destroyed session (ERR_SOCKET_CLOSED), a session over a Unix-domain socket (ERR_SOCKTUNE_NOT_TCP, untouched)', async () => {
    const { url } = await h2Server();
    const gone = connect(url);
    await connected(gone);
    gone.destroy();
    expect(catchError(() => tune(gone, policy))).toMatchObject({ code: 'ERR_SOCKET_CLOSED' });

    const dir = mkdtempSync(join(tmpdir(), 'socktune-h2-'));
    try {
      const server = http2.createServer((_req, res) => res.end('ok'));
      server.listen(join(dir, 'h2.sock'));
      await once(server, 'listening');
      opened.push({ close: () => server.close() });
      const session = connect('http://localhost', { createConnection: () => net.connect(join(dir, 'h2.sock')) });
      await connected(session);
      expect(catchError(() => tune(session, policy))).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
      expect(await get(session)).toBe('ok');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a look-alike of a session is not one: the error of a socket that is not TCP', () => {
    const fake = { ping() {}, goaway() {}, settings() {}, socket: {} };
    expect(catchError(() => tune(fake as never, policy))).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
  });
});

describe('tuneServer(http2 server, policy)', () => {
  it.each([
    ['http2.createServer', false],
    ['http2.createSecureServer', true],
  ] as const)('%s: every session it accepts: its socket holds the policy, its guard tracks it', async (_name, secure) => {
    const { server, url, sessions } = await h2Server(secure);
    const guard = tuneServer(server, policy);
    const clients = [connect(url), connect(url), connect(url)];
    for (const client of clients) expect(await get(client)).toBe('ok');
    expect(sessions).toHaveLength(3);
    for (const { socket } of sessions) {
      expect(readOptions(socket)).toMatchObject(held);
      expect(guardOf(socket)).toBe(guard);
    }
    expect(guard.stats()).toMatchObject({ tracked: 3, seen: 3 });
  });
});

describe('policy JSON (socktune/register) sets every HTTP/2 field, checked like the others', () => {
  it('the fields, with did-you-mean for a near miss, ranges refused, ping tied to keepalive', async () => {
    const { loadConfig } = await import('../src/register/config.js');
    const load = (p: object) => loadConfig({ SOCKTUNE_POLICY: JSON.stringify(p) }).rules[0].policy;
    const http2Fields = { ping: true, pingJitter: 0.2, minPingInterval: 300_000, maxPingStrikes: 2, maxAge: 60_000, maxAgeJitter: 0.1, maxAgeGrace: 10_000 };
    expect(load({ preset: 'gracefulHeartbeat', keepAlive: recipeKeepAlive, http2: http2Fields })).toMatchObject({
      http2: http2Fields,
      userTimeout: recipeBudget,
    });
    // Unset fields keep the preset's: the PING heartbeat is the graceful heartbeat's.
    expect(load({ preset: 'gracefulHeartbeat', http2: { maxAge: 1000 } })).toMatchObject({ http2: { ping: true, maxAge: 1000, maxAgeJitter: 0.1 } });
    expect(load({ preset: 'rstOnClose', http2: { maxAge: 1000 } })).toMatchObject({ http2: { ping: false, maxAge: 1000 } });
    const fail = (p: object) => catchError(() => load(p));
    expect(fail({ preset: 'gracefulHeartbeat', http2: { maxAgee: 1 } })).toMatchObject({
      code: 'ERR_SOCKTUNE_CONFIG',
      message: expect.stringContaining(
        "has no field 'maxAgee'; fields: ping, pingJitter, minPingInterval, maxPingStrikes, maxAge, maxAgeJitter, maxAgeGrace; did you mean 'maxAge'?",
      ),
    });
    expect(fail({ preset: 'gracefulHeartbeat', htt2: {} })).toMatchObject({ message: expect.stringContaining("did you mean 'http2'?") });
    expect(fail({ preset: 'gracefulHeartbeat', http2: { pingJitter: 0.6 } })).toMatchObject({ message: expect.stringContaining('policy.http2.pingJitter') });
    expect(fail({ preset: 'gracefulHeartbeat', http2: { maxAge: 1.5 } })).toMatchObject({ message: expect.stringContaining('policy.http2.maxAge') });
    expect(fail({ preset: 'gracefulHeartbeat', http2: { ping: 'yes' } })).toMatchObject({ message: expect.stringContaining('policy.http2.ping') });
    expect(fail({ preset: 'rstOnClose', http2: { ping: true } })).toMatchObject({ message: expect.stringContaining('needs keepAlive') });
    // Keepalive off: no budget, so no PING (the preset's default follows keepalive).
    expect(load({ preset: 'gracefulHeartbeat', keepAlive: false })).toMatchObject({ http2: { ping: false } });
  });

  it('in code: the same names, merged field by field like keepalive timings', () => {
    const p = compose(presets.gracefulHeartbeat(), { http2: { maxAge: 5000 } }, { http2: { maxAgeGrace: 1000 } });
    expect(p.http2).toMatchObject({ ping: true, maxAge: 5000, maxAgeGrace: 1000 });
    expect(Object.isFrozen(p.http2)).toBe(true);
    expect(catchError(() => presets.gracefulHeartbeat({ http2: { minPingIntervall: 1 } as never }))).toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringContaining("did you mean 'minPingInterval'?"),
    });
    for (const bad of [NaN, -0.1, 0.51, '0.1', Infinity]) {
      expect(
        catchError(() => presets.gracefulHeartbeat({ http2: { pingJitter: bad as number } })),
        String(bad),
      ).toMatchObject({ code: expect.stringMatching(/ERR_OUT_OF_RANGE|ERR_INVALID_ARG_TYPE/) });
    }
  });
});

describe.runIf(canUse('ss', 'strace'))('socktune/register: the sessions grpc-js and undici open, with no code change', () => {
  let app: App;
  const logs = mkdtempSync(join(tmpdir(), 'socktune-h2-register-'));
  const strace = join(logs, 'app.strace');

  beforeAll(async () => {
    app = await startApp(join(fixtures, 'h2-register-app.mjs'), { env: recipeEnv('register'), args: ['127.0.0.1'], strace });
  }, 60_000);

  afterAll(async () => {
    await app?.stop();
    rmSync(logs, { recursive: true, force: true });
  });

  it('every session is under the policy: a grpc-js client and the grpc-js server, undici (allowH2) and a node:http2 secure server', async () => {
    const { register } = (await app.send('stats')) as { register: Record<string, number> };
    // Two sessions per pair: the client's (http2.connect) and the server's ('session').
    expect(register).toMatchObject({ sessions: 4, tuned: 4, opened: 2, accepted: 2 });
  });

  it('the kernel holds the policy on each of their connections (strace: keepalive I/V/C and the user timeout I + C·V)', async () => {
    const sockets = await ssSockets(undefined, ['src', '127.0.0.1']);
    // The servers' ends inherit the policy from their listeners (socktune/register puts it there once).
    const listeners = listenerFds(app.ready.pid as number);
    expect(listeners.size).toBe(2);
    const mine = expectRecipePolicy({ mode: 'register', app, strace }, sockets, 'h2 register', listeners);
    // Both ends of both pairs.
    expect(mine).toHaveLength(4);
  });
});
