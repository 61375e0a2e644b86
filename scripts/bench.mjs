// Benchmarks socktune against the bare syscalls it makes (the C floor addon in scripts/bench/floor,
// built on demand), against Node's own setKeepAlive and net-keepalive, measures memory growth per
// call, and times the diagnostics (counting ~200,000 TIME_WAIT sockets, scripts/bench/diag.mjs) against
// a C sock_diag floor, ss and /proc, and the collector's event-loop stalls during scrapes
// (scripts/bench/scrape.mjs); then the policies: short-connection churn closed by destroy(),
// resetAndDestroy() and RST-on-close (scripts/bench/churn.mjs), dead-peer detection times
// (deadpeer.mjs), the guarded http.Server under wrk (guard.mjs) and one guard scan over 4,000
// connections against a TCP_INFO per connection (guardscan.mjs); then socktune/register and
// SOCKTUNE_TRACE=1 per connection (register.mjs), loading a rules file of 1,000 to 50,000 rules
// (config.mjs), what the pools' retry (poolRetry) costs keep-alive requests that do not fail,
// with and without it (retry.mjs), the PING heartbeat of 10,000 idle HTTP/2 sessions against a
// bare timer per session (h2ping.mjs), and the pre-connect stage's connect() against net.connect
// per connection (prebind.mjs). Prints a table; with --json prints only a JSON object.
// Usage: node scripts/bench.mjs [--json]
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import { once } from 'node:events';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { diagNotes, diagnostics, diagRows } from './bench/diag.mjs';
import { scrapeBench } from './bench/scrape.mjs';
import { churn, churnNotes, churnRows } from './bench/churn.mjs';
import { deadPeerBench, deadPeerNotes, deadPeerRows } from './bench/deadpeer.mjs';
import { guardBench } from './bench/guard.mjs';
import { guardScanBench } from './bench/guardscan.mjs';
import { registerBench } from './bench/register.mjs';
import { configBench } from './bench/config.mjs';
import { retryBench, retryNotes } from './bench/retry.mjs';
import { h2PingBench } from './bench/h2ping.mjs';
import { prebindBench } from './bench/prebind.mjs';
import { printRows } from './bench/table.mjs';
import { loadFloor } from './bench/floor.mjs';
import { BATCHES, MIN_BATCH_MS, measure } from './bench/measure.mjs';

const json = process.argv.includes('--json');

// Bytes per call are only meaningful between full collections, so the script re-runs itself once with
// --expose-gc; every measurement still happens in that one process.
if (typeof globalThis.gc !== 'function') {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, self, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const require = createRequire(import.meta.url);
const { configure } = await import('../dist/index.js');

const MEMORY_CALLS = 1_000_000;
// A leak of even one small object per call is >= 16 bytes; collector noise spread over a million
// calls stays far below one byte. So "0 bytes per call" is met below 1.
const MEMORY_TOLERANCE = 1;

const GOALS = { noDelay: 1.6, heartbeat: 1.1, netKeepaliveSpeedup: 10, bytesPerCall: 0 };

// The two heartbeat settings alternated call by call: Node caches setKeepAlive's arguments, and a
// repeat of the same values would let any layer skip work.
const HEARTBEATS = [
  { keepAlive: { idle: 10_000, interval: 5_000, count: 3 }, userTimeout: 40_000 },
  { keepAlive: { idle: 11_000, interval: 6_000, count: 4 }, userTimeout: 45_000 },
];
// Option objects are built once so the loops time socktune, not the caller's allocations.
const NO_DELAY = [{ noDelay: true }, { noDelay: false }];

/** Kernel units of a heartbeat: TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds (rounded up, as socktune does). */
function kernelValues({ keepAlive, userTimeout }) {
  return [Math.ceil(keepAlive.idle / 1000), Math.ceil(keepAlive.interval / 1000), keepAlive.count, userTimeout];
}

function loadNetKeepalive(socket) {
  try {
    const nk = require('net-keepalive');
    // ffi-rs opens libc lazily, on the first call: probe it so a broken install is reported, not thrown mid-run.
    nk.setKeepAliveProbes(socket, HEARTBEATS[0].keepAlive.count);
    return { nk };
  } catch (err) {
    return { error: String(err?.message ?? err).split('\n')[0] };
  }
}

async function loopback() {
  const server = net.createServer();
  const accepted = once(server, 'connection');
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = net.connect(server.address().port, '127.0.0.1');
  await once(client, 'connect');
  const [peer] = await accepted;
  return {
    client,
    close() {
      client.destroy();
      peer.destroy();
      server.close();
    },
  };
}

function settledMemory() {
  for (let i = 0; i < 3; i++) globalThis.gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss };
}

