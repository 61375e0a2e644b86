/**
 * What socktune's agents and, under `socktune/register`, Node's own agents share before a request
 * is given a pooled connection. No import of `node:http` here: `socktune/register` uses this module
 * in processes that may never load it.
 * @module
 */
import type http from 'node:http';
import type net from 'node:net';
import { tcpState } from '../views.js';
import { builtin } from '../handle.js';

/** socktune's own policy agents (`createAgent`, `createHttpsAgent`), which pool by their own policy. */
export const policyAgents = new WeakSet<object>();

/** Whether `agent` is one of socktune's policy agents (which retry, tune and pool by their own policy). */
export function isPolicyAgent(agent: unknown): boolean {
  return typeof agent === 'object' && agent !== null && policyAgents.has(agent);
}

/** Whether the kernel still holds `socket` as an open connection both ways. */
export function established(socket: net.Socket): boolean {
  if (socket.destroyed) return false;
  try {
    return tcpState(socket) === 'ESTABLISHED';
  } catch {
    return false; // no fd left: closing
  }
}

/** The parts of Node's agent the sweep reads. */
interface FreeSockets {
  options: object;
  scheduling?: 'lifo' | 'fifo';
  freeSockets: Record<string, net.Socket[] | undefined>;
  getName(options: http.ClientRequestArgs): string;
}

/**
 * Before Node's agent picks a free socket for a request: drops, from the end Node picks from,
 * every socket that cannot serve it. A TCP connection under a policy (`kind` says `'tcp'`) that
 * the kernel no longer holds as ESTABLISHED is stale (one TCP_INFO read per socket looked at):
 * `onStale` takes it. Node 20's `addRequest` pops the newest free socket (LIFO) and skips only
 * destroyed sockets at the front of the list, and a FIN or RST that arrived while the event loop
 * was busy is in the kernel long before Node reads it. Other sockets are only skipped once
 * destroyed. @internal
 */
export function sweepFreeSockets(
  agent: http.Agent,
  options: unknown,
  legacy: unknown[],
  kind: (socket: net.Socket) => 'tcp' | 'other',
  onStale: (socket: net.Socket) => void,
): void {
  const a = agent as unknown as FreeSockets;
  // As Node's addRequest merges them (the legacy form is addRequest(req, host, port, localAddress)).
  const request = typeof options === 'string' ? { host: options, port: legacy[0], localAddress: legacy[1] } : (options as object);
  const given = { ...request, ...a.options };
  const free = a.freeSockets;
  const drop = (name: string): void => {
    const list = free[name]!;
    const fifo = a.scheduling === 'fifo';
    while (list.length > 0) {
      const at = fifo ? 0 : list.length - 1;
      const socket = list[at];
      const tcp = kind(socket) === 'tcp';
      if (tcp ? established(socket) : !socket.destroyed) break;
      list.splice(at, 1);
      if (tcp && !socket.destroyed) onStale(socket);
    }
    if (list.length === 0) delete free[name];
  };
  if (a.getName === builtin<typeof http>('node:http').Agent.prototype.getName) {
    // http.Agent's names: host, port, local address, family and socket path only.
    const name = a.getName(given as http.ClientRequestArgs);
    if (free[name] !== undefined) drop(name);
    return;
  }
  // https.Agent's (or a subclass's) names add TLS fields, the server name among them, after
  // host:port:; Node derives the server name from the Host header. Every pool of this host and
  // port is checked instead.
  const { host, port } = given as { host?: string; port?: number | string };
  const prefix = `${host || 'localhost'}:${port || ''}:`;
  for (const name in free) if (name.startsWith(prefix)) drop(name);
}
