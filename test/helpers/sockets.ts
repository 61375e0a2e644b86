// Loopback TCP pairs that tests close in afterEach: every test closes what it opens.
import net from 'node:net';
import { once } from 'node:events';

const open: Array<net.Socket | net.Server> = [];

export interface Pair {
  server: net.Server;
  client: net.Socket;
  peer: net.Socket;
}

/** A listening server on `host` whose accepted sockets are tracked for cleanup. */
export async function listen(host = '127.0.0.1', opts: net.ServerOpts = {}): Promise<net.Server> {
  const server = net.createServer(opts);
  server.on('connection', (s) => {
    open.push(s);
    s.on('error', () => {});
  });
  open.push(server);
  server.listen(0, host);
  await once(server, 'listening');
  return server;
}

/** A connected client/peer pair over `host` (127.0.0.1 or ::1). */
export async function pair(host = '127.0.0.1'): Promise<Pair> {
  const server = await listen(host);
  const accepted = once(server, 'connection');
  const client = net.connect((server.address() as net.AddressInfo).port, host);
  track(client);
  await once(client, 'connect');
  const [peer] = (await accepted) as [net.Socket];
  return { server, client, peer };
}

export function track<T extends net.Socket | net.Server>(s: T): T {
  open.push(s);
  if (s instanceof net.Socket) s.on('error', () => {});
  return s;
}

/** Destroys every socket and closes every server opened through these helpers. */
export async function closeAll(): Promise<void> {
  const all = open.splice(0);
  await Promise.all(
    all.map((s) => {
      if (s instanceof net.Server) return new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()));
      s.destroy();
      return undefined;
    }),
  );
}
