// Policies on HTTP/2 sessions, 4: maximum age and idle (gRFC A9). A server's session past
// `http2.maxAge` (spread by `maxAgeJitter`) is sent GOAWAY naming the largest stream ID, then, once
// a PING has made the round trip while streams are open (every stream the client sent before it
// is in), a GOAWAY naming the last stream processed: streams in flight finish within
// `maxAgeGrace`, new streams go to a new session, and nothing the server received is refused. A session without streams for `idleTimeout`
// is sent GOAWAY and closed. The guard counts both ('max-age', 'idle'). Servers here, node:http2
// clients beside them on loopback. (A stream the client had queued but not sent when the GOAWAY
// reached it is refused by the client's own stack, REFUSED_STREAM, safe to send again: gRPC does.)
import { afterEach, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { presets, tune, tuneServer, type Guard, type PolicyOverrides } from '../src/index.js';

const LAST_STREAM_ID = 2 ** 31 - 1;
const slack = 1000;
// Node's timers run on libuv's loop clock, in whole milliseconds: one may fire up to 1 ms sooner
// than performance.now() says its delay has passed.
const loopClock = 1;

const open: Array<() => void> = [];
afterEach(() => {
  for (const close of open.splice(0)) close();
});

interface Server {
  url: string;
  guard: Guard;
  sessions: http2.ServerHttp2Session[];
  /** Streams the server received, and those whose answer it finished writing. */
  streams: { received: number; answered: number };
}

/**
 * A server under `overrides`: /slow answers after `ms` (query), /stream never ends, / answers at
 * once with the ID of the session that served it.
 */
async function server(overrides: PolicyOverrides): Promise<Server> {
  const s = http2.createServer();
  const guard = tuneServer(s, presets.gracefulHeartbeat(overrides));
  const sessions: http2.ServerHttp2Session[] = [];
  const streams = { received: 0, answered: 0 };
  s.on('session', (session: http2.ServerHttp2Session) => {
    sessions.push(session);
    session.on('error', () => {});
  });
  s.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    streams.received++;
    stream.on('finish', () => streams.answered++);
    const path = headers[':path'] ?? '/';
    stream.respond({ ':status': 200 });
    const id = String(sessions.indexOf(stream.session as http2.ServerHttp2Session));
    if (path === '/stream') stream.write('first chunk\n');
    else if (path.startsWith('/slow')) {
      const timer = setTimeout(() => stream.end(id), Number(new URL(path, 'http://x').searchParams.get('ms')));
      stream.on('close', () => clearTimeout(timer));
    } else stream.end(id);
  });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  open.push(() => {
    for (const session of sessions) session.destroy();
    s.close();
  });
  return { url: `http://127.0.0.1:${(s.address() as net.AddressInfo).port}`, guard, sessions, streams };
}

interface Client {
  session: http2.ClientHttp2Session;
  goaways: Array<{ code: number; lastStreamID: number; data: string; at: number }>;
  closedAt: number;
}

function client(url: string): Client {
  const session = http2.connect(url);
  const c: Client = { session, goaways: [], closedAt: 0 };
  session.on('error', () => {});
  session.on('goaway', (code: number, lastStreamID: number, data?: Buffer) =>
    c.goaways.push({ code, lastStreamID, data: data?.toString() ?? '', at: performance.now() }),
  );
  session.on('close', () => (c.closedAt = performance.now()));
  open.push(() => session.destroy());
  return c;
}

/** One request: its body, or the error code it failed with. */
async function get(session: http2.ClientHttp2Session, path: string): Promise<{ body?: string; error?: string }> {
  try {
    const req = session.request({ ':path': path });
    req.setEncoding('utf8');
    let body = '';
    for await (const chunk of req) body += chunk;
    return { body };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    // A stream the peer (or the client's own stack) reset: its HTTP/2 error code by name.
    if (e.code === 'ERR_HTTP2_STREAM_ERROR') return { error: /NGHTTP2_(\w+)/.exec(e.message ?? '')?.[1] ?? e.code };
    return { error: e.code ?? String(err) };
  }
}

async function until(test: () => boolean, within: number): Promise<void> {
  const deadline = performance.now() + within;
  while (!test() && performance.now() < deadline) await sleep(10);
}

