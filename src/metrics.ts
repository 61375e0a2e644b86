/**
 * A Prometheus collector for prom-client (an optional peer dependency): gauges read from the
 * kernel at scrape time. A surface only: every number comes from the diagnostics layer.
 * @module
 */
import { scrapeStates } from './diagnose/states.js';
import { netCountersAsync, sockstatAsync } from './diagnose/proc.js';
import { sysctlAuditAsync, type SysctlAudit } from './diagnose/audit.js';
import { codes, invalidArgType, invalidArgValue, outOfRange, readArgument, socktuneError } from './errors.js';
/** @ts-ignore prom-client is an optional peer: without it, `Registry` is `any` (the line stays in the published .d.ts). */
import type { Registry } from 'prom-client';
import { Guard } from './guard/guard.js';
import { closeChannel, type CloseReason, type CloseReport } from './policy/reset.js';
import { registeredGuards } from './register/process.js';

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
  /** Count the closes socktune performs (the `socktune:close` channel) by reason and method (default true). */
  closes?: boolean;
}

/** Kernel TCP counters exported as `socktune_kernel_tcp_events_total{counter=...}` (monotonic since boot). */
export const kernelCounters = [
  ['TcpExt', 'TCPTimeWaitOverflow'],
  ['TcpExt', 'TW'],
  ['TcpExt', 'TCPAbortOnData'],
  ['TcpExt', 'TCPAbortOnClose'],
  ['TcpExt', 'TCPAbortOnTimeout'],
  ['TcpExt', 'TCPAbortOnLinger'],
  ['TcpExt', 'TCPKeepAlive'],
  ['TcpExt', 'ListenOverflows'],
  ['TcpExt', 'ListenDrops'],
  ['Tcp', 'OutRsts'],
  ['Tcp', 'ActiveOpens'],
  ['Tcp', 'PassiveOpens'],
  ['Tcp', 'AttemptFails'],
  ['Tcp', 'EstabResets'],
] as const;

/** What {@link createCollector} registered, to unregister with `registry.removeSingleMetric(name)`. */
export interface Collector {
  /** Names of the metrics registered. */
  metrics: string[];
}

const knownOptions = ['registry', 'prefix', 'namespace', 'process', 'audit', 'auditMaxAge', 'guards', 'closes'];
/** Prometheus metric names: https://prometheus.io/docs/concepts/data_model/ */
const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** Checks every option (own properties, each read once) before anything is registered. */
function validCollectorOptions(options: unknown): CollectorOptions {
  return readArgument('options', options, () => parseCollectorOptions(options));
}

function parseCollectorOptions(options: unknown): CollectorOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgType('options', 'of type object', options);
  const o: Record<string, unknown> = { ...options };
  for (const key of Object.keys(o)) {
    if (!knownOptions.includes(key)) throw invalidArgValue('options', key, `has no option '${key}'; known: ${knownOptions.join(', ')}`);
  }
  const { registry, prefix, auditMaxAge, guards } = o;
  if (registry !== undefined && (typeof registry !== 'object' || registry === null || typeof (registry as Registry).registerMetric !== 'function')) {
    throw invalidArgType('options.registry', 'a prom-client Registry', registry);
  }
  if (prefix !== undefined) {
    if (typeof prefix !== 'string') throw invalidArgType('options.prefix', 'of type string', prefix);
    if (prefix !== '' && !metricName.test(prefix)) throw invalidArgValue('options.prefix', prefix, 'must start a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)');
  }
  for (const key of ['namespace', 'process', 'audit', 'closes']) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') throw invalidArgType(`options.${key}`, 'of type boolean', o[key]);
  }
  if (auditMaxAge !== undefined) {
    if (typeof auditMaxAge !== 'number') throw invalidArgType('options.auditMaxAge', 'of type number', auditMaxAge);
    if (!Number.isInteger(auditMaxAge) || auditMaxAge < 0 || auditMaxAge > 2 ** 31 - 1) throw outOfRange('options.auditMaxAge', 'an integer >= 0 and <= 2147483647', auditMaxAge);
  }
  if (guards !== undefined) {
    if (typeof guards !== 'object' || guards === null || Array.isArray(guards)) throw invalidArgType('options.guards', 'an object of Guards by name', guards);
    const named: Record<string, Guard> = { ...(guards as Record<string, unknown>) } as Record<string, Guard>;
    for (const [name, g] of Object.entries(named)) {
      if (!(g instanceof Guard)) throw invalidArgType(`options.guards.${name}`, 'an instance of Guard', g);
    }
    o.guards = named;
  }
  return o as CollectorOptions;
}

