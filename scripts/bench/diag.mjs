// The diagnostics section of `npm run bench`: counting ~50,000 TIME_WAIT sockets by state.
//
// The parent side (`diagnostics()`, called by scripts/bench.mjs) makes a network namespace of its own,
// fills it with TIME_WAIT sockets (scripts/bench/timewait.mjs), runs this file inside it with --child,
// and deletes the namespace at the end, on error and on SIGINT/SIGTERM too (deleting the namespace
// purges its TIME_WAIT). The child times, as the median of interleaved batches:
//   the C floor (scripts/bench/floor diagCount: a plain netlink sock_diag dump, IPv4 + IPv6),
//   connectionStates() (netlink, in-process), `ss -tan` spawned with its output drained from a pipe,
//   connectionStates({ source: 'proc' }), and whole processes: `socktune stat` against ss | awk.
// It prints one JSON object. TIME_WAIT lasts 60 s, so generation and measurement are bounded well
// inside that, and the child checks the count with `ss -Htan state time-wait` before and after.
//
// Usage (child, normally run by the parent): ip netns exec NS node scripts/bench/diag.mjs --child --expires-at <epoch ms>
import { spawn, spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadFloor } from './floor.mjs';
import { BATCHES, MIN_BATCH_MS, measure, median, timed } from './measure.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const cli = join(root, 'dist', 'cli.js');

const SOCKETS = 50_000;
// Generation takes ~5 s here; the bound only stops a pathological run from eating the 60 s lifetime.
const GENERATE_DEADLINE_MS = 20_000;
const TIME_WAIT_MS = 60_000;
const PROCESS_RUNS = 11;
// ss prints about 100 bytes a socket; spawnSync's 1 MiB default would kill it.
const MAX_BUFFER = 256 * 1024 * 1024;
const AWK = "ss -tan | awk '{++s[$1]} END {for (k in s) print k, s[k]}'";

export const GOALS = { floorRatio: 1.2, ssSpeedup: 3, procSpeedup: 3, processRatio: 1.0 };

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
  const rows = text.split('\n').filter(Boolean).map((l) => l.split(' '));
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

async function child() {
  const i = process.argv.indexOf('--expires-at');
  const expiresAt = i > 0 ? Number(process.argv[i + 1]) : Date.now() + TIME_WAIT_MS;
  const { connectionStates } = await import('../../dist/index.js');
  // The floor returns counts indexed by kernel state number; the names come from socktune's addon.
  const { constants } = await import('../../dist/binding.js');
  const floor = loadFloor({ quiet: true });

  const started = Date.now();
  const before = ssTimeWait();

  // Counts read by each method (also the warm-up call of each).
  const floorCounts = floor.diagCount(-1);
  const fromStates = (s) => ({ timeWait: s.states.TIME_WAIT, total: s.total, source: s.source });
  const counts = {
    floor: { timeWait: floorCounts[constants.tcpStates.indexOf('TIME_WAIT')], total: floorCounts.reduce((a, b) => a + b, 0) },
    netlink: fromStates(connectionStates()),
    ss: countSs(runDrained('ss', ['-tan']).stdout.toString('latin1')),
    proc: fromStates(connectionStates({ source: 'proc' })),
  };

  // Each call takes milliseconds: calibration starts at one call per batch.
  const inProcess = measure(
    {
      floor: (n) => timed(n, () => floor.diagCount(-1)),
      connectionStates: (n) => timed(n, () => connectionStates()),
      ss: (n) => timed(n, () => runDrained('ss', ['-tan'])),
      proc: (n) => timed(n, () => connectionStates({ source: 'proc' })),
    },
    { start: 1 },
  );

  // Whole processes, interleaved run by run after one warm-up each (which also reads the counts).
  const commands = {
    stat: [process.execPath, [cli, 'stat']],
    statTop0: [process.execPath, [cli, 'stat', '--top', '0']],
    ssAwk: ['sh', ['-c', AWK]],
    // What any Node CLI pays before its first line runs: the context for the stat rows.
    nodeStartup: [process.execPath, ['-e', '0']],
  };
  counts.stat = countStat(runDrained(...commands.stat).stdout.toString('utf8'));
  counts.statTop0 = countStat(runDrained(...commands.statTop0).stdout.toString('utf8'));
  counts.ssAwk = countAwk(runDrained(...commands.ssAwk).stdout.toString('utf8'));
  runDrained(...commands.nodeStartup);
  const samples = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let r = 0; r < PROCESS_RUNS; r++) for (const [k, c] of Object.entries(commands)) samples[k].push(runDrained(...c).ns);
  const processes = Object.fromEntries(Object.entries(samples).map(([k, s]) => [k, summarize(s)]));

  const after = ssTimeWait();
  const finished = Date.now();
  return {
    timeWait: { before, after },
    counts,
    inProcess,
    processes,
    measureMs: finished - started,
    finishedBeforeExpiry: finished < expiresAt,
  };
}

