// A raw HTTP/1.1 keep-alive server on loopback that answers every request with "ok" and never
// closes on its own: the pool tests control exactly which headers it sends (no Keep-Alive hint
// unless given) and close its ends themselves. Closed by closeAll() with everything else.
import https from 'node:https';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { track } from './sockets.js';

export interface RawServer {
  port: number;
  url: string;
  /** Server ends of the connections, in accept order. */
  peers: net.Socket[];
}

/** @param extra header lines to add to every response, each ending in CRLF */
export async function rawServer(extra = ''): Promise<RawServer> {
  const peers: net.Socket[] = [];
  const server = track(net.createServer((socket) => {
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
  }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { port, url: `http://127.0.0.1:${port}/`, peers };
}

/** An HTTPS server on loopback with the test certificate that answers "ok"; closed by closeAll(). */
export async function tlsServer(): Promise<{ port: number }> {
  const key = readFileSync(new URL('../fixtures/tls/key.pem', import.meta.url));
  const cert = readFileSync(new URL('../fixtures/tls/cert.pem', import.meta.url));
  const server = track(https.createServer({ key, cert }, (_req, res) => res.end('ok')));
  server.on('secureConnection', (s: net.Socket) => track(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port };
}
