// The guard section of the benchmarks: what `tuneServer(server, presets.gracefulHeartbeat())` costs
// an HTTP keep-alive server.
//
// Throughput: an http.Server with a tiny response runs as a child process inside a network
// namespace the bench makes for itself (loopback only; deleted at the end, on error and on
// SIGINT/SIGTERM too), driven by `wrk` in the same namespace, bare and guarded, at 1,000 and
// 10,000 connections. Both servers run side by side (started once per connection count, warmed
// by a short run); wrk runs alternate between them (bare, guarded, guarded, bare, ...) so both see
// the same machine, and each arm is summarised by the median requests/s of its runs. Every run
// opens its connections anew, so the per-connection work (kernel options, tracking) is in it.
// Goal: guarded/bare ≥ 0.97.
//
// Memory: the same server with `--expose-gc`; a client child opens N keep-alive connections, makes
// one request on each and leaves them idle. The server reports heapUsed+external and RSS after
// three full collections before and after; the growth per connection of the guarded server minus
// that of the bare one is what the guard (policy, tracking, kernel options) costs a connection.
// Goal: ≤ 200 bytes (heapUsed+external; RSS is reported, at page granularity).
//
// Usage: node scripts/bench/guard.mjs [--json] [--rounds 5] [--duration 6] [--connections 1000,10000] [--threads 2] [--memory-connections 10000]
// (`--connections ''` measures memory only.)
// Children (run by the parent inside the namespace):
//   node scripts/bench/guard.mjs --server --arm bare|guarded [--idle-keep]
//   node scripts/bench/guard.mjs --clients --port P --count N
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { spawn, spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { median } from './measure.mjs';
import { printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);

export const GOALS = { ratio: 0.97, bytesPerConnection: 200 };
const DEFAULTS = { connections: [1000, 10_000], rounds: 5, durationS: 6, warmupS: 2, threads: 2, memoryConnections: 10_000, memoryRounds: 3 };
const ARMS = ['bare', 'guarded'];
// A connect storm of 10,000 takes seconds; wrk's 2 s default would count it as timeouts.
const WRK_TIMEOUT = '5s';
const CLIENT_CONCURRENCY = 1000;
const CHILD_READY_MS = 60_000;

function flag(argv, name, fallback) {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? fallback : argv[i + 1];
}

// ---------------------------------------------------------------- children: run inside the namespace

/** Full collections until the heap stops shrinking, then the numbers. */
function settled() {
  for (let i = 0; i < 3; i++) globalThis.gc?.();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external, heapUsed: m.heapUsed, external: m.external, rss: m.rss };
}

async function serverChild(argv) {
  const arm = flag(argv, 'arm');
  if (arm !== 'bare' && arm !== 'guarded') throw new RangeError(`--arm must be 'bare' or 'guarded', got '${arm}'`);
  const { presets, tuneServer } = await import('../../dist/index.js');
  const server = http.createServer((req, res) => res.end('ok'));
  // Idle connections must stay for the memory count; wrk never idles, so throughput keeps Node's default.
  if (argv.includes('--idle-keep')) server.keepAliveTimeout = 0;
  let accepted = 0;
  server.on('connection', () => accepted++);
  const guard =
    arm === 'guarded'
      ? tuneServer(server, presets.gracefulHeartbeat(process.env.SOCKTUNE_BENCH_SCAN ? { scanInterval: Number(process.env.SOCKTUNE_BENCH_SCAN) } : undefined))
      : undefined;
  server.listen({ port: 0, host: '127.0.0.1', backlog: 65_535 });
  await once(server, 'listening');
  const connections = () => new Promise((resolve) => server.getConnections((err, n) => resolve(err ? -1 : n)));
  createInterface({ input: process.stdin }).on('line', async (line) => {
    const cmd = line.trim();
    let out;
    if (cmd === 'mem') out = { ...settled(), connections: await connections(), tracked: guard?.size ?? 0 };
    else if (cmd === 'stats') out = { accepted, connections: await connections(), seen: guard?.stats().seen ?? 0, scans: guard?.stats().scans ?? 0 };
    else return;
    process.stdout.write(`${JSON.stringify(out)}\n`);
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ port: server.address().port, pid: process.pid, gc: typeof globalThis.gc === 'function' })}\n`);
}

async function clientsChild(argv) {
  const port = Number(flag(argv, 'port'));
  const count = Number(flag(argv, 'count'));
  if (!Number.isInteger(port) || !Number.isInteger(count) || count <= 0) throw new RangeError('--port and --count must be positive integers');
  const request = Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const sockets = [];
  let failed = 0;
  const deadline = performance.now() + 60_000;
  // One request per connection, answered, then idle: the server holds each as a keep-alive connection.
  const open = () =>
    new Promise((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      let got = '';
      s.setEncoding('utf8');
      s.on('error', () => {});
      s.once('connect', () => s.write(request));
      const onData = (d) => {
        got += d;
        if (got.endsWith('\r\n\r\nok')) {
          s.off('data', onData);
          sockets.push(s);
          resolve();
        }
      };
      s.on('data', onData);
      s.once('close', () => {
        if (!sockets.includes(s)) failed++;
        resolve();
      });
    });
  let started = 0;
  await Promise.all(
    Array.from({ length: Math.min(CLIENT_CONCURRENCY, count) }, async () => {
      while (started < count && performance.now() < deadline) {
        started++;
        await open();
      }
    }),
  );
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ connected: sockets.length, failed })}\n`);
}

