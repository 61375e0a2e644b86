// The diagnostics section of `npm run bench`, at the scale operators run `ss` at: ~200,000 TIME_WAIT
// sockets (the seeds' "timewait 262143").
//
// The parent side (`diagnostics()`, called by scripts/bench.mjs) makes network namespaces of its own,
// fills each with TIME_WAIT sockets (the C generator behind scripts/bench/timewait.mjs, ~5 s for
// 200,000), runs this file inside it with --child, and deletes the namespace at the end, on error and
// on SIGINT/SIGTERM too (deleting a namespace purges its TIME_WAIT). TIME_WAIT lasts 60 s, so the
// work is split into two phases, each in a fresh namespace and well inside that lifetime:
//   processes: whole processes, interleaved run by run: `socktune stat` (counts plus the top peers,
//     destinations and ports) and `stat --top 0`, against `sh -c 'ss -tan | awk ...'`, and Node's
//     start-up alone (`node -e 0`) for context;
//   inProcess: single calls, interleaved: the C floors (scripts/bench/floor: one walk of the kernel's
//     table for both families, and one dump per family as ss makes them), connectionStates(),
//     connectionReport(), `ss -tan` spawned with its output drained, and the /proc/net/tcp fallback.
// Each child checks the count with `ss -Htan state time-wait` before and after, and every method's
// reading is compared. The collector rows (event-loop stalls during scrapes) are scripts/bench/scrape.mjs.
//
// Usage: node scripts/bench/diag.mjs [--json]     (this section alone; scripts/bench.mjs runs it too)
//        ip netns exec NS node scripts/bench/diag.mjs --child processes|inProcess --expires-at <epoch ms>   (the parent's child)
import { spawn, spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadFloor } from './floor.mjs';
import { median } from './measure.mjs';
import { printRows } from './table.mjs';
import { generate, generator, prepareNamespace } from './timewait.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const cli = join(root, 'dist', 'cli.js');

export const SOCKETS = 200_000;
const TIME_WAIT_MS = 60_000;
const PROCESS_RUNS = 11;
const CALL_RUNS = 9;
const PROC_RUNS = 3;
// ss prints about 100 bytes a socket; spawnSync's 1 MiB default would kill it.
const MAX_BUFFER = 256 * 1024 * 1024;
const AWK = "ss -tan | awk '{++s[$1]} END {for (k in s) print k, s[k]}'";

export const GOALS = { floorRatio: 1.2, ssSpeedup: 3, procSpeedup: 3, processRatio: 0.5 };

// ---------------------------------------------------------------- child: runs inside the namespace

/** `ss -Htan state time-wait | wc -l`, the witness outside the code under test. */
function ssTimeWait() {
  const r = spawnSync('sh', ['-c', 'ss -Htan state time-wait | wc -l'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ss -Htan state time-wait failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** Runs a command to completion with every output byte read from its pipes; returns ns and stdout. */
function runDrained(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: MAX_BUFFER });
  const ns = Number(process.hrtime.bigint() - t0);
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { ns, stdout: r.stdout };
}

/** Counts as `ss -tan` prints them: the first column, TIME-WAIT spelled with a dash. */
function countSs(text) {
  const lines = text.split('\n').slice(1).filter(Boolean);
  return { timeWait: lines.filter((l) => l.startsWith('TIME-WAIT ')).length, total: lines.length };
}

/** Counts from the awk summary (`TIME-WAIT 50000`; the header line counts as `State 1`). */
function countAwk(text) {
  const rows = text
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' '));
  const body = rows.filter(([k]) => k !== 'State');
  return { timeWait: Number(body.find(([k]) => k === 'TIME-WAIT')?.[1] ?? 0), total: body.reduce((t, [, n]) => t + Number(n), 0) };
}

/** Counts from `socktune stat`'s default output (`... (netlink): N` and a `TIME_WAIT  n` row). */
function countStat(text) {
  return { timeWait: Number(/^TIME_WAIT\s+(\d+)/m.exec(text)?.[1] ?? 0), total: Number(/\): (\d+)$/m.exec(text)?.[1] ?? NaN) };
}

