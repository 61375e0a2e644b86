// End to end with real components: an application under socktune/register whose only metrics code
// is the OpenTelemetry SDK with two readers, the Prometheus exporter scraped by a real Prometheus
// server (Debian's prometheus, started here) and the OTLP/HTTP exporter sending to a receiver this
// test runs. The application sits in a network namespace of its own, with sockets in known states
// (test/fixtures/states.mjs); Prometheus and the receiver are outside it, across a veth pair.
//
// What each stored value is compared with: `ss -Htan` in the application's namespace, run just
// before and just after the sample was taken; a sample counts when both ss runs agree (the state of
// the namespace did not move around it), and then it must equal them, state by state.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { otelStates } from '../../src/metrics/table.js';
import { canUse } from '../helpers/env.js';
import { ssCounts } from '../helpers/netns.js';
import { startApp, type App } from '../helpers/register.js';
import { VethPeer } from '../helpers/veth.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

/** Kernel state → count, in OpenTelemetry's spelling (SYN_RECV and NEW_SYN_RECV both syn_received). */
function spelled(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [kernel, name] of Object.entries(otelStates)) out[name] = (out[name] ?? 0) + (counts[kernel] ?? 0);
  return out;
}

describe.runIf(canUse('ip', 'ss', 'prometheus'))('OpenTelemetry SDK → Prometheus exporter → a real Prometheus, and → OTLP/HTTP → a receiver', () => {
  const peer = new VethPeer('otele2e', 62);
  const dir = mkdtempSync(join(tmpdir(), 'socktune-otel-e2e-'));
  const children: ChildProcess[] = [];
  let app: App;
  const exports: Array<{ at: number; points: Array<{ name: string; attributes: Record<string, string>; value: number }> }> = [];

  const ss = async () => spelled(ssCounts(await peer.ns.exec('ss', ['-Htan'])));

  beforeAll(async () => {
    peer.create();
    await peer.ns.start(fixture('states.mjs'), ['2', '10', '30', '5']);
    // The receiver, outside the application's namespace.
    const receiver = spawn(process.execPath, [fixture('otlp-receiver.mjs'), peer.hostAddr, '4318'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(receiver);
    let buf = '';
    receiver.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (line.points) exports.push(line);
      }
    });
    app = await startApp(fixture('otel-e2e-app.mjs'), {
      ns: peer.ns.name,
      nodeArgs: ['--import', 'socktune/register'],
      env: { SOCKTUNE_POLICY: 'gracefulHeartbeat' },
      args: [peer.peerAddr, `http://${peer.hostAddr}:4318/v1/metrics`],
    });
    writeFileSync(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: app',
        `    static_configs: [{ targets: ['${peer.peerAddr}:9464'] }]`,
        '',
      ].join('\n'),
    );
    const prometheus = spawn(
      'prometheus',
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=${peer.hostAddr}:9090`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.push(prometheus);
    let log = '';
    prometheus.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
    for (let i = 0; i < 300 && !log.includes('Server is ready to receive web requests'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(log, 'prometheus did not start').toContain('Server is ready to receive web requests');
  }, 60_000);

  afterAll(async () => {
    await app?.stop();
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await once(c, 'exit');
      }
    }
    await peer.destroy();
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  async function query(promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
    const res = await fetch(`http://${peer.hostAddr}:9090/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    expect(body.status).toBe('success');
    return body.data.result;
  }

  /** Samples of the namespace's counts Prometheus stored (by state), and when the app was scraped. */
  async function scraped(): Promise<{ at: number; states: Record<string, number> }> {
    const rows = await query('timestamp(socktune_connection_count{socktune_scope="namespace",network_transport="tcp"})');
    const values = await query('socktune_connection_count{socktune_scope="namespace",network_transport="tcp"}');
    const at = rows.length === 0 ? 0 : Math.min(...rows.map((r) => Number(r.value[1]) * 1000));
    return { at, states: Object.fromEntries(values.map((r) => [r.metric.network_connection_state, Number(r.value[1])])) };
  }

  it('what Prometheus stored equals ss at the same moment, state by state', async () => {
    let matched = 0;
    const deadline = Date.now() + 40_000;
    while (matched < 3 && Date.now() < deadline) {
      const before = await ss();
      const since = Date.now();
      let sample = await scraped();
      // The next scrape after the first ss.
      while (sample.at <= since && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        sample = await scraped();
      }
      const after = await ss();
      if (JSON.stringify(before) !== JSON.stringify(after)) continue; // the namespace moved around the scrape
      expect(sample.states).toEqual(before);
      matched++;
    }
    expect(matched).toBe(3);
    // The known sockets, as Prometheus has them.
    const last = (await scraped()).states;
    expect(last.close_wait).toBe(5);
    expect(last.time_wait).toBe(30);
    expect(last.listen).toBeGreaterThanOrEqual(3); // the fixture's 2 and the exporter's
    // register's guard and the semantic-convention attributes, as Prometheus names them.
    expect((await query('socktune_guard_tracked{socktune_guard="default"}')).length).toBe(1);
    expect((await query('socktune_kernel_tcp_events_total{socktune_kernel_counter="ActiveOpens"}')).length).toBe(1);
  }, 60_000);

  it('what the OTLP receiver got equals ss at the same moment, state by state', async () => {
    let matched = 0;
    const deadline = Date.now() + 30_000;
    while (matched < 3 && Date.now() < deadline) {
      const before = await ss();
      const seen = exports.length;
      while (exports.length === seen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const after = await ss();
      if (JSON.stringify(before) !== JSON.stringify(after)) continue;
      const got = exports[exports.length - 1].points.filter((p) => p.name === 'socktune.connection.count' && p.attributes['socktune.scope'] === 'namespace');
      expect(got.every((p) => p.attributes['network.transport'] === 'tcp')).toBe(true);
      expect(Object.fromEntries(got.map((p) => [p.attributes['network.connection.state'], p.value]))).toEqual(before);
      matched++;
    }
    expect(matched).toBe(3);
    const names = new Set(exports.at(-1)!.points.map((p) => p.name));
    for (const name of ['socktune.connection.count', 'socktune.guard.tracked', 'socktune.kernel.tcp.events', 'socktune.sockstat'])
      expect(names).toContain(name);
  }, 60_000);
});