// ---------------------------------------------------------------- parent: makes and removes the namespace

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
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
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
function unavailable() {
  if (process.platform !== 'linux') return 'needs Linux (network namespaces, sock_diag)';
  if (process.getuid?.() !== 0) return 'needs root (creates a network namespace)';
  for (const tool of ['ip', 'ss', 'awk']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `needs ${tool} on PATH`;
  }
  return undefined;
}

/**
 * Runs the section and returns its results with ratios, goals and met flags; `{ available: false }`
 * where the machine cannot run it.
 */
export async function diagnostics({ quiet = false } = {}) {
  const why = unavailable();
  if (why) return { available: false, error: why, goals: GOALS };
  loadFloor({ quiet }); // build it here, so the child never builds inside its timing window

  const ns = `st-bench-diag-${process.pid}`;
  let created = false;
  let current;
  const remove = () => {
    if (!created) return;
    created = false;
    spawnSync('ip', ['netns', 'del', ns]);
  };
  const onSignal = (signal) => {
    current?.kill('SIGKILL');
    remove();
    process.exit(128 + osConstants.signals[signal]);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.once(s, onSignal);
  process.once('exit', remove);
  const track = { onChild: (c) => (current = c) };
  const log = (m) => quiet || process.stderr.write(`${m}\n`);
  try {
    sh('ip', ['netns', 'add', ns]);
    created = true;
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // A wide range gives each of the generator's destinations room; tcp_tw_reuse=0 so that a connect
    // never recycles a TIME_WAIT pair and shrinks the count being measured.
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=0']);

    log(`diagnostics: making ${SOCKETS.toLocaleString('en')} TIME_WAIT sockets in namespace ${ns} ...`);
    const generatedAt = Date.now();
    const gen = JSON.parse(
      await runAsync(
        'ip',
        ['netns', 'exec', ns, process.execPath, join(here, 'timewait.mjs'), '--count', String(SOCKETS), '--deadline-ms', String(GENERATE_DEADLINE_MS)],
        { timeoutMs: GENERATE_DEADLINE_MS + 10_000, ...track },
      ),
    );
    log(`diagnostics: ${gen.closed} closed in ${(gen.ms / 1000).toFixed(1)} s; measuring inside the namespace ...`);
    const expiresAt = generatedAt + TIME_WAIT_MS;
    const measured = JSON.parse(
      await runAsync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--child', '--expires-at', String(expiresAt)], {
        timeoutMs: expiresAt - Date.now(),
        ...track,
      }),
    );
    return { available: true, namespace: ns, generated: gen, ...judge(measured) };
  } catch (err) {
    return { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
  } finally {
    remove();
    for (const s of signals) process.off(s, onSignal);
    process.off('exit', remove);
  }
}

