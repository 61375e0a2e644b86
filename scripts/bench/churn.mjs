// Short-connection churn: connect, request, response, the client closes. Four ways to close:
//   destroy()                          FIN; the client keeps a TIME_WAIT for 60 s
//   resetAndDestroy()                  Node's own RST (no drain check at all)
//   tune(socket, rstOnClose()) + end() socktune's policy: the safe reset, behind the ordinary end()
//   resetClose(socket)                 socktune's safe reset, called directly
// Connections/s, client CPU per connection and TIME_WAIT left, inside a network namespace of the
// bench's own (loopback inside it, tcp_tw_reuse as the namespace default), servers on several ports
// in a second process, every arm once per round in a rotating order, medians over the rounds. The
// goal: the policy is at least as fast as resetAndDestroy (ratio of paired rounds ≥ 1.0). With strace
// on PATH it also counts the syscalls each close path makes per connection (one connection at a time,
// minus a run that makes none).
//
// Usage: node scripts/bench/churn.mjs [--json]    (exports churn() for scripts/bench.mjs)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, namespacesUnavailable } from '../../dist/demo/lab.js';
import { median } from './measure.mjs';
import { printRows } from './table.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const peer = join(here, 'churn-peer.mjs');

export const GOALS = { policyVsResetAndDestroy: 1.0 };
const ARMS = ['destroy', 'resetAndDestroy', 'policyEnd', 'resetClose'];
const LABELS = {
  destroy: 'destroy() (FIN)',
  resetAndDestroy: 'resetAndDestroy() (Node)',
  policyEnd: 'tune(rstOnClose()) + end()',
  resetClose: 'resetClose(socket)',
};

/** Per-syscall counts from `strace -c -o FILE` output. */
function straceCounts(text) {
  const counts = {};
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$/.exec(line);
    if (m && m[2] !== 'total') counts[m[2]] = Number(m[1]);
  }
  return counts;
}

