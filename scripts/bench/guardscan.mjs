// The guard's scan at scale: what one full scan costs per tracked connection, against the floor
// of the design it replaced (one TCP_INFO getsockopt per connection per scan), measured in the
// same run. 4,000 loopback connections (8,000 fds; the machine allows 20,000) are tracked by one
// guard under three policies:
//   - presets.gracefulHeartbeat(): half-close and FIN-wait deadlines; Node reads every socket;
//   - the same with idleTimeout and a heartbeat: Node's byte counters are read too;
//   - the default policy on paused sockets (Node stopped reading them): each joins the watch set
//     (native/watch.h) once, and a scan asks the kernel only about those whose peer's FIN or RST
//     the kernel reported (none here).
// A scan here is exactly what the timer's eight ticks do over one scanInterval, run at once.
// Heap per tracked connection: heapUsed+external after full collections, tracked minus untracked.
// Goals: ≤ 250 ns per tracked connection per scan (all three); ≤ 200 B per tracked connection.
//
// Usage: node --expose-gc scripts/bench/guardscan.mjs [--json] [--connections 4000]
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { measure } from './measure.mjs';
import { printRows } from './table.mjs';

export const GOALS = { nsPerConnection: 250, bytesPerConnection: 200 };
const MODEL = 100_000;