function summarize(samplesNs) {
  return { ns: median(samplesNs), min: Math.min(...samplesNs), max: Math.max(...samplesNs), runs: samplesNs.length };
}

/**
 * Runs every task once per round, `rounds` times, interleaved (all see the same machine); ns per
 * task. `fewer` caps the runs of slow tasks (they run in the first rounds).
 */
function interleaved(tasks, rounds, fewer = {}) {
  const samples = Object.fromEntries(Object.keys(tasks).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    // On a loaded machine a round can take seconds: stop early (after 3 rounds at least) rather
    // than run past the TIME_WAIT lifetime, and say how many runs each median has.
    const t0 = Date.now();
    for (const [k, run] of Object.entries(tasks)) if (r < (fewer[k] ?? rounds)) samples[k].push(run());
    if (r >= 2 && Date.now() + 2 * (Date.now() - t0) > deadline) break;
  }
  return Object.fromEntries(Object.entries(samples).map(([k, s]) => [k, summarize(s)]));
}

const timeIt = (fn) => () => {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0);
};

async function processesPhase() {
  const commands = {
    stat: [process.execPath, [cli, 'stat']],
    statTop0: [process.execPath, [cli, 'stat', '--top', '0']],
    ssAwk: ['sh', ['-c', AWK]],
    // What any Node CLI pays before its first line runs: the context for the stat rows.
    nodeStartup: [process.execPath, ['-e', '0']],
  };
  // One warm-up run each, which also reads the counts.
  const counts = {
    stat: countStat(runDrained(...commands.stat).stdout.toString('utf8')),
    statTop0: countStat(runDrained(...commands.statTop0).stdout.toString('utf8')),
    ssAwk: countAwk(runDrained(...commands.ssAwk).stdout.toString('utf8')),
  };
  runDrained(...commands.nodeStartup);
  const tasks = Object.fromEntries(Object.entries(commands).map(([k, c]) => [k, () => runDrained(...c).ns]));
  return { counts, processes: interleaved(tasks, PROCESS_RUNS) };
}

async function inProcessPhase() {
  const { connectionStates, connectionReport } = await import('../../dist/index.js');
  // The floor returns counts indexed by kernel state number; the names come from socktune's addon.
  const { constants } = await import('../../dist/binding.js');
  const floor = loadFloor({ quiet: true });
  const tw = constants.tcpStates.indexOf('TIME_WAIT');
  const fromFloor = (c) => ({ timeWait: c[tw], total: c.reduce((a, b) => a + b, 0) });
  const fromStates = (s) => ({ timeWait: s.states.TIME_WAIT, total: s.total, source: s.source });
  // Counts read by each method (also the warm-up call of each).
  const counts = {
    floor: fromFloor(floor.diagCount(-1)),
    floorPerFamily: fromFloor(floor.diagCountPerFamily(-1)),
    netlink: fromStates(connectionStates()),
    report: fromStates(connectionReport()),
    ss: countSs(runDrained('ss', ['-tan']).stdout.toString('latin1')),
    proc: fromStates(connectionStates({ source: 'proc' })),
  };
  const calls = interleaved(
    {
      floor: timeIt(() => floor.diagCount(-1)),
      floorPerFamily: timeIt(() => floor.diagCountPerFamily(-1)),
      connectionStates: timeIt(() => connectionStates()),
      connectionReport: timeIt(() => connectionReport()),
      ss: () => runDrained('ss', ['-tan']).ns,
      proc: timeIt(() => connectionStates({ source: 'proc' })),
    },
    CALL_RUNS,
    // Parsing 200,000 lines of /proc/net/tcp takes seconds: three runs keep the phase inside the
    // 60 s TIME_WAIT lifetime on a loaded machine.
    { proc: PROC_RUNS },
  );
  return { counts, calls };
}

/** When the child must have finished measuring (a margin before the first TIME_WAIT expires). */
let deadline = Infinity;

