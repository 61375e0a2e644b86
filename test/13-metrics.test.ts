// The Prometheus collector: its exposition parses with prom-client's own registry, and its numbers
// are the kernel's (sockets made in a namespace of the test's own, read by ss and nstat).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import net from 'node:net';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createCollector, presets, tune, tuneServer } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { Netns, nstat, ssCounts } from './helpers/netns.js';
import { closeAll, pair } from './helpers/sockets.js';

const fixture = fileURLToPath(new URL('./fixtures/metrics.mjs', import.meta.url));
const states = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function samples(json: Array<{ name: string; values: Array<{ labels: Record<string, string>; value: number }> }>): Sample[] {
  return json.flatMap((m) => m.values.map((v) => ({ name: m.name, labels: v.labels, value: v.value })));
}

describe('createCollector in this process', () => {
  afterAll(closeAll);

  it("registers its metrics and counts this process's sockets", async () => {
    const registry = new Registry();
    const { metrics } = await createCollector({ registry });
    expect(metrics).toEqual([
      'socktune_tcp_connections',
      'socktune_sockstat',
      'socktune_kernel_tcp_events_total',
      'socktune_closes_total',
      'socktune_close_bytes_at_risk_total',
      'socktune_audit_findings',
      'socktune_audit_finding',
    ]);
    const before = samples((await registry.getMetricsAsJSON()) as never);
    await pair();
    const after = samples((await registry.getMetricsAsJSON()) as never);
    const est = (s: Sample[]) =>
      s.find((x) => x.name === 'socktune_tcp_connections' && x.labels.scope === 'process' && x.labels.state === 'ESTABLISHED')!.value;
    expect(est(after) - est(before)).toBe(2);
    const text = await registry.metrics();
    expect(text).toMatch(/^# TYPE socktune_kernel_tcp_events_total counter$/m);
    expect(text).toMatch(/^socktune_audit_finding\{setting="net\.ipv4\.tcp_tw_reuse",severity="\w+"\} 1$/m);
  });

  it('a prefix and scopes can be chosen; registering twice in one registry is refused before anything is registered', async () => {
    const registry = new Registry();
    await createCollector({ registry, prefix: 'app_tcp_', process: false, audit: false, closes: false });
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names).toEqual(['app_tcp_tcp_connections', 'app_tcp_sockstat', 'app_tcp_kernel_tcp_events_total']);
    const scopes = new Set(
      samples((await registry.getMetricsAsJSON()) as never)
        .filter((s) => s.name === 'app_tcp_tcp_connections')
        .map((s) => s.labels.scope),
    );
    expect([...scopes]).toEqual(['namespace']);
    await expect(createCollector({ registry, prefix: 'app_tcp_' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringMatching(/already has socktune's metrics/),
    });
    expect((await registry.getMetricsAsJSON()).map((m) => m.name)).toEqual(names);
  });

  it("exports a guard's connections and closes, and every reset close by reason and method", async () => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.on('error', () => {}));
    const guard = tuneServer(server, presets.gracefulHeartbeat({ halfCloseTimeout: 200, scanInterval: 50 }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const registry = new Registry();
    await createCollector({ registry, guards: { api: guard }, namespace: false, process: false, audit: false });
    const port = (server.address() as net.AddressInfo).port;
    const half = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    half.on('error', () => {});
    await once(half, 'connect');
    half.end(); // the server never ends: CLOSE_WAIT there until the guard closes it
    const reset = net.connect(port, '127.0.0.1');
    reset.on('error', () => {});
    tune(reset, presets.rstOnClose());
    await once(reset, 'connect');
    reset.end();
    await once(reset, 'close');
    await once(guard, 'closed');
    const all = samples((await registry.getMetricsAsJSON()) as never);
    const value = (name: string, labels: Record<string, string>) =>
      all.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
    expect(value('socktune_guard_closed_total', { guard: 'api', reason: 'half-closed' })).toBe(1);
    expect(value('socktune_closes_total', { reason: 'close', method: 'rst' })).toBe(1);
    expect(value('socktune_closes_total', { reason: 'half-closed', method: 'fin' })).toBe(1);
    expect(value('socktune_guard_connections', { guard: 'api', state: 'tracked' })).toBe(0);
    half.destroy();
    server.close();
  });
});

describe('the socktune:close subscriber (the channel is public)', () => {
  it('ignores what it cannot read, without an uncaught exception, and counts what it can', async () => {
    // A process of its own: a throw in a subscriber surfaces as an uncaught exception there.
    const script = `
      import dc from 'node:diagnostics_channel';
      import { Registry } from 'prom-client';
      import { createCollector } from './dist/index.js';
      const registry = new Registry();
      await createCollector({ registry, namespace: false, process: false, audit: false });
      const channel = dc.channel('socktune:close');
      const throwing = new Proxy({}, { get() { throw new Error('a trap'); } });
      for (const m of [null, undefined, 5, 'close', [], {}, { report: null }, { reason: 'close' }, { reason: 'close', report: null },
        { reason: 'close', report: 5 }, { reason: 5, report: { method: 'rst', bytesAtRisk: 0 } },
        { reason: 'close', report: { method: 'teleport', bytesAtRisk: 0 } }, { reason: 'made-up', report: { method: 'rst', bytesAtRisk: 0 } },
        { reason: 'close', report: { method: 'rst', bytesAtRisk: '10' } }, { reason: 'close', report: { method: 'rst', bytesAtRisk: NaN } },
        { reason: 'close', report: { method: 'rst' } }, { reason: 'toString', report: { method: 'rst', bytesAtRisk: 0 } },
        { reason: 'close', report: { method: 'constructor', bytesAtRisk: 0 } }, throwing, { reason: 'close', report: throwing }]) {
        channel.publish(m);
      }
      channel.publish({ reason: 'close', report: { method: 'rst', drained: true, bytesAtRisk: 0 } });
      channel.publish({ reason: 'timeout', report: { method: 'fin', drained: false, bytesAtRisk: 10 } });
      await new Promise((r) => setImmediate(r));
      const json = await registry.getMetricsAsJSON();
      console.log(JSON.stringify(json.filter((m) => m.name.startsWith('socktune_close')).map((m) => [m.name, m.values.map((v) => [v.labels, v.value])])));
    `;
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
    });
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual([
      [
        'socktune_closes_total',
        [
          [{ reason: 'close', method: 'rst' }, 1],
          [{ reason: 'timeout', method: 'fin' }, 1],
        ],
      ],
      ['socktune_close_bytes_at_risk_total', [[{ reason: 'timeout' }, 10]]],
    ]);
  });
});

