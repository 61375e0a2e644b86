/**
 * `socktune demo`: reproduces three TCP lifecycle failures of Node services, each without and with
 * socktune, in network namespaces it creates and removes, and prints one table of what it measured.
 * @module
 */
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { table } from '../format.js';
import { Lab, namespacesUnavailable } from './lab.js';
import {
  deadPeer,
  hangUps,
  portExhaustion,
  type DeadPeerArm,
  type DeadPeerReport,
  type HangUpsArm,
  type HangUpsReport,
  type NotRun,
  type PortExhaustionReport,
} from './scenarios.js';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** How long to wait for a vanished peer to be noticed, in milliseconds (default 30000). */
  capMs?: number;
}

/** Everything `socktune demo` measured; `socktune demo --json` prints it. */
export interface DemoReport {
  socktune: string;
  node: string;
  kernel: string;
  /** `'namespaces'` (root: every scenario in namespaces of its own) or `'loopback'`. */
  mode: 'namespaces' | 'loopback';
  /** Why the demo could not use namespaces (loopback mode). */
  why?: string;
  /** The namespaces it created; all are deleted before it returns. */
  namespaces: string[];
  /** Milliseconds the demo took. */
  elapsedMs: number;
  /** False when a scenario that could run failed with an error. */
  ok: boolean;
  portExhaustion: PortExhaustionReport | NotRun;
  deadPeer: DeadPeerReport | NotRun;
  hangUps: HangUpsReport | NotRun;
}

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * Runs the demo. As root, each scenario runs in network namespaces named `st-demo-<pid>-*` (veth
 * between them, 10.213.200–202.x); otherwise only what loopback allows runs, and the report says
 * which scenarios could not and why. Namespaces and child processes are removed at the end, on
 * error, and on SIGINT/SIGTERM/SIGHUP. Takes about 30 s (the dead-peer wait runs alongside the rest).
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const log = options.log ?? (() => {});
  const started = performance.now();
  const why = namespacesUnavailable();
  const namespaces = why === undefined;
  const lab = new Lab(`st-demo-${process.pid}`).protect();
  try {
    if (!namespaces) log(`demo: ${why}; running on loopback only`);
    // The dead-peer wait is mostly sleeping: it runs while the other scenarios do their work.
    log('demo: vanished peer: connecting, then the peer vanishes (nftables drop) ...');
    const dead = namespaces
      ? deadPeer(lab, { capMs: options.capMs })
      : Promise.resolve<NotRun>({ ran: false, why: `${why}; a silent vanish needs nftables inside a namespace` });
    log('demo: port exhaustion: plain close, then rstOnClose ...');
    const ports = await portExhaustion(lab, { namespaces, why });
    log('demo: idle-timeout race: Node agent and socktune agent ...');
    const races = await hangUps(lab, { namespaces });
    log('demo: waiting for the vanished-peer cap ...');
    const peer = await dead;
    const ok = [ports, peer, races].every((r) => r.ran || r.error === undefined);
    return {
      socktune: version,
      node: process.version,
      kernel: `${os.type()} ${os.release()}`,
      mode: namespaces ? 'namespaces' : 'loopback',
      ...(why ? { why } : {}),
      namespaces: [...lab.created],
      elapsedMs: Math.round(performance.now() - started),
      ok,
      portExhaustion: ports,
      deadPeer: peer,
      hangUps: races,
    };
  } finally {
    lab.cleanup();
  }
}

