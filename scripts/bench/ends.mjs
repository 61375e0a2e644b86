// What metrics and connection-end attribution cost a process under socktune/register at 10,000
// connections a second: CPU of the whole process (user + system, process.cpuUsage) while it opens
// connections at a fixed rate to a peer in C (closer.c) that closes each one first, with and
// without them, in alternating runs of a few seconds each. The process and its peer are in network
// namespaces of their own across a veth pair (as root; otherwise both on this namespace's
// loopback, where every collection also counts whatever else the namespace holds), so the
// TIME_WAIT the churn leaves is on the peer's side and the process's namespace holds what a
// service's does: its own connections.
//   - base: socktune/register (gracefulHeartbeat) with SOCKTUNE_ENDS=0 and SOCKTUNE_OTEL=0;
//   - ends: the same with every connection's end attributed (SOCKTUNE_ENDS=1);
//   - full: the same with every connection's end attributed (SOCKTUNE_ENDS=1) and the OpenTelemetry
//     SDK's global MeterProvider collecting socktune's instruments (the periodic reader, every
//     --interval ms, default 15 s, into an exporter that keeps nothing).
// The overhead is full minus base, in % of one core (the medians of the runs). Goal: <= 1%.
//
// Per connection: the CPU of `count` connections made as fast as they go (closed loop), so that a
// run that is slower does not look cheaper. Separate processes differ by more than the cost being
// measured on a busy machine, so attribution's own cost is measured in one process with it paused
// and resumed batch by batch (interleaved); a collection's cost is measured with the process idle,
// and the overhead at the rate is (added CPU per connection × rate) + (CPU per collection / interval).
//
// Usage: node scripts/bench/ends.mjs [--json] [--rate 10000] [--count 40000] [--concurrency 64] [--runs 5] [--interval 15000]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import os from 'node:os';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { median } from './measure.mjs';
import { intFlag, printRows } from './table.mjs';

export const GOAL = { overheadPercent: 1 };
const self = fileURLToPath(import.meta.url);
const root = fileURLToPath(new URL('../../', import.meta.url));