async function child(phase) {
  const i = process.argv.indexOf('--expires-at');
  const expiresAt = i > 0 ? Number(process.argv[i + 1]) : Date.now() + TIME_WAIT_MS;
  deadline = expiresAt - 2000;
  const started = Date.now();
  const before = ssTimeWait();
  const measured = phase === 'processes' ? await processesPhase() : await inProcessPhase();
  const after = ssTimeWait();
  const finished = Date.now();
  return { phase, timeWait: { before, after }, ...measured, measureMs: finished - started, finishedBeforeExpiry: finished < expiresAt };
}

// ---------------------------------------------------------------- parent: makes and removes the namespaces

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Runs a command to completion (asynchronously, so signal handlers run); `onChild` sees the process. */
function runAsync(cmd, args, { timeoutMs, onChild }) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    onChild(c);
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), Math.max(timeoutMs, 1));
    c.on('error', reject);
    c.on('close', (status, signal) => {
      clearTimeout(timer);
      onChild(undefined);
      if (status === 0) resolve(stdout);
      else reject(new Error(`${cmd} ${args.join(' ')} ${signal ? `killed by ${signal}` : `exited ${status}`}: ${stderr.trim()}`));
    });
  });
}

/** Why this machine cannot run the section, or undefined. */
export function unavailable() {
  if (process.platform !== 'linux') return 'needs Linux (network namespaces, sock_diag)';
  if (process.getuid?.() !== 0) return 'needs root (creates a network namespace)';
  for (const tool of ['ip', 'ss', 'awk', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `needs ${tool} on PATH`;
  }
  return undefined;
}

/**
 * Namespaces of a section: created with lo up, removed at the end, on error and on SIGINT/SIGTERM/
 * SIGHUP (killing the child in flight first). `run(name, fn)` makes one, runs `fn(name, track)`,
 * and removes it.
 */
export function namespaces(prefix) {
  const live = new Set();
  let current;
  const removeAll = () => {
    for (const ns of live) spawnSync('ip', ['netns', 'del', ns]);
    live.clear();
  };
  const onSignal = (signal) => {
    current?.kill('SIGKILL');
    removeAll();
    process.exit(128 + osConstants.signals[signal]);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.once(s, onSignal);
  process.once('exit', removeAll);
  const track = { onChild: (c) => (current = c) };
  return {
    track,
    async run(tag, fn) {
      const ns = `${prefix}-${tag}-${process.pid}`;
      sh('ip', ['netns', 'add', ns]);
      live.add(ns);
      try {
        sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
        return await fn(ns);
      } finally {
        spawnSync('ip', ['netns', 'del', ns]);
        live.delete(ns);
      }
    },
    close() {
      removeAll();
      for (const s of signals) process.off(s, onSignal);
      process.off('exit', removeAll);
    },
  };
}

/**
 * Runs the section and returns its results with ratios, goals and met flags; `{ available: false }`
 * where the machine cannot run it.
 */
export async function diagnostics({ quiet = false } = {}) {
  const why = unavailable();
  if (why) return { available: false, error: why, goals: GOALS };
  // Built here, so no child ever builds inside its timing window.
  loadFloor({ quiet });
  generator();
  const log = (m) => quiet || process.stderr.write(`${m}\n`);
  const spaces = namespaces('st-bench-diag');
  const phase = (name) =>
    spaces.run(name, async (ns) => {
      prepareNamespace(ns, SOCKETS);
      log(`diagnostics (${name}): making ${SOCKETS.toLocaleString('en')} TIME_WAIT sockets in namespace ${ns} ...`);
      const generatedAt = Date.now();
      const generated = await generate(ns, { count: SOCKETS, ...spaces.track });
      log(`diagnostics (${name}): ${generated.closed} closed in ${(generated.ms / 1000).toFixed(1)} s; measuring inside the namespace ...`);
      const expiresAt = generatedAt + TIME_WAIT_MS;
      const measured = JSON.parse(
        await runAsync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--child', name, '--expires-at', String(expiresAt)], {
          timeoutMs: expiresAt - Date.now(),
          ...spaces.track,
        }),
      );
      return { namespace: ns, generated, ...measured };
    });
  try {
    const processes = await phase('processes');
    const inProcess = await phase('inProcess');
    return { available: true, ...judge(processes, inProcess) };
  } catch (err) {
    return { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
  } finally {
    spaces.close();
  }
}

/** Ratios against the goals, and whether every method read the same TIME_WAIT count within the churn. */
function judge(p, c) {
  const agree = (phase) => {
    const readings = Object.values(phase.counts).map((x) => x.timeWait);
    const spread = Math.max(...readings) - Math.min(...readings);
    const churn = Math.abs(phase.timeWait.before - phase.timeWait.after);
    return { spread, churn, met: spread <= churn && phase.finishedBeforeExpiry };
  };
  const { floor, floorPerFamily, connectionStates: cs, connectionReport: report, ss, proc } = c.calls;
  const { stat, statTop0, ssAwk, nodeStartup } = p.processes;
  const ratio = cs.ns / floor.ns;
  const ssSpeedup = ss.ns / cs.ns;
  const procSpeedup = proc.ns / cs.ns;
  const processRatio = stat.ns / ssAwk.ns;
  const phaseInfo = (x) => ({
    namespace: x.namespace,
    generated: x.generated,
    timeWait: x.timeWait,
    counts: x.counts,
    countsAgree: agree(x),
    measureMs: x.measureMs,
    finishedBeforeExpiry: x.finishedBeforeExpiry,
  });
  return {
    method: {
      sockets: `${SOCKETS} TIME_WAIT over 127.0.0.1-4 × 10 server ports in a namespace of the bench's own, a fresh one per phase`,
      calls: `median of up to ${CALL_RUNS} interleaved calls each (the /proc parse: ${PROC_RUNS})`,
      processes: `median of up to ${PROCESS_RUNS} runs each, interleaved, after one warm-up run each`,
      ss: 'spawnSync, stdout and stderr drained through pipes, timed from spawn to exit',
      awk: AWK,
    },
    phases: { processes: phaseInfo(p), inProcess: phaseInfo(c) },
    floor,
    floorPerFamily: { ...floorPerFamily, ratio: floorPerFamily.ns / floor.ns },
    connectionStates: { ...cs, ratio, goal: GOALS.floorRatio, met: ratio <= GOALS.floorRatio },
    connectionReport: { ...report, ratio: report.ns / floor.ns },
    ss: { ...ss, speedup: ssSpeedup, goal: GOALS.ssSpeedup, met: ssSpeedup >= GOALS.ssSpeedup },
    proc: { ...proc, speedup: procSpeedup, goal: GOALS.procSpeedup, met: procSpeedup >= GOALS.procSpeedup },
    processes: {
      ssAwk,
      stat: { ...stat, ratio: processRatio, goal: GOALS.processRatio, met: processRatio <= GOALS.processRatio },
      statTop0: { ...statTop0, ratio: statTop0.ns / ssAwk.ns },
      nodeStartup: { ...nodeStartup, ratio: nodeStartup.ns / ssAwk.ns },
    },
  };
}

/** Rows for bench.mjs's table: [benchmark, result, ratio, goal, met]. */
export function diagRows(d) {
  const ms = (x, unit = 'op') => `${(x / 1e6).toFixed(2)} ms/${unit}`;
  const times = (x) => `${x.toFixed(2)}×`;
  const yes = (m) => (m ? 'yes' : 'no');
  if (!d.available) {
    return [
      ['diag: connectionStates() vs C floor', `not run: ${d.error}`, '', `≤ ${d.goals.floorRatio}×`, 'n/a'],
      ['diag: ss -tan vs connectionStates()', '', '', `≥ ${d.goals.ssSpeedup}×`, 'n/a'],
      ["diag: source 'proc' vs netlink", '', '', `≥ ${d.goals.procSpeedup}×`, 'n/a'],
      ['diag: process socktune stat vs ss|awk', '', '', `≤ ${d.goals.processRatio}×`, 'n/a'],
    ];
  }
  const n = d.phases.inProcess.timeWait.before.toLocaleString('en');
  const np = d.phases.processes.timeWait.before.toLocaleString('en');
  const p = d.processes;
  const agreeRow = (name, phase) => {
    const reads = Object.values(phase.counts).map((c) => c.timeWait);
    return [
      `  TIME_WAIT read by all ${reads.length} methods (${name})`,
      `${Math.min(...reads)}..${Math.max(...reads)}`,
      `spread ${phase.countsAgree.spread}, churn ${phase.countsAgree.churn}`,
      '≤ churn',
      yes(phase.countsAgree.met),
    ];
  };
  return [
    [`floor: sock_diag count, C, one walk (${n} TIME_WAIT)`, ms(d.floor.ns), '', '', ''],
    ['  same, one dump per family (as ss)', ms(d.floorPerFamily.ns), `${times(d.floorPerFamily.ratio)} floor`, '', ''],
    [
      'connectionStates() (netlink)',
      ms(d.connectionStates.ns),
      `${times(d.connectionStates.ratio)} floor`,
      `≤ ${d.connectionStates.goal}×`,
      yes(d.connectionStates.met),
    ],
    ['connectionReport() (counts + top 5, native)', ms(d.connectionReport.ns), `${times(d.connectionReport.ratio)} floor`, '', ''],
    ['ss -tan, spawned, output drained', ms(d.ss.ns), `socktune ${times(d.ss.speedup)} faster`, `≥ ${d.ss.goal}×`, yes(d.ss.met)],
    ["connectionStates({ source: 'proc' })", ms(d.proc.ns), `netlink ${times(d.proc.speedup)} faster`, `≥ ${d.proc.goal}×`, yes(d.proc.met)],
    agreeRow('calls', d.phases.inProcess),
    [`process: sh -c 'ss -tan | awk ...' (${np} TIME_WAIT)`, ms(p.ssAwk.ns, 'run'), '', '', ''],
    ['process: socktune stat (counts + top 5)', ms(p.stat.ns, 'run'), `${times(p.stat.ratio)} ss|awk`, `≤ ${p.stat.goal}×`, yes(p.stat.met)],
    ['  same, --top 0 (counts only)', ms(p.statTop0.ns, 'run'), `${times(p.statTop0.ratio)} ss|awk`, '', ''],
    ['  Node startup alone (node -e 0)', ms(p.nodeStartup.ns, 'run'), `${times(p.nodeStartup.ratio)} ss|awk`, '', ''],
    agreeRow('processes', d.phases.processes),
  ];
}

/** Lines under the table that say how the section was measured and what each method read. */
export function diagNotes(d) {
  if (!d.available) return [`diagnostics: not run (${d.error})`];
  const lines = [];
  for (const [name, x] of Object.entries(d.phases)) {
    const g = x.generated;
    const read = Object.entries(x.counts)
      .map(([k, v]) => `${k} ${v.timeWait}`)
      .join(', ');
    lines.push(
      `diagnostics (${name}): namespace ${x.namespace}, ${g.closed} connections closed client-first over ${g.destinations} destinations (${g.addresses.length} addresses × ${g.ports} ports, ${g.threads} threads) in ${(g.ms / 1000).toFixed(1)} s` +
        `${g.failed ? ` (${g.failed} failed: ${g.error})` : ''}; ss -Htan state time-wait: ${x.timeWait.before} before, ${x.timeWait.after} after measuring`,
      `  measured in ${(x.measureMs / 1000).toFixed(1)} s, inside the 60 s TIME_WAIT lifetime: ${x.finishedBeforeExpiry ? 'yes' : 'no'}; ${name === 'processes' ? d.method.processes : d.method.calls}` +
        `; runs made: ${name === 'processes' ? `${d.processes.stat.runs} each` : `${d.connectionStates.runs} each, /proc ${d.proc.runs}`}`,
      `  TIME_WAIT read by each: ${read}`,
    );
  }
  return lines;
}

const main = process.argv[1] === fileURLToPath(import.meta.url);
const childAt = process.argv.indexOf('--child');
if (main && childAt > 0) {
  process.stdout.write(`${JSON.stringify(await child(process.argv[childAt + 1]))}\n`);
} else if (main) {
  // Standalone: this section alone, as a table (or --json).
  const json = process.argv.includes('--json');
  const d = await diagnostics({ quiet: json });
  if (json) console.log(JSON.stringify(d, null, 2));
  else printRows(diagRows(d), diagNotes(d));
}
