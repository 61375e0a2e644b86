// OpenTelemetry with no code: an application with a global MeterProvider (the SDK), run under
// socktune/register or importing socktune, gets socktune's metrics through it, from the one table
// the Prometheus collector exports too: the same series with the same values, under OpenTelemetry's
// names. The control: the same application with SOCKTUNE_OTEL=0 gets none (what it got before).
// Where @opentelemetry/api is missing, nothing breaks; where it was asked for by name, it is an error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { metrics as otelMetrics } from '@opentelemetry/api';
import { createInstruments } from '../src/index.js';
import { metrics, otelSamples, otelStates, type Sample } from '../src/metrics/table.js';
import { canUse } from './helpers/env.js';
import { Netns, ssCounts } from './helpers/netns.js';
import { consumerProject, repoRoot, runToEnd } from './helpers/register.js';

const app = fileURLToPath(new URL('./fixtures/otel-app.mjs', import.meta.url));
const states = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));

interface Point {
  name: string;
  unit: string;
  attributes: Record<string, string>;
  value: number;
}
interface Out {
  names: string[];
  points: Point[];
  errors: string[];
  instruments?: string[];
  prom?: Array<{ name: string; labels: Record<string, string>; value: number }>;
  /** `ss -Htan` run by the application right after its collections, its sockets still open. */
  ss?: string;
}

/** The consumer project, with the SDK and prom-client beside socktune (the application's own). */
function project(): string {
  const dir = consumerProject();
  for (const name of ['@opentelemetry', 'prom-client']) {
    try {
      symlinkSync(join(repoRoot, 'node_modules', name), join(dir, 'node_modules', name), 'dir');
    } catch {
      // linked by an earlier test
    }
  }
  cpSync(app, join(dir, 'otel-app.mjs'));
  return dir;
}

async function runApp(how: string, opts: { register?: boolean; env?: Record<string, string>; ns?: string } = {}): Promise<Out & { stderr: string }> {
  project();
  const args = [...(opts.register ? ['--import', 'socktune/register'] : []), 'otel-app.mjs', how];
  const run = await runToEnd(args, { SOCKTUNE_POLICY: 'gracefulHeartbeat', ...opts.env }, 30_000, opts.ns);
  expect(run.code, run.stderr).toBe(0);
  return { ...(JSON.parse(run.stdout) as Out), stderr: run.stderr };
}

const every = metrics.map((m) => m.otel.name);

