/**
 * `socktune/register`: policies on every TCP connection a Node process opens or accepts, with no
 * change to the application.
 *
 * ```sh
 * SOCKTUNE_POLICY=gracefulHeartbeat node --import socktune/register app.js
 * SOCKTUNE_POLICY=gracefulHeartbeat node --require socktune/register app.cjs
 * NODE_OPTIONS=--import=socktune/register SOCKTUNE_CONFIG=/etc/app/socktune.json npm start
 * ```
 *
 * Loading this module reads the configuration (`SOCKTUNE_POLICY`, `SOCKTUNE_CONFIG`,
 * `SOCKTUNE_TRACE`) and starts at once. A bad configuration stops the process before the
 * application runs: one line on stderr naming the variable, file and field, and exit code 9
 * (Node's own code for an invalid argument). The exports reach what it started.
 * @module socktune/register
 */
import type net from 'node:net';
import type { Guard, ShutdownOptions, ShutdownReport } from '../guard/guard.js';
import { CONFIG_ERROR, loadConfig, type RegisterConfig } from './config.js';
import { closeRegistered, guardOf as guardOfSocket, register, registerStats, type RegisterStats } from './process.js';

export type { Direction, RegisterConfig, Rule } from './config.js';
export type { RegisterStats } from './process.js';

/** The exit code of a process stopped by a bad configuration. */
export const CONFIG_EXIT_CODE = 9;

function start(): { config: RegisterConfig; guards: Readonly<Record<string, Guard>> } {
  try {
    const config = loadConfig(process.env);
    return { config, guards: register(config) };
  } catch (err) {
    if ((err as { code?: string }).code !== CONFIG_ERROR) throw err;
    process.stderr.write(`socktune/register: bad configuration, not starting: ${(err as Error).message} (${CONFIG_ERROR})\n`);
    process.exit(CONFIG_EXIT_CODE);
  }
}

const started = start();

/** The configuration in force: its source, the rules in order (the default policy last, named `default`) and whether tracing is on. */
export const config: RegisterConfig = started.config;

/**
 * The guards, one per rule with a policy, by rule name (`default` for `SOCKTUNE_POLICY`): their
 * `stats()`, events (`'closing'`, `'closed'` with `origin` under trace, `'idle'`) and `close()`.
 * `createCollector()` exports them without being told.
 */
export const guards: Readonly<Record<string, Guard>> = started.guards;

/** What the registration did with the connections it saw (opened, accepted, tuned, untouched, ...). */
export function stats(): RegisterStats {
  return registerStats();
}

/** The guard of a connection `socktune/register` put under a policy; `undefined` for any other socket. */
export function guardOf(socket: net.Socket): Guard | undefined {
  return guardOfSocket(socket);
}

/**
 * Graceful shutdown of every guard at once: the connections they track are ended (the peer sees
 * EOF), given up to `timeout` (default 10 000 ms) to finish, then closed the policy's way. Stop
 * your servers (`server.close()`) first. Resolves with the totals.
 */
export function close(options?: ShutdownOptions): Promise<ShutdownReport> {
  return closeRegistered(options);
}