function memoryGrowth(socket) {
  const run = (n) => {
    for (let i = 0; i < n; i++) configure(socket, HEARTBEATS[i & 1]);
  };
  // Warm-up first: compiled code, inline caches and socktune's per-handle state are one-time costs.
  run(MEMORY_CALLS / 10);
  const before = settledMemory();
  run(MEMORY_CALLS);
  const after = settledMemory();
  // Node's `external` already includes `arrayBuffers`, so heapUsed + external covers all three once.
  const heap = (m) => m.heapUsed + m.external;
  const heapPerCall = (heap(after) - heap(before)) / MEMORY_CALLS;
  const rssPerCall = (after.rss - before.rss) / MEMORY_CALLS;
  return {
    calls: MEMORY_CALLS,
    operation: 'configure(socket, heartbeat)',
    before,
    after,
    bytesPerCall: { heapAndExternal: heapPerCall, rss: rssPerCall },
    goal: GOALS.bytesPerCall,
    tolerance: MEMORY_TOLERANCE,
    met: { heapAndExternal: heapPerCall < MEMORY_TOLERANCE, rss: rssPerCall < MEMORY_TOLERANCE },
  };
}

async function main() {
  const floor = loadFloor({ quiet: json });
  const conn = await loopback();
  const { client } = conn;
  const fd = client._handle.fd;
  const [a, b] = HEARTBEATS.map(kernelValues);
  const { nk, error: nkError } = loadNetKeepalive(client);

  // The option rows are timed with the thread's CPU clock, the C loops and the JavaScript loops
  // alike: on a shared machine wall time also counts the time other processes held the CPU, which
  // no ratio of two loops run at different moments survives.
  floor.useCpuClock(true);
  const cpuTimed = (n, body) => {
    const t0 = floor.threadCpuNs();
    for (let i = 0; i < n; i++) body(i);
    return (floor.threadCpuNs() - t0) / n;
  };
  const noDelay = measure({
    floor: (n) => floor.noDelay(fd, n),
    // The same syscall with one Node-API crossing per op: the least any JS-called addon can cost.
    floorPerCall: (n) => cpuTimed(n, (i) => floor.setNoDelay(fd, (i & 1) === 0)),
    socktune: (n) => cpuTimed(n, (i) => configure(client, NO_DELAY[i & 1])),
  });

  const heartbeatRuns = {
    floor5: (n) => floor.heartbeat(fd, n, ...a, ...b),
    floorPerCall: (n) => cpuTimed(n, (i) => floor.setHeartbeat(fd, ...(i & 1 ? b : a))),
    socktune: (n) => cpuTimed(n, (i) => configure(client, HEARTBEATS[i & 1])),
    nodeSetKeepAlive: (n) => cpuTimed(n, (i) => client.setKeepAlive(true, HEARTBEATS[i & 1].keepAlive.idle)),
  };
  if (nk) {
    heartbeatRuns.netKeepalive = (n) =>
      cpuTimed(n, (i) => {
        const { keepAlive, userTimeout } = HEARTBEATS[i & 1];
        // net-keepalive has no idle setter: its documentation defers to Node's setKeepAlive for it.
        client.setKeepAlive(true, keepAlive.idle);
        nk.setKeepAliveInterval(client, keepAlive.interval);
        nk.setKeepAliveProbes(client, keepAlive.count);
        nk.setUserTimeout(client, userTimeout);
      });
  }
  const heartbeat = measure(heartbeatRuns);
  floor.useCpuClock(false);
  const memory = memoryGrowth(client);
  conn.close();
  const diag = await diagnostics({ quiet: json });
  const scrape = await scrapeBench({ quiet: json });
  // Policies: reset-close churn, then dead-peer detection (namespaces of their own).
  const churned = (await churn({ quiet: json })).json;
  const deadPeer = (await deadPeerBench({ quiet: json })).json;
  const guarded = await guardBench({ quiet: json });
  const guardScan = await guardScanBench({ quiet: json });
  const registered = await registerBench({ quiet: json });
  const config = await configBench({ quiet: json });
  const retry = await retryBench({ quiet: json });
  const h2ping = await h2PingBench({ quiet: json });
  const prebound = await prebindBench({ quiet: json });

  const noDelayRatio = noDelay.socktune.ns / noDelay.floor.ns;
  const heartbeatRatio = heartbeat.socktune.ns / heartbeat.floor5.ns;
  const speedup = nk ? heartbeat.netKeepalive.ns / heartbeat.socktune.ns : undefined;
  return {
    node: process.version,
    v8: process.versions.v8,
    kernel: `${os.type()} ${os.release()}`,
    arch: process.arch,
    cpu: os.cpus()[0]?.model,
    method: {
      connection: 'loopback TCP 127.0.0.1, client socket',
      clock: 'option rows: CPU time of the thread (CLOCK_THREAD_CPUTIME_ID), C and JavaScript loops alike',
      batches: BATCHES,
      minBatchMs: MIN_BATCH_MS,
      statistic: 'median of batches, benchmarks of a group interleaved batch by batch',
      batchesAtLeastMinMs: [...Object.values(noDelay), ...Object.values(heartbeat)].every((r) => r.batchMs >= MIN_BATCH_MS),
    },
    noDelay: {
      floor: noDelay.floor,
      floorPerCall: noDelay.floorPerCall,
      socktune: noDelay.socktune,
      ratio: noDelayRatio,
      goal: GOALS.noDelay,
      met: noDelayRatio <= GOALS.noDelay,
    },
    heartbeat: {
      values: HEARTBEATS,
      floor5: { ...heartbeat.floor5, syscalls: 'setsockopt TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT, SO_KEEPALIVE' },
      floorPerCall: { ...heartbeat.floorPerCall, note: 'the same five setsockopt, one Node-API call per heartbeat' },
      socktune: heartbeat.socktune,
      ratio: heartbeatRatio,
      goal: GOALS.heartbeat,
      met: heartbeatRatio <= GOALS.heartbeat,
    },
    setKeepAlive: {
      ...heartbeat.nodeSetKeepAlive,
      note: 'socket.setKeepAlive(true, d), d alternating 10000/11000 ms; sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL=1, TCP_KEEPCNT=10',
    },
    netKeepalive: nk
      ? {
          available: true,
          ...heartbeat.netKeepalive,
          speedup,
          floorSpeedup: heartbeat.netKeepalive.ns / heartbeat.floor5.ns,
          goal: GOALS.netKeepaliveSpeedup,
          met: speedup >= GOALS.netKeepaliveSpeedup,
        }
      : { available: false, error: nkError, goal: GOALS.netKeepaliveSpeedup, met: null },
    memory,
    diagnostics: diag,
    collector: scrape.json,
    collectorRows: scrape.rows,
    collectorNotes: scrape.notes ?? [],
    churn: churned,
    deadPeer,
    guard: guarded.json,
    guardRows: guarded.rows,
    guardScan: guardScan.json,
    guardScanRows: guardScan.rows,
    register: registered.json,
    registerRows: registered.rows,
    config: config.json,
    configRows: config.rows,
    retry: retry.json,
    retryRows: retry.rows,
    h2ping: h2ping.json,
    h2pingRows: h2ping.rows,
    h2pingNotes: h2ping.notes,
    prebind: prebound.json,
    prebindRows: prebound.rows,
  };
}

