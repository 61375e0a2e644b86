/**
 * A Prometheus collector for prom-client (an optional peer dependency): gauges read from the
 * kernel at scrape time. A surface only: every number comes from the diagnostics layer.
 * @module
 */
import { connectionStates } from './diagnose/states.js';
import { netCounters, sockstat } from './diagnose/proc.js';
import { sysctlAudit } from './diagnose/audit.js';
import { codes, socktuneError } from './errors.js';
import type { Registry } from 'prom-client';

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
  /** Export the sysctl audit (default true; it reads ~15 files per scrape). */
  audit?: boolean;
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

/**
 * Registers socktune's metrics with prom-client; every value is read from the kernel at scrape time.
 * - `socktune_tcp_connections{scope="namespace"|"process",state="TIME_WAIT"|...}`: sockets by kernel state.
 * - `socktune_sockstat{protocol="TCP",field="tw"|"orphan"|"inuse"|"alloc"|"mem"}`: /proc/net/sockstat.
 * - `socktune_kernel_tcp_events_total{counter="TCPTimeWaitOverflow"|"OutRsts"|...}`: /proc/net/netstat and snmp.
 * - `socktune_audit_findings{severity}` and `socktune_audit_finding{setting,severity}` (1 per finding).
 *
 * Policy and guard counters join these when those layers exist.
 *
 * Throws `ERR_SOCKTUNE_MISSING_PEER` when prom-client is not installed.
 */
export async function createCollector(options: CollectorOptions = {}): Promise<Collector> {
  let client: typeof import('prom-client');
  try {
    client = await import('prom-client');
  } catch {
    throw socktuneError(codes.MISSING_PEER, 'createCollector() needs prom-client: npm install prom-client');
  }
  const prefix = options.prefix ?? 'socktune_';
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
    collect() {
      for (const scope of scopes) {
        const counts = connectionStates({ process: scope === 'process' });
        for (const [state, n] of Object.entries(counts.states)) this.set({ scope, state }, n);
      }
    },
  });
  gauge({
    name: `${prefix}sockstat`,
    help: '/proc/net/sockstat: TCP sockets in use, orphaned, in TIME_WAIT, allocated, and TCP memory in pages',
    labelNames: ['protocol', 'field'] as const,
    collect() {
      const s = sockstat();
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
    collect() {
      const c = netCounters() as unknown as Record<string, Record<string, number> | undefined>;
      // The kernel keeps the count; each scrape reports its value as it stands.
      this.reset();
      for (const [group, name] of kernelCounters) {
        const v = c[group]?.[name];
        if (v !== undefined) this.inc({ counter: name }, v);
      }
    },
  });

  if (options.audit !== false) {
    gauge({
      name: `${prefix}audit_findings`,
      help: 'sysctl audit findings by severity (see socktune doctor)',
      labelNames: ['severity'] as const,
      collect() {
        const a = sysctlAudit();
        for (const [severity, n] of Object.entries(a.summary)) this.set({ severity }, n);
      },
    });
    gauge({
      name: `${prefix}audit_finding`,
      help: 'One series per sysctl audit finding, value 1, labelled with its setting and severity',
      labelNames: ['setting', 'severity'] as const,
      collect() {
        this.reset();
        for (const f of sysctlAudit().findings) this.set({ setting: f.setting, severity: f.severity }, 1);
      },
    });
  }
  return { metrics: names };
}