function notRunRow(scenario: string, r: NotRun): string[] {
  return [scenario, '', '', r.error ? `failed: ${r.error}` : `not run: ${r.why}`];
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function deadPeerResult(arm: DeadPeerArm, capMs: number): string {
  if (arm.noticedMs === null) {
    const states = Object.entries(arm.statesAtCap)
      .map(([s, n]) => (arm.connections > 1 ? `${n} ${s}` : s))
      .join(', ');
    return `not within ${seconds(capMs).replace('.0 s', ' s')} (still ${states || 'open'})`;
  }
  const t = arm.noticedMs;
  const time = t.min === t.max ? seconds(t.median) : `${seconds(t.min)} / ${seconds(t.median)} / ${seconds(t.max)} (min/median/max)`;
  const errs = Object.keys(arm.errors).join(', ');
  const missed = arm.noticed < arm.connections ? `, ${arm.connections - arm.noticed} not within the cap` : '';
  return `${time}${errs ? ` (${errs})` : ''}${missed}`;
}

function hangUpResult(arm: HangUpsArm): string {
  if (!arm.available) return arm.why ?? 'not available';
  const detail = Object.entries(arm.errors)
    .map(([m, n]) => `${n} ${m}`)
    .join(', ');
  const stale = arm.staleDropped ? `, ${arm.staleDropped} stale pooled sockets dropped` : '';
  return `${arm.failed} of ${arm.trials} failed${detail ? ` (${detail})` : ''}; pooled socket reused ${arm.reused}×${stale}`;
}

/** The demo's table and notes, as `socktune demo` prints them. */
export function renderDemo(r: DemoReport): string {
  const rows: string[][] = [];
  const pe = r.portExhaustion;
  if (pe.ran) {
    const { plainClose: plain, rstOnClose: rst } = pe.arms;
    const scenario = `${pe.connects} short connections, ${pe.serverPorts} server ports`;
    rows.push([scenario, plain.label, 'no', `${plain.timeWait} TIME_WAIT left`]);
    rows.push(['', rst.label, 'yes', `${rst.timeWait} TIME_WAIT left`]);
    if (pe.eaddrnotavailMeasured) {
      rows.push(['  connects failing with EADDRNOTAVAIL', plain.label, 'no', `${plain.eaddrnotavail} of ${plain.attempted}`]);
      rows.push(['', rst.label, 'yes', `${rst.eaddrnotavail} of ${rst.attempted}`]);
    } else {
      rows.push(['  connects failing with EADDRNOTAVAIL', '', '', `not run: ${pe.eaddrnotavailWhy}`]);
    }
  } else rows.push(notRunRow('short connections: TIME_WAIT and EADDRNOTAVAIL', pe));

  const dp = r.deadPeer;
  if (dp.ran) {
    const { nodeDefault, setKeepAlive, gracefulHeartbeat } = dp.arms;
    rows.push(['peer vanishes: noticed after', nodeDefault.label, 'no', deadPeerResult(nodeDefault, dp.capMs)]);
    rows.push(['', setKeepAlive.label, 'no', deadPeerResult(setKeepAlive, dp.capMs)]);
    rows.push(['', `presets.gracefulHeartbeat: ${gracefulHeartbeat.timings}`, 'yes', deadPeerResult(gracefulHeartbeat, dp.capMs)]);
  } else rows.push(notRunRow('peer vanishes: noticed after', dp));

  const hu = r.hangUps;
  if (hu.ran) {
    const scenario = `request at server idle timeout ${seconds(hu.idleTimeoutMs).replace('.0 s', ' s')} ± ${hu.jitterMs} ms`;
    rows.push([scenario, hu.arms.nodeAgent.label, 'no', hangUpResult(hu.arms.nodeAgent)]);
    rows.push(['', hu.arms.socktuneAgent.label, 'yes', hangUpResult(hu.arms.socktuneAgent)]);
  } else rows.push(notRunRow('request at the server idle timeout', hu));

  const notes: string[] = [];
  if (r.mode === 'loopback') notes.push(`Loopback only: ${r.why}.`);
  if (pe.ran) {
    const s = pe.arms.plainClose.sysctl;
    notes.push(
      `Short connections: ${pe.where}; connect, request, response, client closes; ${pe.concurrency} in flight` +
        (pe.eaddrnotavailMeasured ? `; client ip_local_port_range ${s['net.ipv4.ip_local_port_range']}, tcp_tw_reuse ${s['net.ipv4.tcp_tw_reuse']}.` : '.'),
    );
  }
  if (dp.ran) {
    const hb = dp.arms.gracefulHeartbeat;
    notes.push(
      `Vanished peer: ${dp.where}; ${dp.connectionsPerArm} idle connection${dp.connectionsPerArm > 1 ? 's' : ''} per client; the peer vanished ${dp.lastPacketBeforeVanishMs} ms after its last packet; times from the vanishing.`,
      `  Kernel budgets (last packet → ETIMEDOUT): gracefulHeartbeat ${seconds(hb.budgetMs!)} (${hb.timings}); setKeepAlive ${seconds(dp.arms.setKeepAlive.budgetMs!)} (${dp.arms.setKeepAlive.timings}); keepalive timers are jiffy-based, ±0.5 s.`,
      `  Production defaults of presets.gracefulHeartbeat(): keepalive ${dp.production.keepAlive.idle / 1000} s/${dp.production.keepAlive.interval / 1000} s/${dp.production.keepAlive.count}, userTimeout ${dp.production.userTimeout / 1000} s → a vanished peer is noticed ${dp.production.budgetMs / 1000} s after its last packet (not measured here).`,
    );
  }
  if (hu.ran) {
    notes.push(
      `Idle-timeout race: ${hu.where}; the server closes keep-alive connections idle ${hu.idleTimeoutMs} ms and sends no Keep-Alive hint; ` +
        `${hu.trials} trials per client: one request, then the next at ${hu.idleTimeoutMs - hu.jitterMs}…${hu.idleTimeoutMs + hu.jitterMs} ms on the same agent. ` +
        `The socktune agent evicts idle pooled sockets after poolIdleTimeout ${hu.poolIdleTimeoutMs} ms when the server gives no hint.`,
    );
  }
  notes.push(
    `Every number above was measured in this run (${seconds(r.elapsedMs)}); namespaces created and removed: ${r.namespaces.length ? r.namespaces.join(', ') : 'none'}.`,
  );
  const head = `socktune ${r.socktune} demo: Node ${r.node}, ${r.kernel}, ${r.mode === 'namespaces' ? 'network namespaces' : 'loopback only'}`;
  return [head, '', table(['failure', 'client', 'socktune', 'measured'], rows), '', ...notes].join('\n');
}