describe('maximum age (gRFC A9)', () => {
  const maxAge = 1000;

  it('GOAWAY at the age: first naming the largest stream ID with "max_age", then the last processed; the stream in flight finishes; the session closes; counted max-age', async () => {
    const { url, guard } = await server({ http2: { maxAge, maxAgeJitter: 0, maxAgeGrace: 5000 } });
    // The server's age runs from when it accepted the session: after `opened`, and before or
    // after the client's 'connect' (both ends are in this process), so the bounds are taken
    // from one each.
    const opened = performance.now();
    const c = client(url);
    await once(c.session, 'connect');
    const start = performance.now();
    // Answered 500 ms after the GOAWAY: in flight across it.
    const inFlight = get(c.session, `/slow?ms=${maxAge + 500}`);
    await until(() => c.goaways.length > 0, maxAge + slack);
    const [first] = c.goaways;
    expect(first).toMatchObject({ code: http2.constants.NGHTTP2_NO_ERROR, lastStreamID: LAST_STREAM_ID, data: 'max_age' });
    expect(first.at - opened).toBeGreaterThanOrEqual(maxAge - loopClock);
    expect(first.at - start).toBeLessThanOrEqual(maxAge + slack);
    // A new stream on this session is refused by Node at once: the client opens a new session.
    expect(await get(c.session, '/')).toMatchObject({ error: expect.stringMatching(/ERR_HTTP2_(GOAWAY_SESSION|INVALID_SESSION)/) });
    const next = client(url);
    expect(await get(next.session, '/')).toEqual({ body: '1' });
    expect(await inFlight).toEqual({ body: '0' });
    await until(() => c.closedAt !== 0, slack);
    expect(c.closedAt).not.toBe(0);
    // The final GOAWAY names the last stream this session processed (the one in flight, ID 1).
    expect(c.goaways.at(-1)).toMatchObject({ lastStreamID: 1 });
    await until(() => guard.stats().closed['max-age'] === 1, slack);
    expect(guard.stats().closed['max-age']).toBe(1);
  });

  it('a stream still open at the end of the grace: the session is destroyed then (the stream fails), counted max-age', async () => {
    const grace = 500;
    const { url, guard, sessions } = await server({ http2: { maxAge, maxAgeJitter: 0, maxAgeGrace: grace } });
    const c = client(url);
    const stream = c.session.request({ ':path': '/stream' });
    let streamClosedAt = 0;
    stream.on('error', () => {});
    stream.on('close', () => (streamClosedAt = performance.now()));
    await once(stream, 'data');
    await until(() => c.goaways.length > 0, maxAge + slack);
    const goawayAt = c.goaways[0].at;
    await until(() => streamClosedAt !== 0, grace + slack);
    expect(streamClosedAt - goawayAt).toBeGreaterThanOrEqual(grace - 50);
    expect(streamClosedAt - goawayAt).toBeLessThanOrEqual(grace + slack);
    expect(sessions[0].destroyed).toBe(true);
    await until(() => guard.stats().closed['max-age'] === 1, slack);
    expect(guard.stats().closed['max-age']).toBe(1);
  });

  it('jitter: twenty sessions opened together get their GOAWAY spread over maxAge ± 10 %', async () => {
    const { url } = await server({ http2: { maxAge, maxAgeJitter: 0.1, maxAgeGrace: 1000 } });
    const opened = performance.now(); // no server session is older than this (see above)
    const clients = Array.from({ length: 20 }, () => client(url));
    await Promise.all(clients.map((c) => once(c.session, 'connect')));
    const start = performance.now();
    await until(() => clients.every((c) => c.goaways.length > 0), maxAge * 1.1 + slack);
    const ages = clients.map((c) => c.goaways[0].at - start);
    console.log(
      JSON.stringify({
        maxAgeJitter: { maxAge, jitter: 0.1, sessions: ages.length, goawayMs: { min: Math.round(Math.min(...ages)), max: Math.round(Math.max(...ages)) } },
      }),
    );
    expect(Math.min(...clients.map((c) => c.goaways[0].at - opened))).toBeGreaterThanOrEqual(maxAge * 0.9 - loopClock);
    expect(Math.max(...ages)).toBeLessThanOrEqual(maxAge * 1.1 + slack / 2);
    expect(Math.max(...ages) - Math.min(...ages)).toBeGreaterThan(maxAge * 0.02);
  });

  it('requests racing the rotations: every stream the server received is answered; only streams the client had not sent yet are refused (by its own stack), and sent once more none fails', async () => {
    const age = 300;
    const rotating = await server({ http2: { maxAge: age, maxAgeJitter: 0, maxAgeGrace: 5000 } });
    const steady = await server({});
    for (const [{ url, guard, sessions, streams }, rotations] of [
      [rotating, 5],
      [steady, 0],
    ] as const) {
      let current = client(url);
      const next = (): Client => {
        if (current.goaways.length > 0 || current.session.closed) current = client(url);
        return current;
      };
      const stop = performance.now() + 5 * age + age / 2;
      const outcome = { ok: 0, refused: 0, failed: 0 };
      /** A request; one refused (REFUSED_STREAM: the stream never left) is sent once more, on the session in use then, as gRPC's transparent retry does. */
      const send = async (): Promise<void> => {
        const first = await get(next().session, '/slow?ms=20');
        if (first.error === undefined) return void outcome.ok++;
        if (first.error !== 'REFUSED_STREAM') return void outcome.failed++;
        outcome.refused++;
        const again = await get(next().session, '/slow?ms=20');
        if (again.error === undefined) outcome.ok++;
        else outcome.failed++;
      };
      const inFlight: Array<Promise<void>> = [];
      while (performance.now() < stop) {
        inFlight.push(send());
        await sleep(5);
      }
      await Promise.all(inFlight);
      await sleep(100);
      console.log(
        JSON.stringify({
          rotationsUnderLoad: {
            maxAge: rotations ? age : false,
            sessions: sessions.length,
            answered: outcome.ok,
            refusedBeforeSent: outcome.refused,
            failed: outcome.failed,
            rotated: guard.stats().closed['max-age'],
          },
        }),
      );
      // Nothing the server received was refused or cut: each stream it got was answered, and is one the client counted.
      expect(streams).toEqual({ received: outcome.ok, answered: outcome.ok });
      expect(outcome.failed).toBe(0);
      expect(outcome.ok).toBeGreaterThan(100);
      if (rotations) expect(guard.stats().closed['max-age']).toBeGreaterThanOrEqual(rotations - 1);
      else
        expect({ rotated: guard.stats().closed['max-age'], refused: outcome.refused, sessions: sessions.length }).toEqual({
          rotated: 0,
          refused: 0,
          sessions: 1,
        });
    }
  }, 20_000);
});

