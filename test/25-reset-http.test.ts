// RST-on-close on an HTTP server whose response body ends where the connection ends. nginx speaks
// HTTP/1.0 to its upstreams by default (proxy_http_version 1.0), so a Node response streamed with
// write() has neither Content-Length nor chunked encoding: the close is the end of the body. A reset
// there truncated what nginx passed on; that close keeps FIN, while a response with a
// Content-Length still ends with RST (no TIME_WAIT). Real nginx, real kernel; TIME_WAIT counted by ss.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { presets, tuneServer, type Guard } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { ssCount } from './helpers/netns.js';
import { startNginx, type Nginx } from './helpers/nginx.js';

const CHUNKS = 64;
const BODY = CHUNKS * 1024 + 'END\n'.length;
const TRIALS = 20;

/** A body of 64 KiB in 64 writes and a last one, as a streaming handler sends it. */
function stream(res: http.ServerResponse): void {
  res.setHeader('content-type', 'text/plain');
  for (let i = 0; i < CHUNKS; i++) res.write(`${'x'.repeat(1023)}\n`);
  res.end('END\n');
}

/**
 * The same body with its Content-Length set, as Express's res.send() sets it. (To an HTTP/1.0
 * request Node adds none of its own, even for res.end(body): without this header the body ends at
 * the close too.)
 */
function framed(res: http.ServerResponse): void {
  const body = `${`${'x'.repeat(1023)}\n`.repeat(CHUNKS)}END\n`;
  res.setHeader('content-type', 'text/plain');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

async function serve(handler: (res: http.ServerResponse) => void): Promise<{ server: http.Server; guard: Guard; port: number }> {
  const server = http.createServer((_req, res) => handler(res));
  // Accepted connections are reset only on timeouts unless asked (test/26): these servers ask.
  const guard = tuneServer(server, presets.rstOnClose({ resetAccepted: 'always' }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, guard, port: (server.address() as net.AddressInfo).port };
}

async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

/** GET through nginx: the status, the body's length and whether it ended as a complete response. */
function get(port: number, p: string): Promise<{ status: number; length: number; tail: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, length: body.length, tail: body.subarray(-4).toString() });
      });
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: res.statusCode ?? 0, length: -1, tail: '', error: e.code ?? e.message }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, length: -1, tail: '', error: e.code ?? e.message }));
  });
}

describe.runIf(canUse('ss', 'nginx'))('RST-on-close and HTTP bodies that end at the close', () => {
  let nginx: Nginx | undefined;
  let proxyPort = 0;
  const servers: Array<{ server: http.Server; guard: Guard; port: number }> = [];

  beforeAll(async () => {
    servers.push(await serve(stream), await serve(framed));
    proxyPort = await freePort();
    // nginx's defaults towards the upstream: HTTP/1.0, a new connection per request.
    nginx = await startNginx({
      port: proxyPort,
      http: [
        'server {',
        `  listen 127.0.0.1:${proxyPort};`,
        `  location /stream { proxy_pass http://127.0.0.1:${servers[0].port}; }`,
        `  location /framed { proxy_pass http://127.0.0.1:${servers[1].port}; }`,
        '}',
      ],
    });
  }, 30_000);

  afterAll(async () => {
    await nginx?.stop();
    for (const { server, guard } of servers) {
      server.close();
      await guard.close({ timeout: 1000 });
    }
  });

  it(`a streamed body through nginx's HTTP/1.0 upstream arrives whole ${TRIALS} of ${TRIALS} times; that close keeps FIN`, async () => {
    const results = [];
    for (let i = 0; i < TRIALS; i++) results.push(await get(proxyPort, '/stream'));
    const whole = results.filter((r) => r.status === 200 && r.length === BODY && r.tail === 'END\n').length;
    expect({ whole, failures: results.filter((r) => r.length !== BODY).slice(0, 3) }).toEqual({ whole: TRIALS, failures: [] });
    // nginx read every upstream response to its end: no "reset by peer", no "prematurely closed".
    expect(nginx!.errors()).not.toMatch(/reset by peer|prematurely/);
    // The server closed each of those connections first, with FIN: each left TIME_WAIT on its side.
    // TIME_WAIT on the server side of a connection it closed first with FIN.
    expect(await ssCount('time-wait', `sport = :${servers[0].port}`)).toBeGreaterThanOrEqual(TRIALS);
  });

  it('a raw HTTP/1.0 client reads the streamed body to a clean end-of-stream, not ECONNRESET', async () => {
    const client = net.connect(servers[0].port, '127.0.0.1');
    await once(client, 'connect');
    client.write('GET /stream HTTP/1.0\r\nHost: socktune.test\r\n\r\n');
    const chunks: Buffer[] = [];
    const events: string[] = [];
    client.on('data', (c: Buffer) => chunks.push(c));
    client.on('end', () => events.push('end'));
    client.on('error', (e: NodeJS.ErrnoException) => events.push(e.code ?? 'error'));
    await once(client, 'close');
    const text = Buffer.concat(chunks).toString('latin1');
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    expect(head).not.toMatch(/content-length|transfer-encoding/i);
    expect(text.length - head.length - 4).toBe(BODY);
    expect(events).toEqual(['end']);
  });

  it('a body with a Content-Length still ends with RST: the same traffic leaves no TIME_WAIT', async () => {
    const results = [];
    for (let i = 0; i < TRIALS; i++) results.push(await get(proxyPort, '/framed'));
    expect(results.filter((r) => r.status === 200 && r.length === BODY && r.tail === 'END\n').length).toBe(TRIALS);
    expect(nginx!.errors()).not.toMatch(/reset by peer|prematurely/);
    expect(await ssCount('time-wait', `sport = :${servers[1].port}`)).toBe(0);
  });
});