function settled() {
  for (let i = 0; i < 3; i++) globalThis.gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/** `n` connected loopback pairs; the server ends are read (flowing) unless `paused`. */
async function pairs(n, paused) {
  const server = net.createServer({ pauseOnConnect: paused });
  const accepted = [];
  server.on('connection', (s) => accepted.push(s));
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
  await once(server, 'listening');
  const { port } = server.address();
  const clients = [];
  for (let i = 0; i < n; i += 500) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(500, n - i) }, async () => {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        await once(c, 'connect');
        return c;
      }),
    );
    clients.push(...batch);
  }
  while (accepted.length < n) await once(server, 'connection');
  for (const s of accepted) {
    s.on('error', () => {});
    if (!paused) s.resume();
  }
  return {
    accepted,
    async close() {
      for (const s of [...accepted, ...clients]) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

export async function guardScanBench({ connections = 4000, quiet = false } = {}) {
  const { Guard, presets, tcpInfo } = await import('../../dist/index.js');
  const { scanPass } = await import('../../dist/guard/guard.js');
  const ping = () => {};
  const policies = {
    deadlines: presets.gracefulHeartbeat(),
    activity: presets.gracefulHeartbeat({ idleTimeout: 600_000, heartbeat: { interval: 3_600_000, timeout: 60_000, ping } }),
  };
  const reading = await pairs(connections, false);
  const paused = await pairs(connections, true);
  const before = settled();
  const guards = {
    deadlines: new Guard(policies.deadlines),
    activity: new Guard(policies.activity),
    paused: new Guard(policies.deadlines),
  };
  for (const s of reading.accepted) guards.deadlines.track(s);
  const bytesPerConnection = (settled() - before) / connections;
  for (const s of paused.accepted) guards.paused.track(s);
  let k = 0;
  const floor = (n) => {
    // The floor the previous design paid on every connection of every scan.
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) tcpInfo(reading.accepted[k++ % connections]);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  const timedPass = (guard) => (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) scanPass(guard);
    return Number(process.hrtime.bigint() - t0) / n; // ns per whole scan
  };
  // One socket set per guard would need 6 x 4,000 fds: the reading set moves from the deadlines
  // guard to the activity guard between its two measurements, each against the floor again.
  const first = measure({ deadlines: timedPass(guards.deadlines), paused: timedPass(guards.paused), tcpInfo: floor }, { start: 1 });
  for (const s of reading.accepted) guards.activity.track(s);
  const second = measure({ activity: timedPass(guards.activity), tcpInfo: floor }, { start: 1 });
  const results = { ...first, activity: second.activity, tcpInfo: first.tcpInfo.ns <= second.tcpInfo.ns ? first.tcpInfo : second.tcpInfo };
  const kernelReads = Object.fromEntries(Object.entries(guards).map(([name, g]) => [name, g.stats().kernelReads]));
  // A guard tracking the same sockets moves them: untrack here so the sockets close cleanly.
  for (const g of Object.values(guards)) for (const s of [...reading.accepted, ...paused.accepted]) g.untrack(s);
  await reading.close();
  await paused.close();

  // Scans are timed whole; the floor per call.
  const ns = (name) => (name === 'tcpInfo' ? results[name].ns : results[name].ns / connections);
  const json = {
    connections,
    nsPerConnectionPerScan: { deadlines: ns('deadlines'), activity: ns('activity'), paused: ns('paused') },
    tcpInfoFloorNs: ns('tcpInfo'),
    kernelReads,
    bytesPerConnection,
    model: {
      connections: MODEL,
      scanMs: { deadlines: (ns('deadlines') * MODEL) / 1e6, activity: (ns('activity') * MODEL) / 1e6 },
      cpuPercentAt5s: { deadlines: ((ns('deadlines') * MODEL) / 5e9) * 100, activity: ((ns('activity') * MODEL) / 5e9) * 100 },
    },
    goals: GOALS,
  };
  const f = (x) => `${x.toFixed(1)} ns`;
  const rows = [
    [`floor: TCP_INFO getsockopt per connection (the old scan)`, f(ns('tcpInfo')), '', '', ''],
    [
      `guard scan, ${connections.toLocaleString('en')} conns, deadlines (gracefulHeartbeat())`,
      `${f(ns('deadlines'))}/conn`,
      `${(ns('tcpInfo') / ns('deadlines')).toFixed(1)}× cheaper than the floor`,
      `≤ ${GOALS.nsPerConnection} ns`,
      ns('deadlines') <= GOALS.nsPerConnection ? 'yes' : 'no',
    ],
    [
      `guard scan, ${connections.toLocaleString('en')} conns, + idle and heartbeat`,
      `${f(ns('activity'))}/conn`,
      `${(ns('tcpInfo') / ns('activity')).toFixed(1)}× cheaper than the floor`,
      `≤ ${GOALS.nsPerConnection} ns`,
      ns('activity') <= GOALS.nsPerConnection ? 'yes' : 'no',
    ],
    [
      `guard scan, ${connections.toLocaleString('en')} paused conns (the kernel's events, no read each)`,
      `${f(ns('paused'))}/conn`,
      `${(ns('tcpInfo') / ns('paused')).toFixed(1)}× cheaper than the floor`,
      `≤ ${GOALS.nsPerConnection} ns`,
      ns('paused') <= GOALS.nsPerConnection ? 'yes' : 'no',
    ],
    [
      `guard: heap+external per tracked connection`,
      `${bytesPerConnection.toFixed(0)} B/conn`,
      '',
      `≤ ${GOALS.bytesPerConnection} B`,
      bytesPerConnection <= GOALS.bytesPerConnection ? 'yes' : 'no',
    ],
    [
      `  model: ${MODEL.toLocaleString('en')} conns, one scan (deadlines / + activity)`,
      `${json.model.scanMs.deadlines.toFixed(1)} / ${json.model.scanMs.activity.toFixed(1)} ms`,
      `${json.model.cpuPercentAt5s.deadlines.toFixed(2)}% / ${json.model.cpuPercentAt5s.activity.toFixed(2)}% of a core at scanInterval 5 s`,
      '',
      '',
    ],
  ];
  if (!quiet) printRows(rows);
  return { json, rows };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');
  const i = process.argv.indexOf('--connections');
  const { json } = await guardScanBench({ connections: i > 0 ? Number(process.argv[i + 1]) : 4000, quiet: process.argv.includes('--json') });
  if (process.argv.includes('--json')) console.log(JSON.stringify(json, null, 2));
  process.exit(0);
}
