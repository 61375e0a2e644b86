// The socktune/register section of the benchmarks: what applying a policy process-wide, and
// tracing where connections come from (SOCKTUNE_TRACE=1), costs per connection.
//
// Each arm is a child process on loopback that opens and closes short connections to a server in
// the same process, as fast as it can with a fixed number in flight: connect, write one byte, the
// server destroys its side on reading it (so TIME_WAIT stays on the server side and the client's
// ports never run out), the client sees the close, and the next connection starts. Both ends of
// every connection are this process's, so register adopts two sockets per connection (opened and
// accepted). connect() is called 30 frames deep, as in an application with a framework under it
// (the trace captures the stack there). Arms:
//   bare      no socktune
//   tune      the same policy by hand: tuneServer(server, gracefulHeartbeat()) and tune(socket, ...) after connect()
//   register  node --import socktune/register, SOCKTUNE_POLICY=gracefulHeartbeat
//   trace     the same with SOCKTUNE_TRACE=1
// Children alternate round by round (bare, tune, register, trace, trace, register, ...). What
// counts is the CPU time (user + system, so the kernel's work in the syscalls too) the child spends
// per connection, which other load on the machine changes far less than the wall-clock rate (also
// reported); each arm is summarised by the median of its rounds. Goals: register costs no more CPU
// per connection than tuning the same connections by hand, and tracing no more than a tenth on top
// of register, on this worst case (loopback, nothing else done per connection); both within 1.10×,
// the spread of identical arms between runs on the 2-core development VM.
//
// Usage: node scripts/bench/register.mjs [--json] [--rounds 5] [--connections 10000]
// Child: node [--import socktune/register] scripts/bench/register.mjs --child [--tune] --connections N
import net from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { median } from './measure.mjs';
import { intFlag, printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);
const root = resolve(dirname(self), '..', '..');

/** Goals, as ratios of CPU per connection: register against tuning by hand, tracing against register. */
export const GOALS = { registerVsTune: 1.1, traceVsRegister: 1.1 };
const DEFAULTS = { rounds: 5, connections: 10_000 };
const IN_FLIGHT = 32;
const DEPTH = 30;
const WARMUP = 2000;

const ARMS = {
  bare: { env: {}, flags: [] },
  tune: { env: {}, flags: ['--tune'] },
  register: { env: { SOCKTUNE_POLICY: 'gracefulHeartbeat' }, flags: [] },
  trace: { env: { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_TRACE: '1' }, flags: [] },
};

// ---------------------------------------------------------------- child

function deep(n, f) {
  return n === 0 ? f() : deep(n - 1, f);
}

