/**
 * The one table of socktune's metrics, read by both exporters: the Prometheus collector
 * (`createCollector`, prom-client) and the OpenTelemetry instruments (`createInstruments`, the
 * global MeterProvider). Each row says what a metric means once, with its Prometheus name and
 * labels and its OpenTelemetry name, unit and attributes, and reads its series at collection time
 * from the diagnostics layer, the guards and the close channel. A surface only: nothing here
 * decides behaviour, and nothing below reads it.
 * @module
 */
import { scrapeStates } from '../diagnose/states.js';
import { netCountersAsync, sockstatAsync } from '../diagnose/proc.js';
import { sysctlAuditAsync, type SysctlAudit } from '../diagnose/audit.js';
import type { Guard } from '../guard/guard.js';
import { closeChannel, type CloseReason, type CloseReport } from '../policy/reset.js';
import { registeredGuards, registerStats } from '../register/process.js';
import { attributing, connectionEnds } from '../register/ends.js';

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

export type Labels = Record<string, string>;
/** One series of a metric: its labels (Prometheus names) and its value. */
export type Sample = [labels: Labels, value: number];

/** A pool whose retries and stale drops are exported: a policy agent or dispatcher, or anything with the same counters. */
export interface PoolCounters {
  /** Requests sent once more because their pooled connection closed under them. */
  readonly retried: number;
  /** Pooled connections dropped before reuse (the kernel no longer held them as ESTABLISHED). */
  readonly staleDropped?: number;
}

/** What the metrics read from: the scopes counted, the guards and pools exported, one audit shared by a collection, the closes counted. */
export interface CollectionContext {
  scopes: Array<'namespace' | 'process'>;
  /** The guards exported now, by name (read at each collection: `socktune/register`'s appear once it runs). */
  guards(): Array<[string, Guard]>;
  /** The pools exported now, by name (`register`: Node's own agents and the global fetch under `socktune/register`). */
  pools(): Array<[string, PoolCounters]>;
  audit: boolean;
  sysctlAudit(): Promise<SysctlAudit>;
  /** The closes counted in this process (the `socktune:close` channel); undefined when `closes: false`. */
  closes: CloseTally | undefined;
}

/** What a context is made from: the options both exporters share. */
export interface ContextOptions {
  namespace?: boolean;
  process?: boolean;
  audit?: boolean;
  auditMaxAge?: number;
  guards?: Record<string, Guard>;
  pools?: Record<string, PoolCounters>;
  closes?: boolean;
}

export function collectionContext(o: ContextOptions): CollectionContext {
  const scopes: CollectionContext['scopes'] = [];
  if (o.namespace !== false) scopes.push('namespace');
  if (o.process !== false) scopes.push('process');
  const maxAge = o.auditMaxAge ?? 5000;
  let cached: { at: number; audit: Promise<SysctlAudit> } | undefined;
  // One audit serves both audit gauges and every collection within maxAge; it counts TIME_WAIT
  // from the collection's dump instead of dumping again.
  const sysctlAudit = (): Promise<SysctlAudit> => {
    const now = performance.now();
    if (!cached || now - cached.at > maxAge) {
      const pending = scrapeStates().then((s) => sysctlAuditAsync(s.namespace));
      cached = { at: now, audit: pending };
      pending.catch(() => {
        if (cached?.audit === pending) cached = undefined; // a failed audit is retried at the next collection
      });
    }
    return cached.audit;
  };
  const given = { ...o.guards };
  const pools = { ...o.pools };
  return {
    scopes,
    guards: () => Object.entries({ ...registeredGuards(), ...given }),
    pools: () => {
      const out: Array<[string, PoolCounters]> = Object.entries(pools);
      // socktune/register's own: Node's agents and the global fetch.
      if (registerStats().active && !Object.hasOwn(pools, 'register')) {
        out.unshift([
          'register',
          {
            get retried() {
              return registerStats().retried;
            },
            get staleDropped() {
              return registerStats().stale;
            },
          },
        ]);
      }
      return out;
    },
    audit: o.audit !== false,
    sysctlAudit,
    closes: o.closes === false ? undefined : closeTally(),
  };
}

/** Every close reason, checked against CloseReason by the compiler: a label value is one of these. */
const closeReasons: Record<CloseReason, true> = {
  close: true,
  timeout: true,
  idle: true,
  heartbeat: true,
  'half-closed': true,
  'fin-wait': true,
  dead: true,
  shutdown: true,
  stale: true,
  'max-age': true,
  'too-many-pings': true,
};
const closeMethods: Record<CloseReport['method'], true> = { rst: true, fin: true, none: true };

/**
 * What is counted of a `socktune:close` message, or undefined for a message that cannot be read.
 * The channel is public: anything may be published on it, and a throw in a subscriber is an
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

/** Closes counted by `reason method`, and bytes at risk by reason. */
export interface CloseTally {
  byMethod: Map<string, number>;
  atRisk: Map<string, number>;
}

let tally: CloseTally | undefined;