describe.runIf(canUse('ip', 'ss', 'nstat'))('createCollector against sockets made in a namespace', () => {
  const ns = new Netns('metrics');
  beforeAll(async () => {
    ns.create();
    await ns.start(states, ['2', '10', '30', '5']);
  }, 60_000);
  afterAll(() => ns.destroy());

  it("namespace counts equal ss; sockstat tw and kernel counters equal the kernel's", async () => {
    const out = JSON.parse(await ns.exec(process.execPath, [fixture]));
    const theirs = ssCounts(await ns.exec('ss', ['-Htan']));
    const all = out.samples as Sample[];
    const ns_ = all.filter((s) => s.name === 'socktune_tcp_connections' && s.labels.scope === 'namespace');
    for (const s of ns_) expect([s.labels.state, s.value]).toEqual([s.labels.state, theirs[s.labels.state] ?? 0]);
    expect(all.find((s) => s.name === 'socktune_sockstat' && s.labels.protocol === 'TCP' && s.labels.field === 'tw')!.value).toBe(30);
    const active = (await nstat(ns, 'TcpActiveOpens', 'TcpOutRsts')).TcpActiveOpens;
    expect(all.find((s) => s.name === 'socktune_kernel_tcp_events_total' && s.labels.counter === 'ActiveOpens')!.value).toBe(active);
    expect(out.text).toMatch(/^socktune_tcp_connections\{scope="namespace",state="CLOSE_WAIT"\} 5$/m);
  });
});