async function child(total, byHand) {
  const socktune = byHand ? await import('../../dist/index.js') : undefined;
  const policy = socktune?.presets.gracefulHeartbeat();
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.destroy());
  });
  if (socktune) socktune.tuneServer(server, policy);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  const one = () =>
    new Promise((done) => {
      const c = deep(DEPTH, () => net.connect(port, '127.0.0.1'));
      if (socktune) socktune.tune(c, policy);
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
  // What register did (the bare arm has no configuration: importing it there would stop the process).
  const registered = process.env.SOCKTUNE_POLICY ? (await import('socktune/register')).stats() : undefined;
  const cpuMicros = (cpu.user + cpu.system) / total;
  process.stdout.write(`${JSON.stringify({ rate: total / seconds, seconds, cpuMicros, registered })}\n`);
  server.close();
}

// ---------------------------------------------------------------- parent

function runArm(arm, connections) {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('SOCKTUNE_') || key === 'NODE_OPTIONS') delete env[key];
  Object.assign(env, ARMS[arm].env);
  const flags = env.SOCKTUNE_POLICY ? ['--import', 'socktune/register'] : [];
  return new Promise((resolvePromise, reject) => {
    const args = [...flags, self, '--child', ...ARMS[arm].flags, '--connections', String(connections)];
    const c = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    c.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolvePromise(JSON.parse(out));
      } catch (e) {
        reject(new Error(`register bench, ${arm} arm: ${e.message}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      }
    });
  });
}

/**
 * Runs the section. Returns `{ rows, json }`: rows for scripts/bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and every measured number as JSON.
 */
export async function registerBench(options = {}) {
  const o = { ...DEFAULTS, quiet: false, ...options };
  const log = (m) => o.quiet || process.stderr.write(`${m}\n`);
  const names = Object.keys(ARMS);
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const arm of round % 2 ? [...names].reverse() : names) {
        const r = await runArm(arm, o.connections);
        runs[arm].push(r);
        log(`register: round ${round + 1}, ${arm}: ${r.cpuMicros.toFixed(1)} µs CPU/connection, ${r.rate.toFixed(0)} connections/s`);
      }
    }
  } catch (err) {
    const json = { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
    return { rows: registerRows(json), json };
  }
  const rate = Object.fromEntries(names.map((n) => [n, median(runs[n].map((r) => r.rate))]));
  const cpu = Object.fromEntries(names.map((n) => [n, median(runs[n].map((r) => r.cpuMicros))]));
  const json = {
    available: true,
    method: {
      load: `${o.connections} connections per round after ${WARMUP} to warm up, ${IN_FLIGHT} in flight, loopback; connect() ${DEPTH} frames deep; client writes one byte, server destroys; both ends in the child process`,
      arms: {
        bare: 'node, no socktune',
        tune: 'tuneServer(server, presets.gracefulHeartbeat()) and tune(socket, policy) after each connect()',
        register: 'node --import socktune/register, SOCKTUNE_POLICY=gracefulHeartbeat',
        trace: 'register + SOCKTUNE_TRACE=1',
      },
      statistic: `CPU time (user + system) of the child per connection, and connections/s; ${o.rounds} rounds per arm, alternating; medians`,
    },
    cpuMicros: cpu,
    rate,
    cost: { tune: cpu.tune - cpu.bare, register: cpu.register - cpu.bare, trace: cpu.trace - cpu.register },
    ratio: { registerVsTune: cpu.register / cpu.tune, traceVsRegister: cpu.trace / cpu.register },
    runs,
    goals: GOALS,
  };
  json.met = { register: json.ratio.registerVsTune <= GOALS.registerVsTune, trace: json.ratio.traceVsRegister <= GOALS.traceVsRegister };
  return { rows: registerRows(json), json };
}

/** Rows for a bench table: [benchmark, result, ratio, goal, met]. */
export function registerRows(d) {
  const yes = (m) => (m ? 'yes' : 'no');
  if (!d.available) {
    return [
      ['register: policy on every connection, CPU vs by hand', `not run: ${d.error}`, '', `≤ ${d.goals.registerVsTune}× tune`, 'n/a'],
      ['register: SOCKTUNE_TRACE=1, CPU vs register', '', '', `≤ ${d.goals.traceVsRegister}× register`, 'n/a'],
    ];
  }
  const us = (x) => `${x.toFixed(1)} µs/conn`;
  const plus = (x) => `${x >= 0 ? '+' : ''}${x.toFixed(1)} µs`;
  const cps = (x) => `${Math.round(x).toLocaleString('en')} conn/s`;
  return [
    ['register: CPU per short connection, no socktune', us(d.cpuMicros.bare), cps(d.rate.bare), '', ''],
    ['register: by hand, tuneServer + tune (gracefulHeartbeat)', us(d.cpuMicros.tune), `${plus(d.cost.tune)} vs bare`, '', ''],
    [
      'register: --import socktune/register (gracefulHeartbeat)',
      us(d.cpuMicros.register),
      `${d.ratio.registerVsTune.toFixed(3)}× tune`,
      `≤ ${d.goals.registerVsTune}× tune`,
      yes(d.met.register),
    ],
    [
      'register: + SOCKTUNE_TRACE=1',
      us(d.cpuMicros.trace),
      `${d.ratio.traceVsRegister.toFixed(3)}× register (${plus(d.cost.trace)})`,
      `≤ ${d.goals.traceVsRegister}× register`,
      yes(d.met.trace),
    ],
  ];
}

if (process.argv[1] === self) {
  const argv = process.argv.slice(2);
  if (argv.includes('--child')) {
    await child(intFlag('connections', DEFAULTS.connections, argv), argv.includes('--tune'));
  } else {
    const { rows, json } = await registerBench({
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