/** Every close reason, checked against CloseReason by the compiler: a label value is one of these. */
const closeReasons: Record<CloseReason, true> = {
  close: true, timeout: true, idle: true, heartbeat: true, 'half-closed': true, 'fin-wait': true, dead: true, shutdown: true, stale: true,
};
const closeMethods: Record<CloseReport['method'], true> = { rst: true, fin: true, none: true };

/**
 * What the collector counts of a `socktune:close` message, or undefined for a message it cannot
 * read. The channel is public: anything may be published on it, and a throw in a subscriber is an
 * uncaught exception in the publisher's process. Unknown reasons and methods are not counted
 * either (each would be a new label value).
 */
function readClose(message: unknown): { reason: CloseReason; method: CloseReport['method']; bytesAtRisk: number } | undefined {
  try {
    if (typeof message !== 'object' || message === null) return undefined;
    const { reason, report } = message as { reason?: unknown; report?: unknown };
    if (typeof reason !== 'string' || !Object.hasOwn(closeReasons, reason)) return undefined;
    if (typeof report !== 'object' || report === null) return undefined;
    const { method, bytesAtRisk } = report as { method?: unknown; bytesAtRisk?: unknown };
    if (typeof method !== 'string' || !Object.hasOwn(closeMethods, method)) return undefined;
    if (typeof bytesAtRisk !== 'number' || !Number.isFinite(bytesAtRisk) || bytesAtRisk < 0) return undefined;
    return { reason: reason as CloseReason, method: method as CloseReport['method'], bytesAtRisk };
  } catch {
    return undefined; // a getter or Proxy trap that throws: unreadable too
  }
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
 * - `socktune_closes_total{reason,method}` and `socktune_close_bytes_at_risk_total{reason}`: every close
 *   socktune performed in this process since the collector was created (RST or FIN; bytes unacknowledged
 *   when a drain timeout passed).
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
    throw invalidArgValue(o.registry ? 'options.registry' : 'options.prefix', o.registry ? 'a Registry' : prefix, `already has socktune's metrics (${prefix}tcp_connections): a collector was created on it before; give another prefix or registry (or remove those metrics from it)`);
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

type Labels = Record<string, string>;
/** One series of a metric: its labels and its value. */
type Sample = [labels: Labels, value: number];

/** What the metrics read from: the scopes counted, the guards exported, one audit shared by a scrape, the closes counted. */
interface CollectionContext {
  scopes: Array<'namespace' | 'process'>;
  guards: Array<[string, Guard]>;
  audit: boolean;
  sysctlAudit(): Promise<SysctlAudit>;
  /** Closes counted since the collector was created, by `reason method`, and bytes at risk by reason; undefined when `closes: false`. */
  closes: { byMethod: Map<string, number>; atRisk: Map<string, number> } | undefined;
}

function collectionContext(o: CollectorOptions): CollectionContext {
  const scopes: CollectionContext['scopes'] = [];
  if (o.namespace !== false) scopes.push('namespace');
  if (o.process !== false) scopes.push('process');
  const maxAge = o.auditMaxAge ?? 5000;
  let cached: { at: number; audit: Promise<SysctlAudit> } | undefined;
  // One audit serves both audit gauges and every scrape within maxAge; it counts TIME_WAIT from
  // the scrape's dump instead of dumping again.
  const sysctlAudit = (): Promise<SysctlAudit> => {
    const now = performance.now();
    if (!cached || now - cached.at > maxAge) {
      const pending = scrapeStates().then((s) => sysctlAuditAsync(s.namespace));
      cached = { at: now, audit: pending };
      pending.catch(() => {
        if (cached?.audit === pending) cached = undefined; // a failed audit is retried at the next scrape
      });
    }
    return cached.audit;
  };
  let closes: CollectionContext['closes'];
  if (o.closes !== false) {
    const counted = { byMethod: new Map<string, number>(), atRisk: new Map<string, number>() };
    closes = counted;
    closeChannel.subscribe((message) => {
      const close = readClose(message);
      if (close === undefined) return;
      const key = `${close.reason} ${close.method}`;
      counted.byMethod.set(key, (counted.byMethod.get(key) ?? 0) + 1);
      if (close.bytesAtRisk > 0) counted.atRisk.set(close.reason, (counted.atRisk.get(close.reason) ?? 0) + close.bytesAtRisk);
    });
  }
  return { scopes, guards: Object.entries({ ...registeredGuards(), ...o.guards }), audit: o.audit !== false, sysctlAudit, closes };
}

/** A metric of the collector: what it is, when it is exported, and its series at scrape time. */
interface Metric {
  /** The name after the prefix. */
  name: string;
  kind: 'gauge' | 'counter';
  help: string;
  labels: readonly string[];
  /** Whether the collector exports it (default: always). */
  enabled?: (c: CollectionContext) => boolean;
  /** Its series, read when scraped. */
  samples(c: CollectionContext): Sample[] | Promise<Sample[]>;
}

/** Every metric socktune exports, in the order registered. */
const metrics: readonly Metric[] = [
  {
    name: 'tcp_connections',
    kind: 'gauge',
    help: 'TCP sockets by kernel state (netlink sock_diag), for the network namespace and for this process',
    labels: ['scope', 'state'],
    async samples(c) {
      const counted = await scrapeStates();
      return c.scopes.flatMap((scope) => Object.entries(counted[scope].states).map(([state, n]): Sample => [{ scope, state }, n]));
    },
  },
  {
    name: 'sockstat',
    kind: 'gauge',
    help: '/proc/net/sockstat: TCP sockets in use, orphaned, in TIME_WAIT, allocated, and TCP memory in pages',
    labels: ['protocol', 'field'],
    async samples() {
      const out: Sample[] = [];
      for (const [protocol, fields] of Object.entries(await sockstatAsync())) {
        if (protocol === 'sockets' || typeof fields !== 'object' || fields === null) continue;
        for (const [field, n] of Object.entries(fields as Record<string, number>)) out.push([{ protocol, field }, n]);
      }
      return out;
    },
  },
  {
    name: 'kernel_tcp_events_total',
    kind: 'counter',
    help: 'Kernel TCP counters since boot (/proc/net/netstat, /proc/net/snmp): TIME_WAIT overflows, resets sent, aborts, keepalive probes, listen overflows',
    labels: ['counter'],
    async samples() {
      // The kernel keeps the count; each scrape reports its value as it stands.
      const c = (await netCountersAsync()) as unknown as Record<string, Record<string, number> | undefined>;
      const out: Sample[] = [];
      for (const [group, name] of kernelCounters) {
        const v = c[group]?.[name];
        if (v !== undefined) out.push([{ counter: name }, v]);
      }
      return out;
    },
  },
  {
    name: 'guard_connections',
    kind: 'gauge',
    help: 'Connections tracked by each connection guard, by kernel state as of its latest scan',
    labels: ['guard', 'state'],
    enabled: (c) => c.guards.length > 0,
    samples: (c) =>
      c.guards.flatMap(([guard, g]) => {
        const { states, tracked } = g.stats();
        return [[{ guard, state: 'tracked' }, tracked] as Sample, ...Object.entries(states).map(([state, n]): Sample => [{ guard, state }, n ?? 0])];
      }),
  },
  {
    name: 'guard_closed_total',
    kind: 'counter',
    help: 'Connections each guard closed (half-closed, fin-wait, idle, heartbeat, shutdown, stale) or saw die (dead)',
    labels: ['guard', 'reason'],
    enabled: (c) => c.guards.length > 0,
    samples: (c) => c.guards.flatMap(([guard, g]) => Object.entries(g.stats().closed).map(([reason, n]): Sample => [{ guard, reason }, n])),
  },
  {
    name: 'closes_total',
    kind: 'counter',
    help: 'Connections socktune closed in this process, by reason and by how (rst, fin, none)',
    labels: ['reason', 'method'],
    enabled: (c) => c.closes !== undefined,
    samples: (c) =>
      [...c.closes!.byMethod].map(([key, n]): Sample => {
        const [reason, method] = key.split(' ');
        return [{ reason, method }, n];
      }),
  },
  {
    name: 'close_bytes_at_risk_total',
    kind: 'counter',
    help: 'Bytes written but unacknowledged when a close passed its drain timeout, by reason',
    labels: ['reason'],
    enabled: (c) => c.closes !== undefined,
    samples: (c) => [...c.closes!.atRisk].map(([reason, n]): Sample => [{ reason }, n]),
  },
  {
    name: 'audit_findings',
    kind: 'gauge',
    help: 'sysctl audit findings by severity (see socktune doctor)',
    labels: ['severity'],
    enabled: (c) => c.audit,
    async samples(c) {
      return Object.entries((await c.sysctlAudit()).summary).map(([severity, n]): Sample => [{ severity }, n]);
    },
  },
  {
    name: 'audit_finding',
    kind: 'gauge',
    help: 'One series per sysctl audit finding, value 1, labelled with its setting and severity',
    labels: ['setting', 'severity'],
    enabled: (c) => c.audit,
    async samples(c) {
      return (await c.sysctlAudit()).findings.map((f): Sample => [{ setting: f.setting, severity: f.severity }, 1]);
    },
  },
];