function printTable(r) {
  const ns = (x) => `${x.toFixed(1)} ns/op`;
  const times = (x) => `${x.toFixed(2)}×`;
  const yes = (m) => (m ? 'yes' : 'no');
  const rows = [
    ['floor: setsockopt TCP_NODELAY (C loop)', ns(r.noDelay.floor.ns), '', '', ''],
    ['  same, one Node-API call per op', ns(r.noDelay.floorPerCall.ns), `${times(r.noDelay.floorPerCall.ns / r.noDelay.floor.ns)} floor`, '', ''],
    ['configure({ noDelay })', ns(r.noDelay.socktune.ns), `${times(r.noDelay.ratio)} floor`, `≤ ${r.noDelay.goal}×`, yes(r.noDelay.met)],
    ['floor: 5 setsockopt heartbeat (C loop)', ns(r.heartbeat.floor5.ns), '', '', ''],
    [
      '  same, one Node-API call per heartbeat',
      ns(r.heartbeat.floorPerCall.ns),
      `${times(r.heartbeat.floorPerCall.ns / r.heartbeat.floor5.ns)} floor5`,
      '',
      '',
    ],
    [
      'configure({ keepAlive, userTimeout })',
      ns(r.heartbeat.socktune.ns),
      `${times(r.heartbeat.ratio)} floor5`,
      `≤ ${r.heartbeat.goal}×`,
      yes(r.heartbeat.met),
    ],
    ['node socket.setKeepAlive(true, d)', ns(r.setKeepAlive.ns), '', '', ''],
  ];
  if (r.netKeepalive.available) {
    rows.push([
      'net-keepalive, same heartbeat',
      ns(r.netKeepalive.ns),
      `socktune ${times(r.netKeepalive.speedup)} faster (floor5 ${times(r.netKeepalive.floorSpeedup)})`,
      `≥ ${r.netKeepalive.goal}×`,
      yes(r.netKeepalive.met),
    ]);
  } else {
    rows.push(['net-keepalive, same heartbeat', `failed to load: ${r.netKeepalive.error}`, '', `≥ ${r.netKeepalive.goal}×`, 'n/a']);
  }
  const m = r.memory;
  const perCall = (x) => `${x.toFixed(3)} B/call`;
  rows.push(
    [
      `memory: heapUsed+external, ${m.calls.toLocaleString('en')} calls`,
      perCall(m.bytesPerCall.heapAndExternal),
      '',
      `${m.goal} B/call`,
      yes(m.met.heapAndExternal),
    ],
    [`memory: RSS, ${m.calls.toLocaleString('en')} calls`, perCall(m.bytesPerCall.rss), '', `${m.goal} B/call`, yes(m.met.rss)],
    ...diagRows(r.diagnostics),
    ...r.collectorRows,
    ...churnRows(r.churn),
    ...deadPeerRows(r.deadPeer),
    ...r.guardRows,
    ...r.guardScanRows,
    ...r.registerRows,
    ...r.configRows,
    ...r.retryRows,
    ...r.h2pingRows,
    ...r.prebindRows,
  );
  console.log(`socktune bench: Node ${r.node}, ${r.kernel}, ${r.arch}, ${r.cpu ?? 'unknown cpu'}`);
  console.log(
    `median of ${r.method.batches} batches (each ≥ ${r.method.minBatchMs} ms: ${yes(r.method.batchesAtLeastMinMs)}), ${r.method.connection}; ${r.method.clock}\n`,
  );
  printRows(rows);
  console.log(
    `\nmemory: growth after gc() over ${m.calls.toLocaleString('en')} ${m.operation} calls (external includes arrayBuffers); "met" means below ${m.tolerance} B/call`,
  );
  for (const note of diagNotes(r.diagnostics)) console.log(note);
  for (const note of r.collectorNotes) console.log(note);
  for (const note of churnNotes(r.churn)) console.log(note);
  for (const note of deadPeerNotes(r.deadPeer)) console.log(note);
  for (const note of retryNotes(r.retry)) console.log(note);
  for (const note of r.h2pingNotes) console.log(note);
}

const result = await main();
if (json) console.log(JSON.stringify(result, null, 2));
else printTable(result);
