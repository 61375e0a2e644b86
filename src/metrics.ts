/**
 * A Prometheus collector for prom-client (an optional peer dependency): the metrics of the one
 * table (metrics/table.ts) the OpenTelemetry instruments export too, read at scrape time. A
 * surface only: every number comes from the diagnostics layer, the guards and the close channel.
 * @module
 */
import { codes, invalidArgType, invalidArgValue, readArgument, socktuneError } from './errors.js';
/** @ts-ignore prom-client is an optional peer: without it, `Registry` is `any` (the line stays in the published .d.ts). */
import type { Registry } from 'prom-client';
import type { Guard } from './guard/guard.js';
import { collectionContext, metrics, type Labels, type PoolCounters } from './metrics/table.js';
import { exportOptions } from './metrics/options.js';

/** Options of {@link createCollector}. */
export interface CollectorOptions {
  /** Registry to register with (default: prom-client's global registry). */
  registry?: Registry;
  /** Metric name prefix (default `socktune_`). */
  prefix?: string;
  /** Count this network namespace's sockets (default true). */
  namespace?: boolean;
  /** Count this process's sockets (default true). */
  process?: boolean;
  /** Export the sysctl audit (default true). */
  audit?: boolean;
  /**
   * How long one sysctl audit serves scrapes, in milliseconds (default 5000; 0 audits at every
   * scrape). An audit reads ~15 files on the event loop; settings rarely change between scrapes.
   */
  auditMaxAge?: number;
  /**
   * Connection guards to export, by the name used as their `guard` label (e.g. `{ api: tuneServer(server, policy) }`).
   * Those `socktune/register` created are exported too, by rule name (`default`), unless a guard given here has that name.
   */
  guards?: Record<string, Guard>;
  /**
   * Count the closes socktune performs (the `socktune:close` channel) by reason and method (default
   * true). Counted from the first collector or instrument that asked, once per process, so every
   * export reports the same totals.
   */
  closes?: boolean;
  /**
   * Pools whose retries and stale drops to export, by the name used as their `pool` label: a
   * `createAgent()` agent or a `createDispatcher()` dispatcher (`{ retried, staleDropped? }`).
   * Under `socktune/register`, Node's own agents and the global fetch are exported as `register`.
   */
  pools?: Record<string, PoolCounters>;
}

export { kernelCounters } from './metrics/table.js';

/** What {@link createCollector} registered, to unregister with `registry.removeSingleMetric(name)`. */
export interface Collector {
  /** Names of the metrics registered. */
  metrics: string[];
}

const knownOptions = ['registry', 'prefix', 'namespace', 'process', 'audit', 'auditMaxAge', 'guards', 'closes', 'pools'];
/** Prometheus metric names: https://prometheus.io/docs/concepts/data_model/ */
const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** Checks every option (own properties, each read once) before anything is registered. */
function validCollectorOptions(options: unknown): CollectorOptions {
  return readArgument('options', options, () => parseCollectorOptions(options));
}

function parseCollectorOptions(options: unknown): CollectorOptions {
  const o = exportOptions(options, knownOptions);
  const { registry, prefix } = o;
  if (registry !== undefined && (typeof registry !== 'object' || registry === null || typeof (registry as Registry).registerMetric !== 'function')) {
    throw invalidArgType('options.registry', 'a prom-client Registry', registry);
  }
  if (prefix !== undefined) {
    if (typeof prefix !== 'string') throw invalidArgType('options.prefix', 'of type string', prefix);
    if (prefix !== '' && !metricName.test(prefix))
      throw invalidArgValue('options.prefix', prefix, 'must start a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)');
  }
  return o as CollectorOptions;
}

/**
 * Registers socktune's metrics with prom-client; every value is read from the kernel at scrape time.
 * - `socktune_tcp_connections{scope="namespace"|"process",state="TIME_WAIT"|...}`: sockets by kernel state.
 * - `socktune_sockstat{protocol="TCP",field="tw"|"orphan"|"inuse"|"alloc"|"mem"}`: /proc/net/sockstat.
 * - `socktune_kernel_tcp_events_total{counter="TCPTimeWaitOverflow"|"OutRsts"|...}`: /proc/net/netstat and snmp.
 * - `socktune_audit_findings{severity}` and `socktune_audit_finding{setting,severity}` (1 per finding).
 *
 * - `socktune_guard_connections{guard,state}`: connections a guard tracks, by kernel state at its latest scan.
 * - `socktune_guard_closed_total{guard,reason}`: connections a guard closed (or saw die), by reason.
 * - `socktune_guard_tracked_connections{guard}`: connections a guard tracks now.
 * - `socktune_closes_total{reason,method}` and `socktune_close_bytes_at_risk_total{reason}`: every close
 *   socktune performed in this process since the first collector or instrument was created (RST or
 *   FIN; bytes unacknowledged when a drain timeout passed).
 * - `socktune_pool_retries_total{pool}` and `socktune_pool_stale_total{pool}`: requests sent once more
 *   and pooled connections dropped before reuse, for each pool in `pools` and `register`.
 *
 * The OpenTelemetry instruments (`createInstruments`, and the global MeterProvider with no code)
 * export the same table under OpenTelemetry's names.
 *
 * A scrape never blocks the event loop on the socket table: the namespace's and this process's
 * sockets are counted from one sock_diag dump made on a worker thread (with this process's socket
 * inodes read there too), and scrapes that arrive while a dump is in flight share it. The audit is
 * computed from that dump's TIME_WAIT count and served for `auditMaxAge` ms. Every /proc file
 * (sockstat, counters, the audit's sysctls) is read on libuv's thread pool; the event loop only
 * parses a few KiB of text and formats the exposition.
 *
 * Rejects with `ERR_SOCKTUNE_MISSING_PEER` when prom-client is not installed, and with
 * `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` / `ERR_OUT_OF_RANGE` for a bad option.
 */
export async function createCollector(options?: CollectorOptions): Promise<Collector> {
  const o = validCollectorOptions(options);
  let client: typeof import('prom-client');
  try {
    client = await import('prom-client');
  } catch {
    throw socktuneError(codes.MISSING_PEER, 'createCollector() needs prom-client: npm install prom-client');
  }
  const prefix = o.prefix ?? 'socktune_';
  if ((o.registry ?? client.register).getSingleMetric(`${prefix}tcp_connections`) !== undefined) {
    throw invalidArgValue(
      o.registry ? 'options.registry' : 'options.prefix',
      o.registry ? 'a Registry' : prefix,
      `already has socktune's metrics (${prefix}tcp_connections): a collector was created on it before; give another prefix or registry (or remove those metrics from it)`,
    );
  }
  const registers = o.registry ? [o.registry] : undefined;
  const context = collectionContext(o);
  const names: string[] = [];
  for (const metric of metrics) {
    if (metric.enabled !== undefined && !metric.enabled(context)) continue;
    const name = `${prefix}${metric.name}`;
    names.push(name);
    const config = {
      name,
      help: metric.help,
      labelNames: metric.labels,
      registers,
      async collect(this: { reset(): void; set?(labels: Labels, value: number): void; inc?(labels: Labels, value: number): void }) {
        const samples = await metric.samples(context);
        // Each scrape reports the values as they stand: a series that is gone is gone.
        this.reset();
        for (const [labels, value] of samples) {
          if (this.set) this.set(labels, value);
          else this.inc!(labels, value);
        }
      },
    };
    if (metric.kind === 'gauge') new client.Gauge(config as never);
    else new client.Counter(config as never);
  }
  return { metrics: names };
}
