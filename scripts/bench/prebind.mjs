// The pre-connect stage's cost per connection: socktune's connect() (the socket made natively with
// its options, opened into Node's handle inside Node's own connect) against net.connect, for the
// same connections.
//
// Each arm is a child process on loopback that opens and closes short connections to a server in
// the same process, as fast as it can with a fixed number in flight: connect, write one byte, the
// server destroys its side on reading it (so TIME_WAIT stays on the server side), the client sees
// the close, and the next connection starts. Arms, in pairs that differ only in who makes the socket:
//   net             net.connect()
//   connect         connect() with nothing to set: the stage lets Node make the socket
//   net-tos         net.connect(), then configure(socket, { tos }) on 'connect' (IP_TOS after connect)
//   connect-tos     connect({ prebind: { tos } }): the socket made natively, IP_TOS before connect
//   net-pinned      net.connect({ localAddress }): Node binds, reserving a port
//   connect-reserve connect({ localAddress, prebind: { bindAddressNoPort: false } }): the socket made
//                   natively, Node's bind reserving a port as above (the stage's own cost, pinned)
//   connect-pinned  connect({ localAddress }): IP_BIND_ADDRESS_NO_PORT, the port chosen at connect,
//                   per destination (what the kernel's connect-time port search costs on top)
// What counts is the CPU time (user + system, so the kernel's work in the syscalls too) the child
// spends per connection; children alternate round by round, each arm summarised by the median of
// its rounds. Goal: the stage costs at most 1.05x what Node's own way costs for the same socket.
//
// Usage: node scripts/bench/prebind.mjs [--json] [--rounds 5] [--connections 20000]
// Child: node scripts/bench/prebind.mjs --child <arm> --connections N
import net from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { median } from './measure.mjs';
import { intFlag, printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);
const root = resolve(dirname(self), '..', '..');

/** Goal, as a ratio of CPU per connection: the stage against Node's own way to the same socket. */
export const GOALS = { stageVsNode: 1.05 };
const DEFAULTS = { rounds: 5, connections: 20_000 };
const IN_FLIGHT = 32;
const WARMUP = 2000;
const ARMS = ['net', 'connect', 'net-tos', 'connect-tos', 'net-pinned', 'connect-reserve', 'connect-pinned'];
/** [name, Node's arm, the stage's arm, what, whether the goal applies (the same socket both ways)] */
const PAIRS = [
  ['plain', 'net', 'connect', 'nothing to set', true],
  ['tos', 'net-tos', 'connect-tos', 'IP_TOS (after connect by configure; before connect at the stage)', true],
  ['reserve', 'net-pinned', 'connect-reserve', 'localAddress, a port reserved at bind (bindAddressNoPort: false)', true],
  ['pinned', 'net-pinned', 'connect-pinned', 'localAddress, the port chosen at connect (IP_BIND_ADDRESS_NO_PORT)', false],
];

// ---------------------------------------------------------------- child

async function child(arm, total) {
  const socktune = await import('../../dist/index.js');
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.destroy());
  });
  server.listen(0, '127.0.0.1', 4096);
  await once(server, 'listening');
  const { port } = server.address();
  const open = {
    net: () => net.connect({ host: '127.0.0.1', port }),
    connect: () => socktune.connect({ host: '127.0.0.1', port }),
    'net-pinned': () => net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' }),
    'connect-reserve': () => socktune.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1', prebind: { bindAddressNoPort: false } }),
    'connect-pinned': () => socktune.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' }),
    'net-tos': () => {
      const c = net.connect({ host: '127.0.0.1', port });
      c.once('connect', () => socktune.configure(c, { tos: 0x10 }));
      return c;
    },
    'connect-tos': () => socktune.connect({ host: '127.0.0.1', port, prebind: { tos: 0x10 } }),
  }[arm];
  const one = () =>
    new Promise((done) => {
      const c = open();
      c.on('error', () => {});
      c.once('connect', () => c.write('x'));
      c.resume();
      c.once('close', done);
    });
  const run = async (n) => {
    let started = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (started < n) {
          started++;
          await one();
        }
      }),
    );
  };
  await run(WARMUP);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await run(total);
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ rate: total / seconds, seconds, cpuMicros: (cpu.user + cpu.system) / total })}\n`);
  server.close();
}

// ---------------------------------------------------------------- parent

function runArm(arm, connections) {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('SOCKTUNE_') || key === 'NODE_OPTIONS') delete env[key];
  return new Promise((resolvePromise, reject) => {
    const c = spawn(process.execPath, [self, '--child', arm, '--connections', String(connections)], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    c.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolvePromise(JSON.parse(out));
      } catch (e) {
        reject(new Error(`prebind bench, ${arm} arm: ${e.message}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      }
    });
  });
}

