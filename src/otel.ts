/**
 * The OpenTelemetry instruments: the metrics of the one table (metrics/table.ts) the Prometheus
 * collector exports too, as observable instruments of a MeterProvider, read at collection time.
 * `@opentelemetry/api` is an optional peer, loaded only when needed (never at import).
 *
 * With no code: `import 'socktune'` or `node --import socktune/register` starts following the
 * global MeterProvider (`SOCKTUNE_OTEL`, default `auto`). Once an application sets one
 * (`metrics.setGlobalMeterProvider`, the SDK's `NodeSDK`), through whichever copy of the API,
 * socktune's instruments are created on it within 100 ms (in a process's first 10 s; within a
 * second after).
 * @module
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
/** @ts-ignore @opentelemetry/api is an optional peer: without it, these are `any` (the line stays in the published .d.ts). */
import type { MeterProvider, ObservableCallback, ObservableCounter, ObservableGauge } from '@opentelemetry/api';
import { codes, invalidArgType, invalidArgValue, readArgument, socktuneError } from './errors.js';
import type { Guard } from './guard/guard.js';
import { collectionContext, metrics, otelSamples, type CollectionContext, type PoolCounters } from './metrics/table.js';
import { exportOptions } from './metrics/options.js';

/** Options of {@link createInstruments}. */
export interface InstrumentOptions {
  /** The MeterProvider to create the instruments on (default: the global one, which must be set). */
  meterProvider?: MeterProvider;
  /** Count this network namespace's sockets (default true). */
  namespace?: boolean;
  /** Count this process's sockets (default true). */
  process?: boolean;
  /** Export the sysctl audit (default true). */
  audit?: boolean;
  /** How long one sysctl audit serves collections, in milliseconds (default 5000; 0 audits at every collection). */
  auditMaxAge?: number;
  /**
   * Connection guards to export, by the name used as their `socktune.guard` attribute. Those
   * `socktune/register` created are exported too, by rule name.
   */
  guards?: Record<string, Guard>;
  /** Pools whose retries and stale drops to export, by name (`createAgent()`, `createDispatcher()`); `register` under `socktune/register`. */
  pools?: Record<string, PoolCounters>;
  /** Count the closes socktune performs (the `socktune:close` channel) by reason and method (default true). */
  closes?: boolean;
}

/** What {@link createInstruments} created. */
export interface Instruments {
  /** The instrument names (`socktune.connection.count`, ...). */
  instruments: string[];
  /** Stops reporting: the instruments' callbacks are removed (the provider keeps the instruments, with no series). */
  close(): void;
}

/** The OpenTelemetry API, as socktune uses it. */
interface Api {
  metrics: {
    getMeterProvider(): MeterProvider;
    setGlobalMeterProvider(provider: MeterProvider): boolean;
    disable(): void;
  };
}

/**
 * The API's registry of globals, shared by every copy of `@opentelemetry/api` of major version 1
 * (the API's own cross-copy contract: `Symbol.for('opentelemetry.js.api.1')`). Read only to learn
 * whether a provider is set at all.
 */
const GLOBAL_KEY = Symbol.for('opentelemetry.js.api.1');

function globalProviderSet(): boolean {
  const registry = (globalThis as Record<symbol, { metrics?: unknown } | undefined>)[GLOBAL_KEY];
  return registry?.metrics !== undefined;
}

let version: string | undefined;
function packageVersion(): string | undefined {
  if (version === undefined) {
    try {
      version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      version = '';
    }
  }
  return version || undefined;
}

/** Providers that have socktune's instruments, and how to take them off. */
const attached = new WeakMap<object, Attached>();

interface Attached {
  names: string[];
  detach(): void;
  /** Made by the no-code mode (it stands down for an explicit call). */
  auto: boolean;
}