/** Ratios against the goals, and whether every method read the same TIME_WAIT count within the churn. */
function judge(m) {
  const { floor, connectionStates: cs, ss, proc } = m.inProcess;
  const { stat, statTop0, ssAwk, nodeStartup } = m.processes;
  const readings = Object.values(m.counts).map((c) => c.timeWait);
  const spread = Math.max(...readings) - Math.min(...readings);
  const churn = Math.abs(m.timeWait.before - m.timeWait.after);
  const ratio = cs.ns / floor.ns;
  const ssSpeedup = ss.ns / cs.ns;
  const procSpeedup = proc.ns / cs.ns;
  const processRatio = stat.ns / ssAwk.ns;
  return {
    method: {
      sockets: `${SOCKETS} TIME_WAIT on 127.0.0.1 in a namespace of the bench's own`,
      inProcess: `median of ${BATCHES} interleaved batches`,
      minBatchMs: MIN_BATCH_MS,
      processes: `median of ${PROCESS_RUNS} runs each, interleaved, after one warm-up run each`,
      ss: 'spawnSync, stdout and stderr drained through pipes, timed from spawn to exit',
      awk: AWK,
      batchesAtLeastMinMs: Object.values(m.inProcess).every((r) => r.batchMs >= MIN_BATCH_MS),
    },
    timeWait: m.timeWait,
    counts: m.counts,
    countsAgree: { spread, churn, met: spread <= churn },
    measureMs: m.measureMs,
    finishedBeforeExpiry: m.finishedBeforeExpiry,
    floor,
    connectionStates: { ...cs, ratio, goal: GOALS.floorRatio, met: ratio <= GOALS.floorRatio },
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
  const n = d.timeWait.before.toLocaleString('en');
  const p = d.processes;
  return [
    [`floor: sock_diag count, C (${n} TIME_WAIT)`, ms(d.floor.ns), '', '', ''],
    ['connectionStates() (netlink)', ms(d.connectionStates.ns), `${times(d.connectionStates.ratio)} floor`, `≤ ${d.connectionStates.goal}×`, yes(d.connectionStates.met)],
    ['ss -tan, spawned, output drained', ms(d.ss.ns), `socktune ${times(d.ss.speedup)} faster`, `≥ ${d.ss.goal}×`, yes(d.ss.met)],
    ["connectionStates({ source: 'proc' })", ms(d.proc.ns), `netlink ${times(d.proc.speedup)} faster`, `≥ ${d.proc.goal}×`, yes(d.proc.met)],
    ["process: sh -c 'ss -tan | awk ...'", ms(p.ssAwk.ns, 'run'), '', '', ''],
    ['process: node dist/cli.js stat', ms(p.stat.ns, 'run'), `${times(p.stat.ratio)} ss|awk`, `≤ ${p.stat.goal}×`, yes(p.stat.met)],
    ['  same, --top 0 (no peer/port ranking)', ms(p.statTop0.ns, 'run'), `${times(p.statTop0.ratio)} ss|awk`, '', ''],
    ['  Node startup alone (node -e 0)', ms(p.nodeStartup.ns, 'run'), `${times(p.nodeStartup.ratio)} ss|awk`, '', ''],
    [
      `TIME_WAIT counts of all ${Object.keys(d.counts).length} readings agree`,
      `${Math.min(...Object.values(d.counts).map((c) => c.timeWait))}..${Math.max(...Object.values(d.counts).map((c) => c.timeWait))}`,
      `spread ${d.countsAgree.spread}, churn ${d.countsAgree.churn}`,
      '≤ churn',
      yes(d.countsAgree.met),
    ],
  ];
}

/** Lines under the table that say how the section was measured and what each method read. */
export function diagNotes(d) {
  if (!d.available) return [`diagnostics: not run (${d.error})`];
  const c = d.counts;
  const read = Object.entries(c).map(([k, v]) => `${k} ${v.timeWait}`).join(', ');
  return [
    `diagnostics: namespace ${d.namespace}, ${d.generated.closed} connections closed client-first over ${d.generated.ports.length} server ports in ${(d.generated.ms / 1000).toFixed(1)} s` +
      `${d.generated.failed ? ` (${d.generated.failed} failed)` : ''}; ss -Htan state time-wait: ${d.timeWait.before} before, ${d.timeWait.after} after measuring`,
    `  measured in ${(d.measureMs / 1000).toFixed(1)} s, inside the 60 s TIME_WAIT lifetime: ${d.finishedBeforeExpiry ? 'yes' : 'no'}; ${d.method.inProcess} (each ≥ ${d.method.minBatchMs} ms: ${d.method.batchesAtLeastMinMs ? 'yes' : 'no'}); processes: ${d.method.processes}`,
    `  TIME_WAIT read by each: ${read}`,
  ];
}

if (process.argv.includes('--child')) {
  process.stdout.write(`${JSON.stringify(await child())}\n`);
}
