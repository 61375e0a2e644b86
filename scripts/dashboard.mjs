// Writes the Grafana dashboards (dashboards/*.json) from one list of panels written against the
// metric table (src/metrics/table.ts): one for socktune's Prometheus collector (prom-client), one
// for its OpenTelemetry instruments as Prometheus stores them (the OpenTelemetry Prometheus
// exporter, or OTLP into Prometheus: dots become underscores, counters end in _total).
//
// A query names a metric as @name (the table's Prometheus name), a label as %label and a state as
// ~STATE (the kernel's name); each dashboard spells them its way.
// Usage: node scripts/dashboard.mjs [--check]   (--check: exit 1 when a file is not what it writes)
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { metrics, otelStates } from '../dist/metrics/table.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const byName = new Map(metrics.map((m) => [m.name, m]));

/** Panels: title, unit, queries (legend, expression), and a description. */
const panels = [
  {
    title: 'Connections of this process by state',
    unit: 'short',
    stack: true,
    description: 'TCP sockets this process holds, by kernel state (socktune_tcp_connections / socktune.connection.count, scope process).',
    targets: [['{{%state}}', 'sum by (%state) (@tcp_connections{%scope="process", $selector})']],
  },
  {
    title: 'CLOSE_WAIT and TIME_WAIT in the namespace',
    unit: 'short',
    description:
      'CLOSE_WAIT that grows is a leak (the application never closes what the peer ended); TIME_WAIT near the local port range fails connect() with EADDRNOTAVAIL.',
    targets: [
      ['CLOSE_WAIT {{instance}}', 'sum by (instance) (@tcp_connections{%scope="namespace", %state="~CLOSE_WAIT", $selector})'],
      ['TIME_WAIT {{instance}}', 'sum by (instance) (@tcp_connections{%scope="namespace", %state="~TIME_WAIT", $selector})'],
    ],
  },
  {
    title: 'Who closed connections first',
    unit: 'ops',
    stack: true,
    description: 'Connection ends per second by who closed first (peer-fin, peer-rst, local-end, local-destroy, local-rst), under socktune/register.',
    targets: [['{{%initiator}}', 'sum by (%initiator) (rate(@connection_ends_total{$selector}[$__rate_interval]))']],
  },
  {
    title: 'Why connections ended',
    unit: 'ops',
    description: "Connection ends per second by cause: socktune's reason, an error code, a timeout, the application or the peer.",
    targets: [['{{%direction}} {{%cause}}', 'sum by (%direction, %cause) (rate(@connection_ends_total{$selector}[$__rate_interval]))']],
  },
  {
    title: 'Connections the guards track',
    unit: 'short',
    description: 'Connections each connection guard tracks now.',
    targets: [['{{%guard}}', 'sum by (%guard) (@guard_tracked_connections{$selector})']],
  },
  {
    title: 'Guard closes by reason',
    unit: 'ops',
    stack: true,
    description: 'Connections the guards closed (half-closed, fin-wait, idle, heartbeat, shutdown, stale) or saw die (dead, reset), per second.',
    targets: [['{{%guard}} {{%reason}}', 'sum by (%guard, %reason) (rate(@guard_closed_total{$selector}[$__rate_interval]))']],
  },
  {
    title: 'Closes socktune performed, by method',
    unit: 'ops',
    description: 'RST (no TIME_WAIT here), FIN, or none (already gone), per second.',
    targets: [['{{%reason}} {{%method}}', 'sum by (%reason, %method) (rate(@closes_total{$selector}[$__rate_interval]))']],
  },
  {
    title: 'Bytes at risk on RST-on-close',
    unit: 'bytes',
    description: 'Bytes written but unacknowledged when a reset passed its drain timeout: the peer may never have received them. Should stay 0.',
    targets: [['{{%reason}}', 'sum by (%reason) (increase(@close_bytes_at_risk_total{$selector}[$__rate_interval]))']],
  },
  {
    title: 'Pool retries and stale connections',
    unit: 'ops',
    description: 'Requests sent once more because their pooled connection closed under them, and pooled connections dropped before reuse, per second.',
    targets: [
      ['retried {{%pool}}', 'sum by (%pool) (rate(@pool_retries_total{$selector}[$__rate_interval]))'],
      ['stale {{%pool}}', 'sum by (%pool) (rate(@pool_stale_total{$selector}[$__rate_interval]))'],
    ],
  },
  {
    title: 'Kernel TCP events',
    unit: 'ops',
    description: 'Resets sent, aborts, TIME_WAIT overflows and listen overflows in the namespace, per second (/proc/net/netstat, snmp).',
    targets: [
      [
        '{{%counter}}',
        'max by (%counter) (rate(@kernel_tcp_events_total{%counter=~"OutRsts|TCPAbortOnData|TCPAbortOnClose|TCPAbortOnTimeout|TCPTimeWaitOverflow|ListenOverflows", $selector}[$__rate_interval]))',
      ],
    ],
  },
  {
    title: 'sysctl audit findings',
    unit: 'short',
    description: "Findings of socktune doctor's sysctl audit by severity.",
    targets: [['{{%severity}}', 'max by (%severity) (@audit_findings{$selector})']],
  },
];