function attach(provider: MeterProvider, context: CollectionContext, auto: boolean): Attached {
  const meter = provider.getMeter('socktune', packageVersion());
  const removers: Array<() => void> = [];
  const names: string[] = [];
  for (const metric of metrics) {
    const options = { description: metric.help, unit: metric.otel.unit };
    const instrument: ObservableGauge | ObservableCounter =
      metric.kind === 'gauge' ? meter.createObservableGauge(metric.otel.name, options) : meter.createObservableCounter(metric.otel.name, options);
    // Asynchronous: the SDK awaits it, and the event loop keeps turning while the kernel is read.
    const callback: ObservableCallback = async (result) => {
      if (metric.enabled !== undefined && !metric.enabled(context)) return;
      for (const [attributes, value] of otelSamples(metric, await metric.samples(context))) result.observe(value, attributes);
    };
    instrument.addCallback(callback);
    removers.push(() => instrument.removeCallback(callback));
    names.push(metric.otel.name);
  }
  const entry: Attached = {
    names,
    auto,
    detach: () => {
      for (const remove of removers) remove();
      if (attached.get(provider) === entry) attached.delete(provider);
    },
  };
  attached.set(provider, entry);
  return entry;
}

async function loadApi(): Promise<Api> {
  try {
    return (await import('@opentelemetry/api')) as unknown as Api;
  } catch {
    throw socktuneError(codes.MISSING_PEER, 'createInstruments() needs @opentelemetry/api: npm install @opentelemetry/api');
  }
}

const knownOptions = ['meterProvider', 'namespace', 'process', 'audit', 'auditMaxAge', 'guards', 'pools', 'closes'];

function parseOptions(options: unknown): InstrumentOptions {
  const o = exportOptions(options, knownOptions);
  const { meterProvider } = o;
  if (
    meterProvider !== undefined &&
    (typeof meterProvider !== 'object' || meterProvider === null || typeof (meterProvider as MeterProvider).getMeter !== 'function')
  ) {
    throw invalidArgType('options.meterProvider', 'an OpenTelemetry MeterProvider', meterProvider);
  }
  return o as InstrumentOptions;
}

/**
 * Creates socktune's OpenTelemetry instruments on `meterProvider` (default: the global one), each
 * an observable instrument read at collection time, so they are exported by whatever reader and
 * exporter the provider has (Prometheus, OTLP, ...). The same metrics, with the same meaning, as
 * `createCollector` (see the guide for both names of each):
 * - `socktune.connection.count` (`{connection}`, gauge): TCP sockets by `network.connection.state`
 *   (`established`, `time_wait`, `close_wait`, ...), with `network.transport` `tcp` and
 *   `socktune.scope` `namespace` or `process`.
 * - `socktune.guard.tracked`, `socktune.guard.connection.count` (by state), `socktune.guard.closes`
 *   (by `socktune.close.reason`): each guard, by `socktune.guard`.
 * - `socktune.closes` (by `socktune.close.reason`, `socktune.close.method`) and
 *   `socktune.close.bytes_at_risk` (`By`): the closes socktune performed.
 * - `socktune.pool.retries` and `socktune.pool.stale`, by `socktune.pool`.
 * - `socktune.sockstat`, `socktune.kernel.tcp.events`, `socktune.audit.findings`, `socktune.audit.finding`.
 *
 * A collection never blocks the event loop: the socket table is dumped on a worker thread and
 * /proc is read on libuv's thread pool, as for the Prometheus collector.
 *
 * With no code, `import 'socktune'` and `socktune/register` do this on the global MeterProvider
 * whenever one is set (`SOCKTUNE_OTEL`); an explicit call on that provider replaces them.
 *
 * Rejects with `ERR_SOCKTUNE_MISSING_PEER` when `@opentelemetry/api` is not installed, with
 * `ERR_SOCKTUNE_NO_METER_PROVIDER` when no `meterProvider` is given and no global one is set, and
 * with `ERR_INVALID_ARG_VALUE` when the provider has socktune's instruments from another call.
 */
export async function createInstruments(options?: InstrumentOptions): Promise<Instruments> {
  const o = readArgument('options', options, () => parseOptions(options));
  const api = await loadApi();
  let provider = o.meterProvider;
  if (provider === undefined) {
    if (!globalProviderSet()) {
      throw socktuneError(
        codes.NO_METER_PROVIDER,
        'createInstruments() was given no meterProvider and no global MeterProvider is set: set one first (metrics.setGlobalMeterProvider, or the SDK) or pass options.meterProvider',
      );
    }
    provider = api.metrics.getMeterProvider();
  }
  const had = attached.get(provider);
  if (had !== undefined && !had.auto) {
    throw invalidArgValue(
      'options.meterProvider',
      'a MeterProvider',
      "already has socktune's instruments from another createInstruments() call: close() those first",
    );
  }
  // The no-code instruments on this provider stand down: the explicit ones report instead.
  had?.detach();
  explicit.add(provider);
  const entry = attach(provider, collectionContext(o), false);
  const p = provider;
  return {
    instruments: entry.names,
    close: () => {
      entry.detach();
      explicit.delete(p);
    },
  };
}

