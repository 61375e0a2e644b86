// The Grafana dashboards (dashboards/*.json, written by scripts/dashboard.mjs from the metric
// table): every query names a metric socktune exports, with labels it exports, as the exporters
// really write them: prom-client's exposition for the collector's dashboard, the OpenTelemetry
// Prometheus exporter's for the OpenTelemetry one, both from one process under socktune/register.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot, runToEnd } from './helpers/register.js';

const fixture = fileURLToPath(new URL('./fixtures/dashboard-exports.mjs', import.meta.url));
/** Labels Prometheus adds to every series it scrapes. */
const targetLabels = ['instance', 'job'];

/** Metric name → the label names of its series in an exposition. */
function exported(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^(\w+)(?:\{(.*)\})? /.exec(line);
    if (!m) continue;
    const labels = out.get(m[1]) ?? new Set<string>();
    for (const [, name] of (m[2] ?? '').matchAll(/(\w+)="/g)) labels.add(name);
    out.set(m[1], labels);
  }
  return out;
}

/** The metrics a PromQL expression names, and the labels it uses (matchers, by/without, legends). */
function uses(expr: string): { metrics: string[]; labels: string[] } {
  // Label names may start with socktune_ too (socktune_scope): metric names are what is left
  // outside the matchers and the by/without lists.
  const bare = expr.replace(/\{[^}]*\}/g, '{}').replace(/\b(by|without)\s*\([^)]*\)/g, '$1 ()');
  const metrics = [...bare.matchAll(/\b(socktune_\w+)/g)].map((m) => m[1]);
  const labels = new Set<string>();
  for (const [, inside] of expr.matchAll(/\{([^}]*)\}/g)) for (const [, l] of inside.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) labels.add(l);
  for (const [, list] of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) for (const l of list.split(',')) labels.add(l.trim());
  return { metrics, labels: [...labels].filter(Boolean) };
}

interface Dashboard {
  templating: { list: Array<{ query?: string }> };
  panels: Array<{ title: string; targets: Array<{ expr: string; legendFormat: string }> }>;
}

describe('the Grafana dashboards', () => {
  it('are what scripts/dashboard.mjs writes from the metric table', () => {
    execFileSync(process.execPath, [join(repoRoot, 'scripts', 'dashboard.mjs'), '--check']);
  });

  it('every query names a metric socktune exports, with the labels it exports', async () => {
    const run = await runToEnd(['--import', 'socktune/register', fixture], { SOCKTUNE_POLICY: 'gracefulHeartbeat' });
    expect(run.code, run.stderr).toBe(0);
    const { prom, otel } = JSON.parse(run.stdout) as { prom: string; otel: string };
    for (const [file, text] of [
      ['socktune-prometheus.json', prom],
      ['socktune-otel.json', otel],
    ] as const) {
      const series = exported(text);
      const dashboard = JSON.parse(readFileSync(join(repoRoot, 'dashboards', file), 'utf8')) as Dashboard;
      const queries = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ where: `${file}: ${p.title}`, ...t })));
      expect(queries.length).toBeGreaterThan(10);
      const problems: string[] = [];
      for (const q of queries) {
        const { metrics, labels } = uses(q.expr);
        const legend = [...q.legendFormat.matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]);
        if (metrics.length === 0) problems.push(`${q.where}: no socktune metric in ${q.expr}`);
        for (const metric of metrics) {
          const has = series.get(metric);
          if (has === undefined) {
            problems.push(`${q.where}: ${metric} is not exported`);
            continue;
          }
          for (const l of [...labels, ...legend]) if (!has.has(l) && !targetLabels.includes(l)) problems.push(`${q.where}: ${metric} has no label ${l}`);
        }
      }
      for (const v of dashboard.templating.list) {
        const m = v.query === undefined ? null : /label_values\((\w+),\s*(\w+)\)/.exec(v.query);
        if (m && !series.has(m[1])) problems.push(`${file}: variable over ${m[1]}, which is not exported`);
      }
      expect(problems).toEqual([]);
    }
  });

  it('a query naming a metric or label that is not exported is caught (the check itself)', () => {
    const series = exported('socktune_tcp_connections{scope="process",state="LISTEN"} 1\n');
    expect(uses('sum by (state) (socktune_tcp_connections{scope="process"})')).toEqual({ metrics: ['socktune_tcp_connections'], labels: ['scope', 'state'] });
    expect(series.get('socktune_tcp_connections')).toEqual(new Set(['scope', 'state']));
    expect(series.has('socktune_tcp_connection')).toBe(false);
    expect(uses('rate(socktune_x_total{guard=~"a"}[5m])').labels).toEqual(['guard']);
    expect(uses('sum by (socktune_scope) (socktune_connection_count{socktune_guard="a"})')).toEqual({
      metrics: ['socktune_connection_count'],
      labels: ['socktune_guard', 'socktune_scope'],
    });
  });
});