describe('idle sessions', () => {
  const idleTimeout = 500;
  const visit = idleTimeout / 8;

  it('a server session without streams for idleTimeout: GOAWAY (NO_ERROR) and closed, counted idle; one with a stream open stays', async () => {
    const { url, guard } = await server({ idleTimeout });
    const idle = client(url);
    const busy = client(url);
    const stream = busy.session.request({ ':path': '/stream' });
    stream.on('error', () => {});
    await once(stream, 'data');
    expect(await get(idle.session, '/')).toMatchObject({ body: expect.any(String) });
    const lastStream = performance.now();
    await until(() => idle.closedAt !== 0, idleTimeout + visit + slack);
    expect(idle.goaways[0]).toMatchObject({ code: http2.constants.NGHTTP2_NO_ERROR });
    expect(idle.goaways[0].at - lastStream).toBeGreaterThanOrEqual(idleTimeout - visit);
    expect(idle.closedAt - lastStream).toBeLessThanOrEqual(idleTimeout + visit + slack);
    await sleep(idleTimeout);
    expect({ goaways: busy.goaways.length, closed: busy.closedAt }).toEqual({ goaways: 0, closed: 0 });
    expect(guard.stats().closed.idle).toBe(1);
  });

  it('a client session (tune) without streams for idleTimeout: closed with GOAWAY, the server sees it; the next request goes on a new session', async () => {
    const { url, sessions } = await server({});
    const c = client(url);
    tune(c.session, presets.gracefulHeartbeat({ idleTimeout }));
    expect(await get(c.session, '/')).toEqual({ body: '0' });
    const serverGoaway = once(sessions[0], 'goaway');
    await until(() => c.closedAt !== 0, idleTimeout + visit + slack);
    expect(c.closedAt).not.toBe(0);
    const [code] = (await serverGoaway) as [number];
    expect(code).toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(await get(client(url).session, '/')).toEqual({ body: '1' });
  });
});