/** Providers with instruments from an explicit call: the no-code mode leaves them alone. */
const explicit = new WeakSet<object>();

/** `SOCKTUNE_OTEL`: `auto` (default), `1` (on: a missing `@opentelemetry/api` is an error) or `0` (off). */
export type OtelSetting = 'auto' | 'on' | 'off';

/** Reads `SOCKTUNE_OTEL`; throws a coded configuration error (`ERR_SOCKTUNE_CONFIG`) for any other value. */
export function otelSetting(value: string | undefined): OtelSetting {
  if (value === undefined || value === '' || value === 'auto') return 'auto';
  if (value === '1') return 'on';
  if (value === '0') return 'off';
  throw socktuneError('ERR_SOCKTUNE_CONFIG', `SOCKTUNE_OTEL: must be auto, 1 or 0; got ${JSON.stringify(value)}`);
}

/** Whether `@opentelemetry/api` can be found from here (resolved, not loaded). */
export function otelApiInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@opentelemetry/api');
    return true;
  } catch {
    return false;
  }
}

/** How often the no-code mode looks for a provider set or replaced: often at start-up, when applications set theirs. */
const WATCH_EARLY = 100;
const WATCH_EARLY_FOR = 10_000;
const WATCH_INTERVAL = 1000;
let following: OtelSetting | undefined;

/**
 * The no-code mode: follows the global MeterProvider from now on. Once per thread; never throws,
 * loads nothing and reads no file until a provider is set. The API's registry of globals is looked
 * at (one property read) every 100 ms for the first 10 s and every second after; once a provider
 * is there, `@opentelemetry/api` is loaded and socktune's instruments are created on the provider
 * (again on a provider that replaces it). Where the API cannot be loaded, one warning says so
 * (`SOCKTUNE_OTEL_UNAVAILABLE`; with `SOCKTUNE_OTEL=1`, `ERR_SOCKTUNE_MISSING_PEER`): a configured
 * provider is never left without socktune's metrics silently. Nothing keeps the process alive.
 * @internal
 */
export function followGlobalMeterProvider(setting: OtelSetting): void {
  if (setting === 'off' || following !== undefined) return;
  following = setting;
  let api: Api | undefined;
  let current: { provider: object; entry: Attached | undefined } | undefined;
  let context: CollectionContext | undefined;
  let timer: NodeJS.Timeout | undefined;
  const started = performance.now();
  const check = (): void => {
    if (!globalProviderSet()) {
      if (current?.entry !== undefined) current.entry.detach();
      current = undefined;
      return;
    }
    if (api === undefined) {
      try {
        api = createRequire(import.meta.url)('@opentelemetry/api') as Api;
      } catch {
        stopped = true;
        clearInterval(timer);
        process.emitWarning(
          'A global OpenTelemetry MeterProvider is set, but socktune cannot load @opentelemetry/api, so it reports no metric there: npm install @opentelemetry/api where socktune can resolve it',
          { code: setting === 'on' ? codes.MISSING_PEER : 'SOCKTUNE_OTEL_UNAVAILABLE' },
        );
        return;
      }
    }
    try {
      const provider = api.metrics.getMeterProvider();
      if (provider === current?.provider) return;
      if (current?.entry !== undefined) current.entry.detach();
      current = { provider, entry: undefined };
      if (explicit.has(provider) || attached.has(provider)) return;
      context ??= collectionContext({});
      current.entry = attach(provider, context, true);
    } catch {
      // A provider whose getMeter throws: looked at again next time.
      current = undefined;
    }
  };
  let stopped = false;
  let period = 0;
  const look = (): void => {
    check();
    if (stopped) return;
    if (timer === undefined) {
      period = WATCH_EARLY;
      timer = setInterval(look, period).unref();
    } else if (period === WATCH_EARLY && performance.now() - started > WATCH_EARLY_FOR) {
      clearInterval(timer);
      period = WATCH_INTERVAL;
      timer = setInterval(look, period).unref();
    }
  };
  look();
}