/**
 * The closes socktune performed in this process (thread), counted from the first exporter that
 * asked: one subscription serves every collector and every instrument, so both exports report
 * the same totals.
 */
export function closeTally(): CloseTally {
  if (tally !== undefined) return tally;
  const counted: CloseTally = { byMethod: new Map(), atRisk: new Map() };
  tally = counted;
  closeChannel.subscribe((message) => {
    const close = readClose(message);
    if (close === undefined) return;
    const key = `${close.reason} ${close.method}`;
    counted.byMethod.set(key, (counted.byMethod.get(key) ?? 0) + 1);
    if (close.bytesAtRisk > 0) counted.atRisk.set(close.reason, (counted.atRisk.get(close.reason) ?? 0) + close.bytesAtRisk);
  });
  return counted;
}

/**
 * How a Prometheus label becomes an OpenTelemetry attribute: its attribute name, and optionally
 * how its value is spelled there (`undefined`: the series is not exported to OpenTelemetry).
 */
export type AttributeOf = string | [name: string, value: (label: string) => string | undefined];

/** The OpenTelemetry side of a metric. */
export interface OtelName {
  /** Instrument name (OpenTelemetry's conventions: dotted, lower case, namespaced `socktune.`). */
  name: string;
  /** UCUM unit: `{connection}`, `By`, `1`, ... */
  unit: string;
  /** Each label's attribute. */
  attributes: Record<string, AttributeOf>;
  /** Attributes every series carries (`network.transport: 'tcp'`). */
  fixed?: Record<string, string>;
}

/** A metric: what it is, when it is exported, and its series at collection time. */
export interface Metric {
  /** The Prometheus name after the prefix (`tcp_connections`). */
  name: string;
  /** Gauge: a value as it stands. Counter: a total that only grows (reported cumulatively). */
  kind: 'gauge' | 'counter';
  help: string;
  /** Prometheus label names. */
  labels: readonly string[];
  otel: OtelName;
  /** Whether it is exported (default: always). */
  enabled?: (c: CollectionContext) => boolean;
  /** Its series, read when collected. */
  samples(c: CollectionContext): Sample[] | Promise<Sample[]>;
}

/**
 * OpenTelemetry's spelling of a kernel TCP state (semantic conventions, `network.connection.state`).
 * A request socket (NEW_SYN_RECV) is a connection in SYN_RECV, as `ss` shows it.
 */
export const otelStates: Readonly<Record<string, string>> = Object.freeze({
  ESTABLISHED: 'established',
  SYN_SENT: 'syn_sent',
  SYN_RECV: 'syn_received',
  NEW_SYN_RECV: 'syn_received',
  FIN_WAIT1: 'fin_wait_1',
  FIN_WAIT2: 'fin_wait_2',
  TIME_WAIT: 'time_wait',
  CLOSE: 'closed',
  CLOSE_WAIT: 'close_wait',
  LAST_ACK: 'last_ack',
  LISTEN: 'listen',
  CLOSING: 'closing',
});

const connectionState: AttributeOf = ['network.connection.state', (s) => otelStates[s]];
const tcp = { 'network.transport': 'tcp' };

