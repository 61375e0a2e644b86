// What every pool test needs: agents and dispatchers destroyed after each test (and every socket
// and server of helpers/sockets.ts closed), and the sockets undici connects, in order.
import { afterAll, afterEach, beforeAll } from 'vitest';
import diagnostics from 'node:diagnostics_channel';
import type http from 'node:http';
import type net from 'node:net';
import type { Dispatcher } from 'undici';
import { closeAll } from './sockets.js';

/**
 * Registers an afterEach that destroys every agent or dispatcher given to the returned `keep`,
 * then closes what helpers/sockets.ts tracks.
 */
export function pools(): <P extends http.Agent | Dispatcher>(pool: P) => P {
  const kept: Array<http.Agent | Dispatcher> = [];
  afterEach(async () => {
    await Promise.all(kept.splice(0).map((p) => (p as { destroy(): unknown }).destroy()));
    await closeAll();
  });
  return (pool) => {
    kept.push(pool);
    return pool;
  };
}

/** The sockets undici connects, as its 'undici:client:connected' channel reports them; emptied after each test. */
export function undiciConnections(): net.Socket[] {
  const connected: net.Socket[] = [];
  const onConnected = (message: unknown): void => {
    connected.push((message as { socket: net.Socket }).socket);
  };
  beforeAll(() => diagnostics.subscribe('undici:client:connected', onConnected));
  afterAll(() => diagnostics.unsubscribe('undici:client:connected', onConnected));
  afterEach(() => {
    connected.length = 0;
  });
  return connected;
}
