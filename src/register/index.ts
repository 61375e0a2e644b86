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
 * `SOCKTUNE_TRACE`, `SOCKTUNE_STRICT`, `SOCKTUNE_OTEL`, `SOCKTUNE_ENDS`) and starts at once. Every
 * connection's end is attributed (who closed first, why; `SOCKTUNE_ENDS=0`: not). With
 * `@opentelemetry/api` installed, socktune's metrics are reported through the application's global
 * MeterProvider as soon as it sets one (`SOCKTUNE_OTEL=0`: never; `1`: a missing API stops the
 * process, exit code 9). A bad configuration stops the process
 * before the application runs: one line on stderr naming the variable, file and field, and exit
 * code 9 (Node's own code for an invalid argument).
 *
 * What is not the configuration's fault fails open: on a host where socktune cannot work (no
 * native addon fits the platform or loads, as after a broken install; Node's TCP handles out of
 * reach, as under Node's permission model), one line on stderr says so
 * and the process runs untouched; `stats()` gives the reason. With `SOCKTUNE_STRICT=1` that too
 * stops the process (exit code 9). The exports reach what it started.
 * @module socktune/register
 */
// First: an unsupported Node stops here with an error naming the supported range.
import '../supported.js';
import type net from 'node:net';
import type { Guard, ShutdownOptions, ShutdownReport } from '../guard/guard.js';
import { addon } from '../binding.js';
import { tcpHandlesUnreachable } from '../handle.js';
import { codes, socktuneError } from '../errors.js';
import { CONFIG_ERROR, loadConfig, type RegisterConfig } from './config.js';
import { startEnds } from './ends.js';
import { followGlobalMeterProvider, otelApiInstalled, otelSetting, type OtelSetting } from '../otel.js';
import { closeRegistered, guardOf as guardOfSocket, register, registerInactive, registerStats, type RegisterStats } from './process.js';

export type { Direction, RegisterConfig, Rule, ShutdownConfig } from './config.js';
export type { RegisterStats } from './process.js';

/** The exit code of a process stopped by a bad configuration (or, with `SOCKTUNE_STRICT=1`, by a host socktune cannot work on). */
export const CONFIG_EXIT_CODE = 9;

/** `SOCKTUNE_STRICT`: `1` stops the process when socktune cannot work on this host; `0` or unset lets it run untouched. */
function strict(value: string | undefined): boolean {
  if (value === undefined || value === '0') return false;
  if (value === '1') return true;
  throw socktuneError(CONFIG_ERROR, `SOCKTUNE_STRICT: must be 1 or 0; got ${JSON.stringify(value)}`);
}

function start(): { config: RegisterConfig; guards: Readonly<Record<string, Guard>> } {
  let config: RegisterConfig;
  let stop: boolean;
  let otel: OtelSetting;
  let ends: boolean;
  try {
    stop = strict(process.env.SOCKTUNE_STRICT);
    otel = otelSetting(process.env.SOCKTUNE_OTEL);
    ends = endsSetting(process.env.SOCKTUNE_ENDS);
    config = loadConfig(process.env);
  } catch (err) {
    if ((err as { code?: string }).code !== CONFIG_ERROR) throw err;
    process.stderr.write(`socktune/register: bad configuration, not starting: ${(err as Error).message} (${CONFIG_ERROR})\n`);
    process.exit(CONFIG_EXIT_CODE);
  }
  if (otel === 'on' && !otelApiInstalled()) {
    // Asked for by name: a missing peer is the configuration's mistake.
    process.stderr.write(`socktune/register: SOCKTUNE_OTEL=1 but @opentelemetry/api cannot be found: npm install @opentelemetry/api (${codes.MISSING_PEER})\n`);
    process.exit(CONFIG_EXIT_CODE);
  }
  // socktune's metrics on the application's global MeterProvider, once it sets one.
  followGlobalMeterProvider(otel);
  const unavailable = (addon.error ?? tcpHandlesUnreachable()) as (Error & { code?: string }) | undefined;
  if (unavailable !== undefined) {
    // Not the configuration's fault: the process runs as without socktune, unless told otherwise.
    if (stop) {
      process.stderr.write(`socktune/register: cannot work here, stopping (SOCKTUNE_STRICT=1): ${unavailable.message} (${unavailable.code})\n`);
      process.exit(CONFIG_EXIT_CODE);
    }
    process.stderr.write(
      `socktune/register: not active, the process runs without it: ${firstSentence(unavailable.message)} (${unavailable.code}; SOCKTUNE_STRICT=1 stops instead)\n`,
    );
    registerInactive(unavailable);
    return { config, guards: Object.freeze({}) };
  }
  // Who closed each connection, for every connection from here on (SOCKTUNE_ENDS=0: not watched).
  if (ends) startEnds({ trace: config.trace });
  return { config, guards: register(config) };
}

/** `SOCKTUNE_ENDS`: `1` (default) attributes every connection's end; `0` does not. */
function endsSetting(value: string | undefined): boolean {
  if (value === undefined || value === '1') return true;
  if (value === '0') return false;
  throw socktuneError(CONFIG_ERROR, `SOCKTUNE_ENDS: must be 1 or 0; got ${JSON.stringify(value)}`);
}

/** The message up to its first sentence's end: the warning stays one line. */
function firstSentence(message: string): string {
  const line = message.split('\n')[0];
  const end = line.indexOf('. ');
  return end < 0 ? line : line.slice(0, end);
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