describe('socktune reports through the global MeterProvider, with no code', () => {
  it('under socktune/register, within 100 ms of the application setting its provider; SOCKTUNE_OTEL=0 (the control) reports nothing', async () => {
    const on = await runApp('global', { register: true });
    expect(on.errors).toEqual([]);
    expect(on.names).toEqual(
      expect.arrayContaining([
        'socktune.connection.count',
        'socktune.guard.tracked',
        'socktune.guard.closes',
        'socktune.pool.retries',
        'socktune.audit.findings',
      ]),
    );
    for (const name of on.names) expect(every).toContain(name);
    // This process's own connection (both ends) and listener, in OpenTelemetry's spelling.
    const own = (state: string) =>
      on.points.find(
        (p) => p.name === 'socktune.connection.count' && p.attributes['socktune.scope'] === 'process' && p.attributes['network.connection.state'] === state,
      );
    expect(own('established')).toMatchObject({ unit: '{connection}', value: 2, attributes: { 'network.transport': 'tcp' } });
    expect(own('listen')!.value).toBe(1);
    // register's guard tracks both ends of it.
    expect(on.points.find((p) => p.name === 'socktune.guard.tracked')).toMatchObject({ attributes: { 'socktune.guard': 'default' }, value: 2 });
    const off = await runApp('global', { register: true, env: { SOCKTUNE_OTEL: '0' } });
    expect(off.names).toEqual([]);
  });

  it("after import 'socktune' (no register)", async () => {
    const out = await runApp('import');
    expect(out.names).toEqual(expect.arrayContaining(['socktune.connection.count', 'socktune.kernel.tcp.events', 'socktune.sockstat']));
    expect(out.names).not.toContain('socktune.guard.tracked'); // no guard is named without register
  });

  it('a provider set through another copy of @opentelemetry/api is found as well', async () => {
    const copy = mkdtempSync(join(tmpdir(), 'socktune-otel-api-'));
    try {
      cpSync(join(repoRoot, 'node_modules', '@opentelemetry', 'api'), copy, { recursive: true });
      const out = await runApp(`copy:${copy}`, { register: true });
      expect(out.names).toContain('socktune.connection.count');
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('createInstruments() on the global provider replaces the no-code instruments: every series once', async () => {
    const out = await runApp('explicit');
    expect(out.instruments).toEqual(every);
    const keys = out.points.map((p) => `${p.name} ${JSON.stringify(p.attributes)}`);
    expect(keys.filter((k, i) => keys.indexOf(k) !== i)).toEqual([]);
    expect(out.names).not.toContain('socktune.audit.findings'); // the explicit options ({ audit: false }) rule
  });

  it('an invalid SOCKTUNE_OTEL stops socktune/register (exit 9); importing socktune warns and leaves OpenTelemetry off', async () => {
    project();
    const bad = await runToEnd(['--import', 'socktune/register', '-e', ''], { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_OTEL: 'yes' });
    expect(bad.code).toBe(9);
    expect(bad.stderr).toMatch(/SOCKTUNE_OTEL: must be auto, 1 or 0; got "yes" \(ERR_SOCKTUNE_CONFIG\)/);
    const imported = await runToEnd(['--input-type=module', '-e', "await import('socktune')"], { SOCKTUNE_OTEL: 'yes' });
    expect(imported.code).toBe(0);
    expect(imported.stderr).toMatch(/\[ERR_SOCKTUNE_CONFIG\] Warning: SOCKTUNE_OTEL: must be auto, 1 or 0/);
  });
});

describe('without @opentelemetry/api', () => {
  // socktune installed in a project of its own (its files copied, its addon linked) where
  // @opentelemetry/api cannot be resolved from it; the application's own copy, where it has one,
  // is elsewhere.
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'socktune-no-otel-'));
    const pkg = join(dir, 'node_modules', 'socktune');
    mkdirSync(pkg, { recursive: true });
    cpSync(join(repoRoot, 'dist'), join(pkg, 'dist'), { recursive: true });
    cpSync(join(repoRoot, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(repoRoot, 'build'), join(pkg, 'build'), 'dir');
    // The prebuilds too: with PREBUILDS_ONLY=1 (the portability runs) the loader takes only those.
    symlinkSync(join(repoRoot, 'prebuilds'), join(pkg, 'prebuilds'), 'dir');
    symlinkSync(join(repoRoot, 'node_modules', 'node-gyp-build'), join(dir, 'node_modules', 'node-gyp-build'), 'dir');
    const api = join(repoRoot, 'node_modules', '@opentelemetry', 'api', 'build', 'src', 'index.js');
    const sdk = join(repoRoot, 'node_modules', '@opentelemetry', 'sdk-metrics', 'build', 'src', 'index.js');
    writeFileSync(
      join(dir, 'app.mjs'),
      `
      const { metrics } = await import(${JSON.stringify(api)});
      const { MeterProvider } = await import(${JSON.stringify(sdk)});
      if (process.argv[2] === 'provider') metrics.setGlobalMeterProvider(new MeterProvider());
      await new Promise((r) => setTimeout(r, 1500));
      if (process.argv[2] === 'create') {
        const { createInstruments } = await import('socktune');
        await createInstruments().catch((e) => console.log(e.code));
      }`,
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const inDir = (args: string[], env: Record<string, string>) =>
    runToEnd(['--import', join(dir, 'node_modules', 'socktune', 'dist', 'register', 'index.js'), ...args], { SOCKTUNE_POLICY: 'gracefulHeartbeat', ...env });

  it('register runs as before, silently, when no provider is set', async () => {
    const run = await inDir([join(dir, 'app.mjs'), 'none'], {});
    expect([run.code, run.stderr]).toEqual([0, '']);
  });

  it('a global provider socktune cannot report to is said once (SOCKTUNE_OTEL_UNAVAILABLE), never hidden', async () => {
    const run = await inDir([join(dir, 'app.mjs'), 'provider'], {});
    expect(run.code).toBe(0);
    expect(run.stderr.match(/SOCKTUNE_OTEL_UNAVAILABLE/g)).toHaveLength(1);
  });

  it('asked for by name: SOCKTUNE_OTEL=1 stops register (exit 9, ERR_SOCKTUNE_MISSING_PEER); createInstruments() rejects with it', async () => {
    const run = await inDir([join(dir, 'app.mjs'), 'none'], { SOCKTUNE_OTEL: '1' });
    expect(run.code).toBe(9);
    expect(run.stderr).toMatch(/SOCKTUNE_OTEL=1 but @opentelemetry\/api cannot be found.*ERR_SOCKTUNE_MISSING_PEER/);
    const created = await runToEnd([join(dir, 'app.mjs'), 'create'], {});
    expect(created.stdout.trim()).toBe('ERR_SOCKTUNE_MISSING_PEER');
  });
});

describe('createInstruments in this process', () => {
  it('checks its options before anything is created, and creates once per provider', async () => {
    await expect(createInstruments({ meterProvider: 5 as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(createInstruments({ meterProvider: new MeterProvider(), prefix: 'x' } as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(createInstruments({ meterProvider: new MeterProvider(), auditMaxAge: 1.5 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(createInstruments({ meterProvider: new MeterProvider(), pools: { a: {} } as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    otelMetrics.disable();
    await expect(createInstruments()).rejects.toMatchObject({ code: 'ERR_SOCKTUNE_NO_METER_PROVIDER' });
    const provider = new MeterProvider();
    const made = await createInstruments({ meterProvider: provider });
    await expect(createInstruments({ meterProvider: provider })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringMatching(/already has socktune's instruments/),
    });
    made.close();
    (await createInstruments({ meterProvider: provider })).close();
  });

  it('a collection never blocks the event loop: it keeps turning while the kernel is read', async () => {
    const { MetricReader, AggregationTemporality } = await import('@opentelemetry/sdk-metrics');
    class PullReader extends MetricReader {
      constructor() {
        super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
      }
      async onForceFlush() {}
      async onShutdown() {}
    }
    const reader = new PullReader();
    const provider = new MeterProvider({ readers: [reader] });
    const made = await createInstruments({ meterProvider: provider, auditMaxAge: 0 });
    let turns = 0;
    let done = false;
    const spin = () => {
      turns++;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    const { resourceMetrics, errors } = await reader.collect();
    done = true;
    expect(errors).toEqual([]);
    expect(resourceMetrics.scopeMetrics[0].metrics.map((m) => m.descriptor.name)).toContain('socktune.connection.count');
    // A synchronous read of the socket table or of /proc would let no turn happen before it resolved.
    expect(turns).toBeGreaterThan(0);
    made.close();
  });

  it('spells every kernel state as the semantic conventions do', () => {
    expect(Object.values(otelStates).sort()).toEqual(
      expect.arrayContaining([
        'closed',
        'close_wait',
        'closing',
        'established',
        'fin_wait_1',
        'fin_wait_2',
        'last_ack',
        'listen',
        'syn_received',
        'syn_sent',
        'time_wait',
      ]),
    );
    const table = metrics.find((m) => m.name === 'tcp_connections')!;
    expect(
      otelSamples(table, [
        [{ scope: 'namespace', state: 'SYN_RECV' }, 2],
        [{ scope: 'namespace', state: 'NEW_SYN_RECV' }, 3],
        [{ scope: 'namespace', state: 'UNKNOWN' }, 1],
      ]),
    ).toEqual([[{ 'network.transport': 'tcp', 'socktune.scope': 'namespace', 'network.connection.state': 'syn_received' }, 5]]);
  });
});

describe.runIf(canUse('ip', 'ss'))('both exports against sockets made in a namespace', () => {
  const ns = new Netns('otel');
  beforeAll(async () => {
    ns.create();
    await ns.start(states, ['2', '10', '30', '5']);
  }, 60_000);
  afterAll(() => ns.destroy());

  it('every series of the Prometheus collector is an OpenTelemetry point with the same value, and the counts equal ss', async () => {
    const out = await runApp('prom', { ns: ns.name });
    const ss = ssCounts(out.ss!);
    // sockstat's orphan, alloc and mem are the host's (global counters), moving between the two reads.
    const global = (m: string, labels: Record<string, string>) => m === 'sockstat' && ['orphan', 'alloc', 'mem'].includes(labels.field);
    let compared = 0;
    for (const metric of metrics) {
      const prom: Sample[] = out.prom!.filter((s) => s.name === `socktune_${metric.name}` && !global(metric.name, s.labels)).map((s) => [s.labels, s.value]);
      const expected = otelSamples(metric, prom).map(([attributes, value]) => ({ attributes, value }));
      const fields = metric.otel.attributes;
      const got = out.points
        .filter(
          (p) => p.name === metric.otel.name && !(metric.name === 'sockstat' && ['orphan', 'alloc', 'mem'].includes(p.attributes['socktune.sockstat.field'])),
        )
        .map((p) => ({ attributes: p.attributes, value: p.value }));
      expect(got, metric.otel.name).toEqual(expect.arrayContaining(expected));
      expect(got.length, metric.otel.name).toBe(expected.length);
      compared += got.length;
      expect(Object.keys(fields).sort()).toEqual([...metric.labels].sort());
    }
    expect(compared).toBeGreaterThan(40);
    const count = (scope: string, spelled: string) =>
      out.points.find(
        (x) => x.name === 'socktune.connection.count' && x.attributes['socktune.scope'] === scope && x.attributes['network.connection.state'] === spelled,
      )!.value;
    for (const [kernel, spelled] of Object.entries(otelStates)) {
      if (kernel === 'NEW_SYN_RECV' || kernel === 'SYN_RECV') continue;
      expect([spelled, count('namespace', spelled)]).toEqual([spelled, ss[kernel] ?? 0]);
    }
    expect(count('namespace', 'close_wait')).toBe(5);
    expect(count('namespace', 'time_wait')).toBe(30);
  });
});

// The published package names the peer as optional, as it does prom-client.
it('@opentelemetry/api is an optional peer dependency', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
  expect(pkg.peerDependencies['@opentelemetry/api']).toBeDefined();
  expect(pkg.peerDependenciesMeta['@opentelemetry/api']).toEqual({ optional: true });
});