/**
 * Runs the section. Returns `{ rows, json }`: rows for a bench table ([benchmark, result, ratio,
 * goal, met]) and every measured number as JSON.
 */
export async function prebindBench(options = {}) {
  const o = { ...DEFAULTS, quiet: false, ...options };
  const log = (m) => o.quiet || process.stderr.write(`${m}\n`);
  const runs = Object.fromEntries(ARMS.map((n) => [n, []]));
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const arm of round % 2 ? [...ARMS].reverse() : ARMS) {
        const r = await runArm(arm, o.connections);
        runs[arm].push(r);
        log(`prebind: round ${round + 1}, ${arm}: ${r.cpuMicros.toFixed(1)} µs CPU/connection, ${r.rate.toFixed(0)} connections/s`);
      }
    }
  } catch (err) {
    const json = { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
    return { rows: prebindRows(json), json };
  }
  const cpu = Object.fromEntries(ARMS.map((n) => [n, median(runs[n].map((r) => r.cpuMicros))]));
  const rate = Object.fromEntries(ARMS.map((n) => [n, median(runs[n].map((r) => r.rate))]));
  const ratio = Object.fromEntries(PAIRS.map(([name, node, stage]) => [name, cpu[stage] / cpu[node]]));
  const json = {
    available: true,
    method: {
      load: `${o.connections} connections per round after ${WARMUP} to warm up, ${IN_FLIGHT} in flight, loopback; client writes one byte, server destroys; both ends in the child process`,
      arms: Object.fromEntries(PAIRS.map(([name, node, stage, what]) => [name, `${what}: ${node} vs ${stage}`])),
      statistic: `CPU time (user + system) of the child per connection, and connections/s; ${o.rounds} rounds per arm, alternating; medians`,
    },
    cpuMicros: cpu,
    rate,
    ratio,
    runs,
    goals: GOALS,
  };
  json.met = Object.fromEntries(PAIRS.filter((p) => p[4]).map(([name]) => [name, ratio[name] <= GOALS.stageVsNode]));
  return { rows: prebindRows(json), json };
}

/** Rows for a bench table: [benchmark, result, ratio, goal, met]. */
export function prebindRows(d) {
  if (!d.available) return [['prebind: connect() vs net.connect, CPU per connection', `not run: ${d.error}`, '', `≤ ${d.goals.stageVsNode}×`, 'n/a']];
  const us = (x) => `${x.toFixed(1)} µs/conn`;
  const cps = (x) => `${Math.round(x).toLocaleString('en')} conn/s`;
  const rows = [];
  const shown = new Set();
  for (const [name, node, stage, what, goal] of PAIRS) {
    if (!shown.has(node)) rows.push([`prebind: Node's way, ${node}`, us(d.cpuMicros[node]), cps(d.rate[node]), '', '']);
    shown.add(node);
    rows.push([
      `prebind: the stage, ${stage}: ${what}`,
      us(d.cpuMicros[stage]),
      `${d.ratio[name].toFixed(3)}× ${node}`,
      goal ? `≤ ${d.goals.stageVsNode}×` : '(kernel work)',
      goal ? (d.met[name] ? 'yes' : 'no') : '',
    ]);
  }
  return rows;
}

if (process.argv[1] === self) {
  const argv = process.argv.slice(2);
  const childAt = argv.indexOf('--child');
  if (childAt >= 0) {
    await child(argv[childAt + 1], intFlag('connections', DEFAULTS.connections, argv));
  } else {
    const { rows, json } = await prebindBench({
      rounds: intFlag('rounds', DEFAULTS.rounds, argv),
      connections: intFlag('connections', DEFAULTS.connections, argv),
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
