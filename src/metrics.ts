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
function checkOptions(options: unknown): CollectorOptions {
  return readArgument('options', options, () => readOptions(options));
}

function readOptions(options: unknown): CollectorOptions {
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
  'max-age': true, 'too-many-pings': true,
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
  options = checkOptions(options);
  let client: typeof import('prom-client');
  try {
    client = await import('prom-client');
  } catch {
    throw socktuneError(codes.MISSING_PEER, 'createCollector() needs prom-client: npm install prom-client');
  }
  const prefix = options.prefix ?? 'socktune_';
  if ((options.registry ?? client.register).getSingleMetric(`${prefix}tcp_connections`) !== undefined) {
    throw invalidArgValue(options.registry ? 'options.registry' : 'options.prefix', options.registry ? 'a Registry' : prefix, `already has socktune's metrics (${prefix}tcp_connections): a collector was created on it before; give another prefix or registry (or remove those metrics from it)`);
  }
  const registers = options.registry ? [options.registry] : undefined;
  const scopes: Array<'namespace' | 'process'> = [];
  if (options.namespace !== false) scopes.push('namespace');
  if (options.process !== false) scopes.push('process');

  const names: string[] = [];
  const gauge = <L extends string>(config: import('prom-client').GaugeConfiguration<L>) => {
    names.push(config.name);
    return new client.Gauge<L>({ ...config, registers });
  };

  gauge({
    name: `${prefix}tcp_connections`,
    help: 'TCP sockets by kernel state (netlink sock_diag), for the network namespace and for this process',
    labelNames: ['scope', 'state'] as const,
    async collect() {
      const counted = await scrapeStates();
      for (const scope of scopes) {
        for (const [state, n] of Object.entries(counted[scope].states)) this.set({ scope, state }, n);
      }
    },
  });
  gauge({
    name: `${prefix}sockstat`,
    help: '/proc/net/sockstat: TCP sockets in use, orphaned, in TIME_WAIT, allocated, and TCP memory in pages',
    labelNames: ['protocol', 'field'] as const,
    async collect() {
      const s = await sockstatAsync();
      for (const [protocol, fields] of Object.entries(s)) {
        if (protocol === 'sockets' || typeof fields !== 'object' || fields === null) continue;
        for (const [field, n] of Object.entries(fields as Record<string, number>)) this.set({ protocol, field }, n);
      }
    },
  });

  const eventsName = `${prefix}kernel_tcp_events_total`;
  names.push(eventsName);
  new client.Counter({
    name: eventsName,
    help: 'Kernel TCP counters since boot (/proc/net/netstat, /proc/net/snmp): TIME_WAIT overflows, resets sent, aborts, keepalive probes, listen overflows',
    labelNames: ['counter'] as const,
    registers,
    async collect() {
      const c = (await netCountersAsync()) as unknown as Record<string, Record<string, number> | undefined>;
      // The kernel keeps the count; each scrape reports its value as it stands.
      this.reset();
      for (const [group, name] of kernelCounters) {
        const v = c[group]?.[name];
        if (v !== undefined) this.inc({ counter: name }, v);
      }
    },
  });

  const guards = Object.entries({ ...registeredGuards(), ...options.guards });
  if (guards.length > 0) {
    gauge({
      name: `${prefix}guard_connections`,
      help: 'Connections tracked by each connection guard, by kernel state as of its latest scan',
      labelNames: ['guard', 'state'] as const,
      collect() {
        this.reset();
        for (const [name, guard] of guards) {
          const { states, tracked } = guard.stats();
          this.set({ guard: name, state: 'tracked' }, tracked);
          for (const [state, n] of Object.entries(states)) this.set({ guard: name, state }, n ?? 0);
        }
      },
    });
    const closedName = `${prefix}guard_closed_total`;
    names.push(closedName);
    new client.Counter({
      name: closedName,
      help: 'Connections each guard closed (half-closed, fin-wait, idle, heartbeat, shutdown, stale) or saw die (dead)',
      labelNames: ['guard', 'reason'] as const,
      registers,
      collect() {
        this.reset();
        for (const [name, guard] of guards) {
          for (const [reason, n] of Object.entries(guard.stats().closed)) this.inc({ guard: name, reason }, n);
        }
      },
    });
  }

  if (options.closes !== false) {
    const closes = new client.Counter({
      name: `${prefix}closes_total`,
      help: 'Connections socktune closed in this process, by reason and by how (rst, fin, none)',
      labelNames: ['reason', 'method'] as const,
      registers,
    });
    const atRisk = new client.Counter({
      name: `${prefix}close_bytes_at_risk_total`,
      help: 'Bytes written but unacknowledged when a close passed its drain timeout, by reason',
      labelNames: ['reason'] as const,
      registers,
    });
    names.push(`${prefix}closes_total`, `${prefix}close_bytes_at_risk_total`);
    closeChannel.subscribe((message) => {
      const close = readClose(message);
      if (close === undefined) return;
      closes.inc({ reason: close.reason, method: close.method });
      if (close.bytesAtRisk > 0) atRisk.inc({ reason: close.reason }, close.bytesAtRisk);
    });
  }

  if (options.audit !== false) {
    const maxAge = options.auditMaxAge ?? 5000;
    let cached: { at: number; audit: Promise<SysctlAudit> } | undefined;
    // One audit serves both gauges and every scrape within maxAge; it counts TIME_WAIT from the
    // scrape's dump instead of dumping again.
    const audit = () => {
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
    gauge({
      name: `${prefix}audit_findings`,
      help: 'sysctl audit findings by severity (see socktune doctor)',
      labelNames: ['severity'] as const,
      async collect() {
        const a = await audit();
        for (const [severity, n] of Object.entries(a.summary)) this.set({ severity }, n);
      },
    });
    gauge({
      name: `${prefix}audit_finding`,
      help: 'One series per sysctl audit finding, value 1, labelled with its setting and severity',
      labelNames: ['setting', 'severity'] as const,
      async collect() {
        const a = await audit();
        this.reset();
        for (const f of a.findings) this.set({ setting: f.setting, severity: f.severity }, 1);
      },
    });
  }
  return { metrics: names };
}