/** Every metric socktune exports, in the order registered. */
export const metrics: readonly Metric[] = [
  {
    name: 'tcp_connections',
    kind: 'gauge',
    help: 'TCP sockets by kernel state (netlink sock_diag), for the network namespace and for this process',
    labels: ['scope', 'state'],
    otel: { name: 'socktune.connection.count', unit: '{connection}', attributes: { scope: 'socktune.scope', state: connectionState }, fixed: tcp },
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
    otel: { name: 'socktune.sockstat', unit: '1', attributes: { protocol: 'socktune.sockstat.protocol', field: 'socktune.sockstat.field' } },
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
    otel: { name: 'socktune.kernel.tcp.events', unit: '{event}', attributes: { counter: 'socktune.kernel.counter' } },
    async samples() {
      // The kernel keeps the count; each collection reports its value as it stands.
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
    help: 'Connections tracked by each connection guard, by kernel state as of its latest scan (state="tracked": all it tracks, also socktune_guard_tracked_connections)',
    labels: ['guard', 'state'],
    // "tracked" is no TCP state: OpenTelemetry has it as socktune.guard.tracked only.
    otel: { name: 'socktune.guard.connection.count', unit: '{connection}', attributes: { guard: 'socktune.guard', state: connectionState }, fixed: tcp },
    enabled: (c) => c.guards().length > 0,
    samples: (c) =>
      c.guards().flatMap(([guard, g]) => {
        const { states, tracked } = g.stats();
        return [[{ guard, state: 'tracked' }, tracked] as Sample, ...Object.entries(states).map(([state, n]): Sample => [{ guard, state }, n ?? 0])];
      }),
  },
  {
    name: 'guard_tracked_connections',
    kind: 'gauge',
    help: 'Connections each connection guard tracks now',
    labels: ['guard'],
    otel: { name: 'socktune.guard.tracked', unit: '{connection}', attributes: { guard: 'socktune.guard' } },
    enabled: (c) => c.guards().length > 0,
    samples: (c) => c.guards().map(([guard, g]): Sample => [{ guard }, g.stats().tracked]),
  },
  {
    name: 'guard_closed_total',
    kind: 'counter',
    help: 'Connections each guard closed (half-closed, fin-wait, idle, heartbeat, shutdown, stale) or saw die (dead, reset)',
    labels: ['guard', 'reason'],
    otel: { name: 'socktune.guard.closes', unit: '{connection}', attributes: { guard: 'socktune.guard', reason: 'socktune.close.reason' } },
    enabled: (c) => c.guards().length > 0,
    samples: (c) => c.guards().flatMap(([guard, g]) => Object.entries(g.stats().closed).map(([reason, n]): Sample => [{ guard, reason }, n])),
  },
  {
    name: 'closes_total',
    kind: 'counter',
    help: 'Connections socktune closed in this process, by reason and by how (rst, fin, none)',
    labels: ['reason', 'method'],
    otel: { name: 'socktune.closes', unit: '{connection}', attributes: { reason: 'socktune.close.reason', method: 'socktune.close.method' } },
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
    help: 'Bytes written but unacknowledged when a close passed its drain timeout (RST: the peer may never receive them), by reason',
    labels: ['reason'],
    otel: { name: 'socktune.close.bytes_at_risk', unit: 'By', attributes: { reason: 'socktune.close.reason' } },
    enabled: (c) => c.closes !== undefined,
    samples: (c) => [...c.closes!.atRisk].map(([reason, n]): Sample => [{ reason }, n]),
  },
  {
    name: 'connection_ends_total',
    kind: 'counter',
    help: 'TCP connections of this process that ended (socktune/register), by direction, who closed first (peer-fin, peer-rst, local-end, local-destroy, local-rst) and why',
    labels: ['direction', 'initiator', 'cause'],
    otel: {
      name: 'socktune.connection.ends',
      unit: '{connection}',
      attributes: { direction: 'socktune.connection.direction', initiator: 'socktune.close.initiator', cause: 'socktune.close.cause' },
      fixed: tcp,
    },
    enabled: () => attributing(),
    samples: () =>
      [...connectionEnds()].map(([key, n]): Sample => {
        const [direction, initiator, cause] = key.split(' ');
        return [{ direction, initiator, cause }, n];
      }),
  },
  {
    name: 'pool_retries_total',
    kind: 'counter',
    help: "Requests sent once more on a new connection because their pooled connection was closed under them, by pool (register: Node's agents and the global fetch under socktune/register)",
    labels: ['pool'],
    otel: { name: 'socktune.pool.retries', unit: '{request}', attributes: { pool: 'socktune.pool' } },
    enabled: (c) => c.pools().length > 0,
    samples: (c) => c.pools().map(([pool, p]): Sample => [{ pool }, p.retried]),
  },
  {
    name: 'pool_stale_total',
    kind: 'counter',
    help: 'Pooled connections dropped before reuse because the server had closed them, by pool',
    labels: ['pool'],
    otel: { name: 'socktune.pool.stale', unit: '{connection}', attributes: { pool: 'socktune.pool' } },
    enabled: (c) => c.pools().length > 0,
    samples: (c) => c.pools().flatMap(([pool, p]): Sample[] => (p.staleDropped === undefined ? [] : [[{ pool }, p.staleDropped]])),
  },
  {
    name: 'audit_findings',
    kind: 'gauge',
    help: 'sysctl audit findings by severity (see socktune doctor)',
    labels: ['severity'],
    otel: { name: 'socktune.audit.findings', unit: '{finding}', attributes: { severity: 'socktune.audit.severity' } },
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
    otel: { name: 'socktune.audit.finding', unit: '1', attributes: { setting: 'socktune.audit.setting', severity: 'socktune.audit.severity' } },
    enabled: (c) => c.audit,
    async samples(c) {
      return (await c.sysctlAudit()).findings.map((f): Sample => [{ setting: f.setting, severity: f.severity }, 1]);
    },
  },
];

/**
 * A metric's series as OpenTelemetry attributes: labels renamed and respelled, series that have no
 * OpenTelemetry spelling left out, and series that become one attribute set (SYN_RECV and
 * NEW_SYN_RECV are both `syn_received`) added up.
 */
export function otelSamples(metric: Metric, samples: Sample[]): Array<[attributes: Labels, value: number]> {
  const out = new Map<string, [Labels, number]>();
  next: for (const [labels, value] of samples) {
    const attributes: Labels = { ...metric.otel.fixed };
    for (const [label, v] of Object.entries(labels)) {
      const to = metric.otel.attributes[label];
      if (to === undefined) continue;
      if (typeof to === 'string') attributes[to] = v;
      else {
        const spelled = to[1](v);
        if (spelled === undefined) continue next;
        attributes[to[0]] = spelled;
      }
    }
    const key = JSON.stringify(attributes);
    const had = out.get(key);
    if (had) had[1] += value;
    else out.set(key, [attributes, value]);
  }
  return [...out.values()];
}