// ---------------------------------------------------------------- parent

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Why this machine cannot run the section, or undefined. */
function unavailable() {
  if (process.platform !== 'linux') return 'needs Linux (network namespaces)';
  if (process.getuid?.() !== 0) return 'needs root (creates a network namespace)';
  for (const tool of ['ip', 'wrk']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `needs ${tool} on PATH`;
  }
  return undefined;
}

// Each child may hold 10,000+ sockets: raise the hard limit where allowed (CAP_SYS_RESOURCE), then
// the soft one to it. Node raises its own soft limit; wrk does not.
const RAISE_FDS = 'ulimit -Hn 1048576 2>/dev/null; ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"';

/** A child in the namespace; resolves with its first stdout line (JSON). */
function startChild(ns, children, args) {
  const child = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', RAISE_FDS, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout });
  const queue = [];
  const waiters = [];
  lines.on('line', (l) => (waiters.length ? waiters.shift().resolve(l) : queue.push(l)));
  child.on('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${args.join(' ')} exited (${signal ?? code}): ${stderr.trim()}`));
  });
  const next = () =>
    new Promise((resolve, reject) => {
      if (queue.length) return resolve(queue.shift());
      const timer = setTimeout(() => reject(new Error(`${args.join(' ')}: no answer in ${CHILD_READY_MS} ms`)), CHILD_READY_MS);
      waiters.push({
        resolve: (l) => (clearTimeout(timer), resolve(l)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  const ask = async (cmd) => {
    child.stdin.write(`${cmd}\n`);
    return JSON.parse(await next());
  };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await once(child, 'exit');
  };
  return next().then((l) => ({ child, ready: JSON.parse(l), ask, stop }));
}

/** Runs wrk in the namespace; requests/s, latency percentiles (ms) and socket errors. */
function wrk(ns, children, { connections, threads, durationS, port }) {
  const args = [
    'netns',
    'exec',
    ns,
    'sh',
    '-c',
    RAISE_FDS,
    'wrk',
    `-t${threads}`,
    `-c${connections}`,
    `-d${durationS}s`,
    '--timeout',
    WRK_TIMEOUT,
    '--latency',
    `http://127.0.0.1:${port}/`,
  ];
  return new Promise((resolve, reject) => {
    const c = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(c);
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d) => (out += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), (durationS + 60) * 1000);
    c.on('close', (status) => {
      clearTimeout(timer);
      children.delete(c);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      if (status !== 0 || !rps) return reject(new Error(`wrk exited ${status}: ${out.trim().split('\n').slice(-3).join(' | ')}`));
      const ms = (pct) => {
        const m = new RegExp(`^\\s+${pct}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
        return m ? Number(m[1]) * { us: 1e-3, ms: 1, s: 1e3 }[m[2]] : null;
      };
      const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
      resolve({
        rps: Number(rps[1]),
        latencyMs: { p50: ms(50), p99: ms(99) },
        errors: errs ? { connect: +errs[1], read: +errs[2], write: +errs[3], timeout: +errs[4] } : { connect: 0, read: 0, write: 0, timeout: 0 },
        non2xx: non2xx ? Number(non2xx[1]) : 0,
      });
    });
  });
}

/** The fd limit a child gets after RAISE_FDS. */
function childFdLimit(ns) {
  return Number(sh('ip', ['netns', 'exec', ns, 'sh', '-c', 'ulimit -Hn 1048576 2>/dev/null; ulimit -n "$(ulimit -Hn)"; ulimit -n']).trim());
}

/**
 * Runs the section. Returns `{ rows, json }`: rows for scripts/bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and every measured number as JSON.
 */
export async function guardBench(options = {}) {
  const o = { ...DEFAULTS, quiet: false, ...options };
  const why = unavailable();
  if (why) {
    const json = { available: false, error: why, goals: GOALS };
    return { rows: guardRows(json), json };
  }
  const log = (m) => o.quiet || process.stderr.write(`${m}\n`);
  const ns = `st-bench-guard-${process.pid}`;
  const children = new Set();
  let created = false;
  const remove = () => {
    for (const c of children) c.kill('SIGKILL');
    if (!created) return;
    created = false;
    spawnSync('ip', ['netns', 'del', ns]);
  };
  const onSignal = (signal) => {
    remove();
    process.exit(128 + osConstants.signals[signal]);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.once(s, onSignal);
  process.once('exit', remove);
  try {
    sh('ip', ['netns', 'add', ns]);
    created = true;
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // 10,000 connects at once: a deep accept queue, and a port range wide enough for one destination.
    sh('ip', [
      'netns',
      'exec',
      ns,
      'sysctl',
      '-qw',
      'net.core.somaxconn=65535',
      'net.ipv4.tcp_max_syn_backlog=65535',
      'net.ipv4.ip_local_port_range=1024 65000',
    ]);
    const fdLimit = childFdLimit(ns);

    const throughput = [];
    for (const connections of o.connections) {
      if (fdLimit < connections + 100) {
        throughput.push({ connections, error: `needs ulimit -n ≥ ${connections + 100}; children get ${fdLimit}` });
        continue;
      }
      // Both servers live through all rounds (warm, started once); the arms alternate run by run.
      const servers = {};
      const runs = { bare: [], guarded: [] };
      const serverStats = {};
      try {
        for (const arm of ARMS) servers[arm] = await startChild(ns, children, [self, '--server', '--arm', arm]);
        for (const arm of ARMS) await wrk(ns, children, { connections, threads: o.threads, port: servers[arm].ready.port, durationS: o.warmupS });
        for (let round = 0; round < o.rounds; round++) {
          for (const arm of round % 2 ? [...ARMS].reverse() : ARMS) {
            const result = await wrk(ns, children, { connections, threads: o.threads, port: servers[arm].ready.port, durationS: o.durationS });
            runs[arm].push(result);
            log(`guard: ${connections} connections, round ${round + 1}, ${arm}: ${result.rps.toFixed(0)} req/s`);
          }
        }
        for (const arm of ARMS) serverStats[arm] = await servers[arm].ask('stats');
      } finally {
        for (const arm of ARMS) await servers[arm]?.stop();
      }
      const bare = median(runs.bare.map((r) => r.rps));
      const guarded = median(runs.guarded.map((r) => r.rps));
      const ratio = guarded / bare;
      const arm = (name, rps) => ({ rps, runs: runs[name], server: serverStats[name] });
      throughput.push({ connections, bare: arm('bare', bare), guarded: arm('guarded', guarded), ratio, goal: GOALS.ratio, met: ratio >= GOALS.ratio });
    }

    const n = o.memoryConnections;
    const per = { bare: [], guarded: [] };
    let memoryError;
    if (fdLimit < n + 100) memoryError = `needs ulimit -n ≥ ${n + 100}; children get ${fdLimit}`;
    for (let round = 0; round < o.memoryRounds && !memoryError; round++) {
      for (const arm of round % 2 ? [...ARMS].reverse() : ARMS) {
        const server = await startChild(ns, children, ['--expose-gc', self, '--server', '--arm', arm, '--idle-keep']);
        let clients;
        try {
          const before = await server.ask('mem');
          clients = await startChild(ns, children, [self, '--clients', '--port', String(server.ready.port), '--count', String(n)]);
          const after = await server.ask('mem');
          if (clients.ready.connected !== n || after.connections !== n)
            throw new Error(`memory: ${clients.ready.connected} of ${n} connected, server holds ${after.connections}`);
          per[arm].push({ heap: (after.heap - before.heap) / n, rss: (after.rss - before.rss) / n, tracked: after.tracked, before, after });
          log(`guard: memory, ${n} idle connections, round ${round + 1}, ${arm}: ${((after.heap - before.heap) / n).toFixed(0)} B/connection heap`);
        } finally {
          await clients?.stop();
          await server.stop();
        }
      }
    }
    const memory = memoryError
      ? { connections: n, error: memoryError, goal: GOALS.bytesPerConnection }
      : (() => {
          const heap = { bare: median(per.bare.map((r) => r.heap)), guarded: median(per.guarded.map((r) => r.heap)) };
          const rss = { bare: median(per.bare.map((r) => r.rss)), guarded: median(per.guarded.map((r) => r.rss)) };
          const extra = { heap: heap.guarded - heap.bare, rss: rss.guarded - rss.bare };
          return {
            connections: n,
            perConnection: { heap, rss },
            extra,
            runs: per,
            goal: GOALS.bytesPerConnection,
            met: extra.heap <= GOALS.bytesPerConnection,
          };
        })();

    const json = {
      available: true,
      namespace: ns,
      method: {
        server: "http.Server, res.end('ok'), keep-alive; child process; guarded: tuneServer(server, presets.gracefulHeartbeat())",
        load: `wrk -t${o.threads} -c<connections> -d${o.durationS}s --timeout ${WRK_TIMEOUT} --latency; each server started once per connection count and warmed by a ${o.warmupS} s run`,
        rounds: `${o.rounds} runs per arm, alternating (bare, guarded, guarded, bare, ...); medians`,
        memory: `${n} idle keep-alive connections (one request each), growth after 3 gc() in the server; ${o.memoryRounds} rounds per arm, medians; heap = heapUsed + external`,
        network: 'loopback inside a network namespace of the bench (somaxconn 65535, ports 1024-65000)',
        childFdLimit: fdLimit,
      },
      throughput,
      memory,
      goals: GOALS,
    };
    return { rows: guardRows(json), json };
  } catch (err) {
    const json = { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
    return { rows: guardRows(json), json };
  } finally {
    remove();
    for (const s of signals) process.off(s, onSignal);
    process.off('exit', remove);
  }
}

/** Rows for a bench table: [benchmark, result, ratio, goal, met]. */
export function guardRows(d) {
  const yes = (m) => (m ? 'yes' : 'no');
  const rps = (x) => `${Math.round(x).toLocaleString('en')} req/s`;
  if (!d.available) {
    return [
      ['guard: wrk, guarded vs bare', `not run: ${d.error}`, '', `≥ ${d.goals.ratio}×`, 'n/a'],
      ['guard: memory per connection', '', '', `≤ ${d.goals.bytesPerConnection} B`, 'n/a'],
    ];
  }
  const rows = [];
  for (const t of d.throughput) {
    const c = t.connections.toLocaleString('en');
    if (t.error) {
      rows.push([`guard: wrk ${c} connections`, `not run: ${t.error}`, '', `≥ ${GOALS.ratio}×`, 'n/a']);
      continue;
    }
    rows.push([`guard: wrk ${c} conns, bare http.Server`, rps(t.bare.rps), '', '', '']);
    rows.push([`guard: wrk ${c} conns, tuneServer(gracefulHeartbeat())`, rps(t.guarded.rps), `${t.ratio.toFixed(3)}× bare`, `≥ ${t.goal}×`, yes(t.met)]);
  }
  const m = d.memory;
  const c = m.connections.toLocaleString('en');
  if (m.error) {
    rows.push([`guard: memory, ${c} idle connections`, `not run: ${m.error}`, '', `≤ ${m.goal} B`, 'n/a']);
  } else {
    const b = (x) => `${x >= 0 ? '+' : ''}${x.toFixed(0)} B/conn`;
    rows.push([
      `guard: heap+external per conn (${c} idle), guarded − bare`,
      b(m.extra.heap),
      `${m.perConnection.heap.bare.toFixed(0)} B bare`,
      `≤ ${m.goal} B`,
      yes(m.met),
    ]);
    rows.push([`guard: RSS per conn (${c} idle), guarded − bare`, b(m.extra.rss), `${m.perConnection.rss.bare.toFixed(0)} B bare`, '', '']);
  }
  return rows;
}

if (process.argv[1] === self) {
  const argv = process.argv.slice(2);
  if (argv.includes('--server')) await serverChild(argv);
  else if (argv.includes('--clients')) await clientsChild(argv);
  else {
    const int = (name, fallback) => {
      const v = flag(argv, name);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) throw new RangeError(`--${name} must be a positive integer, got '${v}'`);
      return n;
    };
    const list = flag(argv, 'connections');
    const { rows, json } = await guardBench({
      rounds: int('rounds', DEFAULTS.rounds),
      durationS: int('duration', DEFAULTS.durationS),
      threads: int('threads', DEFAULTS.threads),
      memoryConnections: int('memory-connections', DEFAULTS.memoryConnections),
      connections: list !== undefined ? list.split(',').filter(Boolean).map(Number) : DEFAULTS.connections,
      quiet: argv.includes('--json'),
    });
    if (argv.includes('--json')) console.log(JSON.stringify(json, null, 2));
    else {
      printRows(rows);
      console.log(`\n${JSON.stringify(json.method ?? { error: json.error })}`);
    }
    process.exitCode = json.available ? 0 : 1;
  }
}
