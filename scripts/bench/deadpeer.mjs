// Dead-peer detection: idle connections from a client namespace to a peer namespace across a veth;
// the peer then vanishes (nftables drops inside its namespace, right after its last packet) and each
// connection's time to 'close' is measured, for Node's default (no keepalive; the wait is capped),
// socket.setKeepAlive(true, 2000) (Node adds 1 s probes, 10 of them) and presets.gracefulHeartbeat
// with demo-scale keepalive 2000/1000/3 ms (userTimeout 5 s). Min/median/max seconds per arm, from
// the last packet received (what the kernel's budget counts from) and from the vanishing. Shares the
// scenario with `socktune demo` (dist/demo/scenarios.js); namespaces st-demo-<pid>-bdc/-bdp,
// 10.213.212.0/24.
//
// Usage: node scripts/bench/deadpeer.mjs [--json] [--per 20]    (exports deadPeerBench() for scripts/bench.mjs)
import { fileURLToPath } from 'node:url';
import { Lab, namespacesUnavailable } from '../../dist/demo/lab.js';
import { deadPeer } from '../../dist/demo/scenarios.js';
import { intFlag, printRows } from './table.mjs';

/** Jiffy-based keepalive timers: a second of slack over the kernel's budget, as in the tests. */
export const GOALS = { heartbeatSlackMs: 1000 };
const CAP_MS = 30_000;
const SUBNET = 212;

/**
 * Runs the benchmark. Returns `{ rows, json }`: rows for bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and the full JSON.
 */
export async function deadPeerBench({ quiet = false, per = 20, capMs = CAP_MS } = {}) {
  const why = namespacesUnavailable();
  if (why) {
    const json = { available: false, error: why, goals: GOALS };
    return { rows: deadPeerRows(json), json };
  }
  if (!quiet) process.stderr.write(`deadpeer: ${per} connections per arm; the peer vanishes, then up to ${capMs / 1000} s of waiting ...\n`);
  const lab = new Lab(`st-demo-${process.pid}`).protect();
  let r;
  try {
    r = await deadPeer(lab, { per, capMs, subnet: SUBNET, names: ['bdc', 'bdp'] });
  } finally {
    lab.cleanup();
  }
  const json = r.ran
    ? {
        available: true,
        method: {
          where: r.where,
          connectionsPerArm: per,
          capMs,
          lastPacketBeforeVanishMs: r.lastPacketBeforeVanishMs,
          statistic: 'min / median / max over the connections of each arm',
        },
        arms: r.arms,
        production: r.production,
        heartbeatWithinBudget: {
          maxSinceLastPacketMs: r.arms.gracefulHeartbeat.sinceLastPacketMs?.max ?? null,
          budgetMs: r.arms.gracefulHeartbeat.budgetMs,
          slackMs: GOALS.heartbeatSlackMs,
          met:
            r.arms.gracefulHeartbeat.noticed === per &&
            r.arms.gracefulHeartbeat.sinceLastPacketMs.max <= r.arms.gracefulHeartbeat.budgetMs + GOALS.heartbeatSlackMs,
        },
      }
    : { available: false, error: r.error ?? r.why, goals: GOALS };
  return { rows: deadPeerRows(json), json };
}

const sec = (ms) => `${(ms / 1000).toFixed(2)} s`;
const range = (s) => (s ? `${sec(s.min)} / ${sec(s.median)} / ${sec(s.max)}` : '');

/** Rows for the bench table: [benchmark, result, ratio, goal, met]. */
export function deadPeerRows(d) {
  if (!d.available) return [['dead peer: gracefulHeartbeat 2/1/3 s', `not run: ${d.error}`, '', 'budget + 1 s', 'n/a']];
  const { nodeDefault: nd, setKeepAlive: ska, gracefulHeartbeat: hb } = d.arms;
  const noticed = (a) => (a.noticed === a.connections ? '' : `, ${a.connections - a.noticed} of ${a.connections} not within ${d.method.capMs / 1000} s`);
  const states = Object.entries(nd.statesAtCap)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
  const speedup = ska.sinceLastPacketMs && hb.sinceLastPacketMs ? ska.sinceLastPacketMs.median / hb.sinceLastPacketMs.median : null;
  return [
    [`dead peer: ${nd.label}`, nd.noticed ? range(nd.sinceLastPacketMs) : `not within ${d.method.capMs / 1000} s`, nd.noticed ? '' : `still ${states}`, '', ''],
    [`dead peer: ${ska.label}`, range(ska.sinceLastPacketMs), `budget ${sec(ska.budgetMs)}${noticed(ska)}`, '', ''],
    [
      'dead peer: gracefulHeartbeat keepalive 2/1/3 s',
      range(hb.sinceLastPacketMs),
      `budget ${sec(hb.budgetMs)}${speedup ? `; ${speedup.toFixed(1)}× sooner than setKeepAlive` : ''}${noticed(hb)}`,
      `≤ budget + ${GOALS.heartbeatSlackMs / 1000} s`,
      d.heartbeatWithinBudget.met ? 'yes' : 'no',
    ],
  ];
}

/** Lines under the table. */
export function deadPeerNotes(d) {
  if (!d.available) return [`dead peer: not run (${d.error})`];
  const m = d.method;
  const lines = [
    `dead peer: ${m.where}; ${m.connectionsPerArm} idle connections per arm; seconds from the last packet received to 'close' (min / median / max); the peer vanished ${m.lastPacketBeforeVanishMs} ms after the last packet of the last connection.`,
    '  from the vanishing:',
  ];
  for (const a of Object.values(d.arms))
    lines.push(`    ${a.label.padEnd(48)} ${a.noticedMs ? range(a.noticedMs) : 'not noticed'}  [${a.timings}; errors ${JSON.stringify(a.errors)}]`);
  const p = d.production;
  lines.push(
    `  production defaults of presets.gracefulHeartbeat(): keepalive ${p.keepAlive.idle / 1000}/${p.keepAlive.interval / 1000}/${p.keepAlive.count} s, userTimeout ${p.userTimeout / 1000} s → ${p.budgetMs / 1000} s budget (not measured here).`,
  );
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const asJson = process.argv.includes('--json');
  const { rows, json } = await deadPeerBench({ quiet: asJson, per: intFlag('per', 20) });
  if (asJson) console.log(JSON.stringify(json, null, 2));
  else printRows(rows, deadPeerNotes(json), ['benchmark', 'result (min / median / max)', 'ratio', 'goal', 'met']);
}