const flavours = {
  prometheus: {
    title: 'socktune (Prometheus collector)',
    uid: 'socktune-prom',
    metric: (m) => `socktune_${m.name}`,
    label: (_m, l) => l,
    state: (s) => s,
    variable: 'socktune_tcp_connections',
  },
  otel: {
    title: 'socktune (OpenTelemetry)',
    uid: 'socktune-otel',
    metric: (m) => `${m.otel.name.replace(/\./g, '_')}${m.kind === 'counter' ? '_total' : ''}`,
    label: (m, l) => {
      const a = m.otel.attributes[l];
      return (typeof a === 'string' ? a : a[0]).replace(/\./g, '_');
    },
    state: (s) => otelStates[s],
    variable: 'socktune_connection_count',
  },
};

function spell(expr, f) {
  // The metric of the query decides how its labels are spelled.
  const names = [...expr.matchAll(/@(\w+)/g)].map((x) => x[1]);
  const m = byName.get(names[0]);
  if (m === undefined || names.some((n) => !byName.has(n))) throw new Error(`unknown metric in ${expr}`);
  return expr
    .replace(/@(\w+)/g, (_, n) => f.metric(byName.get(n)))
    .replace(/%(\w+)/g, (_, l) => {
      if (!m.labels.includes(l)) throw new Error(`${m.name} has no label ${l}`);
      return f.label(m, l);
    })
    .replace(/~(\w+)/g, (_, s) => f.state(s))
    .replace(', $selector}', ', instance=~"$instance"}')
    .replace('{$selector}', '{instance=~"$instance"}');
}

function dashboard(f) {
  return {
    title: f.title,
    uid: f.uid,
    description:
      'TCP lifecycle of Node.js services: connections by state, who closed them, the connection guards, RST-on-close and pool retries (socktune). Generated by scripts/dashboard.mjs from src/metrics/table.ts.',
    tags: ['socktune', 'tcp', 'node'],
    editable: true,
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-1h', to: 'now' },
    refresh: '30s',
    templating: {
      list: [
        { name: 'datasource', type: 'datasource', query: 'prometheus', label: 'Data source' },
        {
          name: 'instance',
          type: 'query',
          label: 'Instance',
          datasource: { type: 'prometheus', uid: '${datasource}' },
          query: `label_values(${f.variable}, instance)`,
          includeAll: true,
          multi: true,
          allValue: '.*',
          refresh: 2,
        },
      ],
    },
    panels: panels.map((p, i) => ({
      id: i + 1,
      type: 'timeseries',
      title: p.title,
      description: p.description,
      datasource: { type: 'prometheus', uid: '${datasource}' },
      gridPos: { h: 8, w: 12, x: (i % 2) * 12, y: Math.floor(i / 2) * 8 },
      fieldConfig: { defaults: { unit: p.unit, custom: p.stack ? { stacking: { mode: 'normal' }, fillOpacity: 20 } : { fillOpacity: 10 } }, overrides: [] },
      targets: p.targets.map(([legend, expr], j) => ({
        refId: String.fromCharCode(65 + j),
        datasource: { type: 'prometheus', uid: '${datasource}' },
        expr: spell(expr, f),
        legendFormat: legend.replace(/%(\w+)/g, (_, l) => f.label(byName.get(/@(\w+)/.exec(expr)[1]), l)),
      })),
    })),
  };
}

const check = process.argv.includes('--check');
let stale = 0;
for (const [name, f] of Object.entries(flavours)) {
  const file = `${root}dashboards/socktune-${name}.json`;
  const text = `${JSON.stringify(dashboard(f), null, 2)}\n`;
  if (check) {
    let had = '';
    try {
      had = readFileSync(file, 'utf8');
    } catch {
      // missing
    }
    if (had !== text) {
      stale++;
      console.error(`${file} is not what scripts/dashboard.mjs writes: run npm run dashboard`);
    }
  } else writeFileSync(file, text);
}
process.exit(stale === 0 ? 0 : 1);