/** The peer (closer.c, built on demand into .bench/): closes every connection at once, its FIN first. */
function closer() {
  const source = join(dirname(self), 'closer.c');
  const binary = join(root, '.bench', 'closer');
  if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(source).mtimeMs) {
    mkdirSync(dirname(binary), { recursive: true });
    const r = spawnSync('cc', ['-O2', '-pthread', '-o', binary, source], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cc failed to build ${source}: ${r.error?.message ?? r.stderr}`);
  }
  return binary;
}

/**
 * The measured process: `count` connections (after a warm-up of a fifth as many), `concurrency` at
 * a time, as fast as they go; prints the CPU they took per connection. Then it idles `idle` ms with
 * the collections running (full) or not, and prints the CPU of that too: what collecting costs a
 * second, whatever the rate.
 */
async function client(host, port, count, concurrency, mode, interval) {
  const net = await import('node:net');
  let reader;
  if (mode === 'full') {
    const { metrics } = await import('@opentelemetry/api');
    const { MeterProvider, PeriodicExportingMetricReader, AggregationTemporality } = await import('@opentelemetry/sdk-metrics');
    const exporter = {
      export: (_m, done) => done({ code: 0 }),
      forceFlush: async () => {},
      shutdown: async () => {},
      selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE,
    };
    reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: interval });
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    await new Promise((r) => setTimeout(r, 200)); // socktune finds the provider within 100 ms
  }
  let failed = 0;
  const one = () =>
    new Promise((resolve) => {
      const c = net.connect(port, host);
      c.on('error', () => failed++);
      c.on('close', resolve);
      c.resume();
    });
  const run = async (n) => {
    let next = 0;
    const worker = async () => {
      while (next < n) {
        next++;
        await one();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  await run(Math.ceil(count / 5));
  if (mode === 'interleaved') {
    // One process, attribution paused and resumed batch by batch: what drifts on the machine
    // falls on both alike. CPU per connection of each batch.
    const { setAttributing } = await import('../../dist/register/ends.js');
    const batches = { off: [], on: [] };
    const BATCHES = 40;
    const per = Math.ceil((2 * count) / BATCHES);
    for (let b = 0; b < BATCHES / 2; b++) {
      for (const on of b % 2 === 0 ? [false, true] : [true, false]) {
        setAttributing(on);
        const c0 = process.cpuUsage();
        await run(per);
        const c = process.cpuUsage(c0);
        batches[on ? 'on' : 'off'].push(((c.user + c.system) * 1000) / per);
      }
    }
    process.stdout.write(JSON.stringify({ batches, failed }) + '\n');
    process.exit(0);
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await run(count);
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  // One collection's CPU: 20 of them (a forced flush collects every instrument and exports), less
  // the same idle time without them.
  const idle0 = process.cpuUsage();
  const COLLECTIONS = 20;
  for (let i = 0; i < COLLECTIONS; i++) {
    if (reader) await reader.forceFlush();
    await new Promise((r) => setTimeout(r, 20));
  }
  const idle = process.cpuUsage(idle0);
  process.stdout.write(
    JSON.stringify({
      nsPerConnection: ((cpu.user + cpu.system) * 1000) / count,
      rate: (count / wall) * 1000,
      msPerCollection: (idle.user + idle.system) / 1000 / COLLECTIONS,
      failed,
    }) + '\n',
  );
  process.exit(0);
}

/** `taskset -c CPU` where there is one and a second CPU: the process and its peer on cores of their own. */
const pin = (cpu) =>
  spawnSync('taskset', ['-c', '0', 'true']).status === 0 && (os.availableParallelism?.() ?? os.cpus().length) > 1 ? ['taskset', '-c', String(cpu)] : [];

function runChild(netns, args, env) {
  return new Promise((resolve, reject) => {
    const [command, ...rest] = [...(netns ? ['ip', 'netns', 'exec', netns] : []), ...pin(1), process.execPath, ...args];
    const child = spawn(command, rest, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1))) : reject(new Error(`exit ${code}`))));
  });
}

/** Two namespaces joined by a veth pair (root only), or none. */
function lab() {
  const ip = (...args) => spawnSync('ip', args, { stdio: 'ignore' }).status === 0;
  if (process.getuid?.() !== 0 || !ip('-V')) return undefined;
  const tag = `stbe${process.pid % 100000}`;
  const [c, p] = [`${tag}c`, `${tag}p`];
  const ok =
    ip('netns', 'add', c) &&
    ip('netns', 'add', p) &&
    ip('link', 'add', `${tag}a`, 'netns', c, 'type', 'veth', 'peer', 'name', `${tag}b`, 'netns', p) &&
    ip('-n', c, 'addr', 'add', '10.213.251.1/24', 'dev', `${tag}a`) &&
    ip('-n', p, 'addr', 'add', '10.213.251.2/24', 'dev', `${tag}b`) &&
    ip('-n', c, 'link', 'set', `${tag}a`, 'up') &&
    ip('-n', p, 'link', 'set', `${tag}b`, 'up') &&
    ip('-n', c, 'link', 'set', 'lo', 'up') &&
    ip('-n', p, 'link', 'set', 'lo', 'up') &&
    // The peer closes first and would hold 60 s of TIME_WAIT per client port: at 10,000/s the
    // client's ports come round within seconds and would meet them. The peer keeps none (a lab
    // setting of the peer's namespace; the measured process's is untouched), the client has the full range.
    ip('netns', 'exec', p, 'sysctl', '-qw', 'net.ipv4.tcp_max_tw_buckets=0') &&
    ip('netns', 'exec', c, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 65535');
  const destroy = () => {
    ip('netns', 'del', c);
    ip('netns', 'del', p);
  };
  if (!ok) {
    destroy();
    return undefined;
  }
  return { client: c, peer: p, host: '10.213.251.2', destroy };
}

export async function endsBench({ rate = 10_000, count = 40_000, concurrency = 64, runs = 5, interval = 15_000, quiet = false } = {}) {
  const l = lab();
  const [pc, ...pargs] = [...(l ? ['ip', 'netns', 'exec', l.peer] : []), ...pin(0), closer()];
  const p = spawn(pc, pargs, { stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = await once(p.stdout.setEncoding('utf8'), 'data');
  const port = Number(String(line).trim());
  const host = l?.host ?? '127.0.0.1';
  const env = { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_OTEL: '0', SOCKTUNE_ENDS: '0' };
  const base = [];
  const ends = [];
  const full = [];
  let interleaved;
  const args = (mode) => ['--import', 'socktune/register', self, '--client', host, String(port), String(count), String(concurrency), mode, String(interval)];
  try {
    for (let i = 0; i < runs; i++) {
      base.push(await runChild(l?.client, args('base'), env));
      ends.push(await runChild(l?.client, args('ends'), { ...env, SOCKTUNE_ENDS: '1' }));
      full.push(await runChild(l?.client, args('full'), { ...env, SOCKTUNE_OTEL: 'auto', SOCKTUNE_ENDS: '1' }));
    }
    interleaved = await runChild(l?.client, args('interleaved'), { ...env, SOCKTUNE_ENDS: '1' });
  } finally {
    p.stdin.end();
    p.kill();
    l?.destroy();
  }
  const ns = (xs) => median(xs.map((x) => x.nsPerConnection));
  const ms = (xs) => median(xs.map((x) => x.msPerCollection));
  // At `rate` connections a second: what each connection adds, times the rate, plus one
  // collection's CPU every `interval` (the same whatever the rate).
  // Each round ran base, ends and full one after the other: the median of the rounds' differences
  // cancels what drifts across rounds (other load on the machine).
  const diff = (xs) => median(xs.map((x, i) => x.nsPerConnection - base[i].nsPerConnection));
  const spread = (xs) => {
    const d = xs.map((x, i) => x.nsPerConnection - base[i].nsPerConnection).sort((a, b) => a - b);
    return [d[0], d[d.length - 1]];
  };
  // In one process, batch by batch: the precise figure for attribution.
  const pairedOn = interleaved.batches.on.map((x, i) => x - interleaved.batches.off[i]);
  // OpenTelemetry's instruments are observable: nothing runs per connection, only per collection
  // (below); what full adds per connection across processes is shown, but it is inside the noise.
  const perConn = { ends: median(pairedOn), full: median(pairedOn) };
  const perCollection = ms(full) - ms(base);
  const collect = (perCollection / interval) * 100;
  const overhead = { ends: (perConn.ends * rate) / 1e7, full: (perConn.full * rate) / 1e7 + collect };
  const json = {
    rate,
    count,
    concurrency,
    runs,
    namespaces: l !== undefined,
    nsPerConnection: { base: ns(base), ends: ns(ends), full: ns(full) },
    addedNsPerConnection: perConn,
    addedNsPerConnectionRange: { ends: spread(ends), full: spread(full) },
    interleaved: { offNs: median(interleaved.batches.off), onNs: median(interleaved.batches.on), pairedNs: pairedOn },
    loadAverage: os.loadavg(),
    achievedRate: { base: median(base.map((x) => x.rate)), ends: median(ends.map((x) => x.rate)), full: median(full.map((x) => x.rate)) },
    interval,
    msPerCollection: perCollection,
    collectionCpuPercent: collect,
    overheadPercentAtRate: overhead,
    failed: { base: base.reduce((a, x) => a + x.failed, 0), ends: ends.reduce((a, x) => a + x.failed, 0), full: full.reduce((a, x) => a + x.failed, 0) },
    samples: { base, ends, full },
    goal: GOAL,
  };
  const us = (x) => `${(x / 1000).toFixed(2)} µs`;
  const pct = (x) => `${x.toFixed(2)}%`;
  const rows = [
    [
      `register, a connection opened and closed (peer's FIN first), no attribution or metrics`,
      `${us(json.nsPerConnection.base)}/conn`,
      `CPU; ${Math.round(json.achievedRate.base).toLocaleString('en')} conns/s`,
      '',
      '',
    ],
    [
      `  + every connection's end attributed (separate processes)`,
      `${us(json.nsPerConnection.ends)}/conn`,
      `rounds differ by ${us(json.addedNsPerConnectionRange.ends[0])} to ${us(json.addedNsPerConnectionRange.ends[1])}: noise`,
      '',
      '',
    ],
    [
      `  + every connection's end attributed (one process, batches interleaved)`,
      `${us(json.interleaved.onNs)}/conn`,
      `+${us(perConn.ends)}/conn vs ${us(json.interleaved.offNs)} = ${pct(overhead.ends)} at ${rate.toLocaleString('en')}/s`,
      '',
      '',
    ],
    [
      `  + OpenTelemetry: the SDK's periodic reader collecting socktune's instruments`,
      `${us(json.nsPerConnection.full)}/conn`,
      `${perCollection.toFixed(2)} ms CPU per collection = ${pct(collect)} every ${interval / 1000} s`,
      '',
      '',
    ],
    [
      `  overhead of metrics and attribution at ${rate.toLocaleString('en')} conns/s`,
      pct(overhead.full),
      'of one core',
      `≤ ${GOAL.overheadPercent}%`,
      overhead.full <= GOAL.overheadPercent ? 'yes' : 'no',
    ],
  ];
  if (!quiet)
    printRows(rows, [
      `load average ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')} on ${os.availableParallelism?.() ?? os.cpus().length} CPUs; ${runs} rounds of ${count.toLocaleString('en')} connections each`,
    ]);
  return { json, rows };
}

if (process.argv[2] === '--client')
  await client(process.argv[3], Number(process.argv[4]), Number(process.argv[5]), Number(process.argv[6]), process.argv[7], Number(process.argv[8]));
else if (process.argv[1] === self) {
  const json = process.argv.includes('--json');
  const r = await endsBench({
    rate: intFlag('rate', 10_000),
    count: intFlag('count', 40_000),
    concurrency: intFlag('concurrency', 64),
    runs: intFlag('runs', 5),
    interval: intFlag('interval', 15_000),
    quiet: json,
  });
  if (json) console.log(JSON.stringify(r.json, null, 2));
}
