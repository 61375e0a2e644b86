// Servers for the pool tests. A raw HTTP/1.1 keep-alive server on loopback that answers every
// request with "ok" and never closes on its own: the pool tests control exactly which headers it
// sends (no Keep-Alive hint unless given) and close its ends themselves. An HTTPS server on
// loopback, and HTTP/HTTPS servers on Unix-domain sockets. Closed by closeAll() with everything else.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { track } from './sockets.js';

/** The test certificate (self-signed, CN localhost) and its key. */
export function certificate(): { key: Buffer; cert: Buffer } {
  return {
    key: readFileSync(new URL('../fixtures/tls/key.pem', import.meta.url)),
    cert: readFileSync(new URL('../fixtures/tls/cert.pem', import.meta.url)),
  };
}

export interface RawServer {
  port: number;
  url: string;
  /** Server ends of the connections, in accept order. */
  peers: net.Socket[];
}

/**
 * @param extra header lines to add to every response, each ending in CRLF
 * @param options `tls`: over TLS with the test certificate (`peers` are the TLS sockets)
 */
export async function rawServer(extra = '', options: { tls?: boolean } = {}): Promise<RawServer> {
  const peers: net.Socket[] = [];
  const serve = (socket: net.Socket): void => {
    peers.push(track(socket));
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      let end;
      while ((end = buffered.indexOf('\r\n\r\n')) >= 0) {
        buffered = buffered.slice(end + 4);
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${extra}\r\nok`);
      }
    });
  };
  const server = track(options.tls ? tls.createServer(certificate(), serve) : net.createServer(serve));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { port, url: `http://127.0.0.1:${port}/`, peers };
}

/** An HTTPS server on loopback with the test certificate that answers "ok"; closed by closeAll(). */
export async function tlsServer(): Promise<{ port: number }> {
  const server = track(https.createServer(certificate(), (_req, res) => res.end('ok')));
  server.on('secureConnection', (s: net.Socket) => track(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port };
}

export interface UnixServer {
  /** The Unix-domain socket path it listens on. */
  path: string;
  /** Server ends of the connections, in accept order. */
  peers: net.Socket[];
}

/**
 * An HTTP (or, with `tls`, HTTPS with the test certificate) server listening on a Unix-domain
 * socket in a directory of its own, answering "ok" with `headers`. Node's server announces
 * `Keep-Alive: timeout=5` and closes idle connections at 5 s; with `keepAliveTimeout: 0` it
 * announces nothing and never closes them. Closed by closeAll(); the directory goes with it.
 */
export async function unixServer(options: { tls?: boolean; headers?: Record<string, string>; keepAliveTimeout?: number } = {}): Promise<UnixServer> {
  const dir = mkdtempSync(join(tmpdir(), 'socktune-pool-'));
  const path = join(dir, 'http.sock');
  const peers: net.Socket[] = [];
  const answer = (_req: http.IncomingMessage, res: http.ServerResponse): void => {
    res.writeHead(200, options.headers ?? {});
    res.end('ok');
  };
  const server = track(options.tls ? https.createServer(certificate(), answer) : http.createServer(answer));
  if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout;
  server.on('connection', (s: net.Socket) => peers.push(track(s)));
  server.once('close', () => rmSync(dir, { recursive: true, force: true }));
  server.listen(path);
  await once(server, 'listening');
  return { path, peers };
}

export interface Got {
  socket: net.Socket;
  reused: boolean;
  status: number;
  body: string;
}

/**
 * A request through Node's `client` (http or https, GET unless `options.method` says otherwise);
 * resolves when the response body ends. `onSocket` sees the socket the agent hands out, when it
 * is handed out; `onRequest` sees the request before it is sent.
 */
export function request(
  options: https.RequestOptions,
  client: typeof http | typeof https = http,
  hooks: { onSocket?: (socket: net.Socket) => void; onRequest?: (req: http.ClientRequest) => void } = {},
): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = client.request({ path: '/', ...options }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ socket: req.socket as net.Socket, reused: req.reusedSocket, status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    if (hooks.onSocket) req.once('socket', hooks.onSocket);
    hooks.onRequest?.(req);
    req.on('error', reject);
    req.end();
  });
}

/** Resolves once `agent` has taken `socket` back into its free pool (or dropped it). */
export async function freed(agent: http.Agent, socket: net.Socket): Promise<'free' | 'dropped'> {
  for (let i = 0; i < 200; i++) {
    if (Object.values(agent.freeSockets).some((list) => list?.includes(socket))) return 'free';
    if (socket.destroyed) return 'dropped';
    await new Promise((r) => setImmediate(r));
  }
  throw new Error('the agent neither pooled nor dropped the socket');
}