/** Syscalls per connection of each arm: strace -f -c of `count` sequential connections minus a run of none. */
function syscallProfile(ns, ports, count) {
  const dir = mkdtempSync(join(tmpdir(), 'st-churn-'));
  try {
    const traced = (arm, n) => {
      const out = join(dir, `${arm}-${n}.txt`);
      const args = JSON.stringify({ arm, count: n, ports });
      const r = spawnSync('ip', ['netns', 'exec', ns, 'strace', '-f', '-c', '-o', out, process.execPath, peer, 'strace-client', args], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status !== 0) throw new Error(`strace of ${arm} failed: ${r.stderr}`);
      return straceCounts(readFileSync(out, 'utf8'));
    };
    const base = traced('destroy', 0);
    const profile = {};
    for (const arm of ARMS) {
      const counts = traced(arm, count);
      const per = {};
      for (const [name, n] of Object.entries(counts)) {
        const d = (n - (base[name] ?? 0)) / count;
        if (d >= 0.05) per[name] = Math.round(d * 100) / 100;
      }
      profile[arm] = { total: Math.round(Object.values(per).reduce((a, b) => a + b, 0) * 100) / 100, perSyscall: per };
    }
    return { available: true, connections: count, method: 'strace -f -c, one connection at a time, minus a run with no connection', arms: profile };
  } catch (err) {
    return { available: false, error: String(err?.message ?? err).split('\n')[0] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs the churn benchmark. Returns `{ rows, json }`: rows for bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and the full JSON.
 */
export async function churn({ quiet = false, rounds = 15, per = 2000, concurrency = 32, portsPerArm = 4, strace = true } = {}) {
  const why = namespacesUnavailable();
  if (why) {
    const json = { available: false, error: why, goals: GOALS };
    return { rows: [['churn: tune(rstOnClose()) + end()', `not run: ${why}`, '', `≥ ${GOALS.policyVsResetAndDestroy}×`, 'n/a']], json };
  }
  const log = (m) => quiet || process.stderr.write(`${m}\n`);
  const lab = new Lab(`st-demo-${process.pid}`).protect();
  try {
    const ns = lab.namespace('churn');
    // One set of ports per arm, and one more for the strace runs.
    const server = lab.start(ns, 'serve', { count: (ARMS.length + 1) * portsPerArm }, 600_000, peer);
    const { ports } = await server.next();
    log(`churn: ${rounds} rounds × ${ARMS.length} arms × ${per} connections in namespace ${ns} ...`);
    const client = lab.start(ns, 'client', { ports, arms: ARMS, portsPerArm, rounds, per, concurrency }, 600_000, peer);
    const { batches } = await client.next();
    let syscalls = { available: false, error: 'not asked for' };
    if (strace) {
      if (spawnSync('sh', ['-c', 'command -v strace'], { stdio: 'ignore' }).status !== 0) syscalls = { available: false, error: 'strace not on PATH' };
      else {
        log('churn: counting syscalls per connection under strace ...');
        syscalls = syscallProfile(ns, ports.slice(ARMS.length * portsPerArm), 500);
      }
    }
    await lab.stop(server);
    return summarize({ batches, syscalls, rounds, per, concurrency, portsPerArm, ns });
  } finally {
    lab.cleanup();
  }
}

function summarize({ batches, syscalls, rounds, per, concurrency, portsPerArm, ns }) {
  const arms = {};
  for (const arm of ARMS) {
    const mine = batches.filter((b) => b.arm === arm);
    const rates = mine.map((b) => per / (b.ns / 1e9));
    const errors = {};
    for (const b of mine) for (const [k, n] of Object.entries(b.errors)) errors[k] = (errors[k] ?? 0) + n;
    arms[arm] = {
      label: LABELS[arm],
      connectionsPerSecond: { median: median(rates), min: Math.min(...rates), max: Math.max(...rates) },
      cpuUsPerConnection: median(mine.map((b) => b.cpuUs / per)),
      timeWaitPerBatch: median(mine.map((b) => b.timeWait)),
      failed: mine.reduce((t, b) => t + (per - b.ok), 0),
      errors,
    };
  }
  // Paired by round: both arms of a pair saw the same machine state (other load, frequency).
  const paired = (a, b) =>
    median(
      [...new Set(batches.map((x) => x.round))].map((r) => {
        const x = batches.find((q) => q.round === r && q.arm === a);
        const y = batches.find((q) => q.round === r && q.arm === b);
        return y.ns / x.ns;
      }),
    );
  const ratio = paired('policyEnd', 'resetAndDestroy');
  const json = {
    available: true,
    method: {
      namespace: `${ns} (loopback inside, namespace-default sysctls: tcp_tw_reuse 2)`,
      connection: 'connect, write "ping\\n", read "pong\\n", close the arm\'s way; server in a second process, allowHalfOpen false',
      rounds,
      connectionsPerBatch: per,
      concurrency,
      serverPortsPerArm: portsPerArm,
      order: 'every arm once per round, order rotated each round, after one warm-up batch each',
      statistic: 'median over rounds; ratios are medians of per-round ratios (paired)',
    },
    arms,
    policyVsResetAndDestroy: { ratio, goal: GOALS.policyVsResetAndDestroy, met: ratio >= GOALS.policyVsResetAndDestroy },
    resetCloseVsResetAndDestroy: paired('resetClose', 'resetAndDestroy'),
    cpuPolicyVsResetAndDestroy: arms.policyEnd.cpuUsPerConnection / arms.resetAndDestroy.cpuUsPerConnection,
    syscalls,
    batches,
  };
  return { rows: churnRows(json), json };
}

/** Rows for the bench table: [benchmark, result, ratio, goal, met]. */
export function churnRows(d) {
  if (!d.available) return [['churn: tune(rstOnClose()) + end()', `not run: ${d.error}`, '', `≥ ${GOALS.policyVsResetAndDestroy}×`, 'n/a']];
  const rate = (a) => `${Math.round(a.connectionsPerSecond.median).toLocaleString('en')} conn/s`;
  const extra = (a) => `${a.cpuUsPerConnection.toFixed(1)} µs CPU/conn, ${a.timeWaitPerBatch} TIME_WAIT/batch`;
  const sys = (arm) => (d.syscalls.available ? `, ${d.syscalls.arms[arm].total} syscalls/conn` : '');
  const a = d.arms;
  const p = d.policyVsResetAndDestroy;
  return [
    [`churn: ${a.destroy.label}`, rate(a.destroy), extra(a.destroy) + sys('destroy'), '', ''],
    [`churn: ${a.resetAndDestroy.label}`, rate(a.resetAndDestroy), extra(a.resetAndDestroy) + sys('resetAndDestroy'), '', ''],
    [
      `churn: ${a.policyEnd.label}`,
      rate(a.policyEnd),
      `${p.ratio.toFixed(2)}× resetAndDestroy; ${extra(a.policyEnd)}${sys('policyEnd')}`,
      `≥ ${p.goal}×`,
      p.met ? 'yes' : 'no',
    ],
    [
      `churn: ${a.resetClose.label}`,
      rate(a.resetClose),
      `${d.resetCloseVsResetAndDestroy.toFixed(2)}× resetAndDestroy; ${extra(a.resetClose)}${sys('resetClose')}`,
      '',
      '',
    ],
  ];
}

/** Lines under the table: method and the syscall profile. */
export function churnNotes(d) {
  if (!d.available) return [`churn: not run (${d.error})`];
  const m = d.method;
  const lines = [
    `churn: ${m.namespace}; ${m.connection}; ${m.rounds} rounds × ${m.connectionsPerBatch} connections, ${m.concurrency} in flight, ${m.serverPortsPerArm} server ports per arm; ${m.order}; ${m.statistic}`,
    `  client CPU per connection, policy / resetAndDestroy: ${d.cpuPolicyVsResetAndDestroy.toFixed(2)}×`,
  ];
  if (d.syscalls.available) {
    lines.push(`  syscalls per connection (${d.syscalls.method}, ${d.syscalls.connections} connections):`);
    for (const [arm, s] of Object.entries(d.syscalls.arms)) {
      const list = Object.entries(s.perSyscall)
        .sort((x, y) => y[1] - x[1])
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      lines.push(`    ${LABELS[arm].padEnd(28)} ${String(s.total).padStart(6)}: ${list}`);
    }
  } else lines.push(`  syscall profile: not run (${d.syscalls.error})`);
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const asJson = process.argv.includes('--json');
  const { rows, json } = await churn({ quiet: asJson });
  if (asJson) console.log(JSON.stringify(json, null, 2));
  else printRows(rows, churnNotes(json));
}
