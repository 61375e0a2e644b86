/**
 * The connection half of `socktune doctor`: what the sockets of this network namespace say, next
 * to what its sysctls say. CLOSE_WAIT sockets are an application leak with the processes that hold
 * them; TIME_WAIT sockets to one destination use up the local ports a new connection to it needs.
 * Read from one connectionReport() (netlink sock_diag, /proc as the fallback); nothing spawned.
 * @module
 */
import type { Severity, Unreadable } from './audit.js';
import { parseAddress } from './address.js';
import { readSysctl } from './proc.js';
import { connectionReport, type ConnectionReport } from './states.js';
import type { SocketOwner } from './top.js';

/**
 * Where the connection findings change severity. CLOSE_WAIT counts sockets in the namespace:
 * CLOSE_WAIT lasts from the peer's FIN to the application's close, normally well under a
 * millisecond, and no kernel timer ends it, so a few may be caught in passing and a hundred at once
 * are a leak. TIME_WAIT is the share of `net.ipv4.ip_local_port_range` one destination's TIME_WAIT
 * sockets hold: from half of it, connect() to that destination searches port by port (it tries
 * ports of one parity first) and slows, and at all of it fails with EADDRNOTAVAIL.
 */
export const connectionThresholds = Object.freeze({
  /** CLOSE_WAIT sockets: `info` from 1, `warn` from 10, `critical` from 100. */
  closeWait: Object.freeze({ info: 1, warn: 10, critical: 100 }),
  /** Share of the local port range in TIME_WAIT to one destination: `warn` from 0.25, `critical` from 0.5. */
  timeWaitPortShare: Object.freeze({ warn: 0.25, critical: 0.5 }),
});

/** One connection finding of {@link connectionAudit}. */
export interface ConnectionFinding {
  /** What was checked: `'CLOSE_WAIT'` (all of the namespace), or `'TIME_WAIT'` (per destination). */
  check: 'CLOSE_WAIT' | 'TIME_WAIT';
  severity: Severity;
  /** TIME_WAIT: the destination (`address:port`) of connections opened here. */
  destination?: string;
  /** CLOSE_WAIT sockets of the namespace, or TIME_WAIT sockets to `destination`. */
  count: number;
  /** TIME_WAIT: `count` over the number of ports in `net.ipv4.ip_local_port_range`. */
  portShare?: number;
  /** CLOSE_WAIT: the processes holding them (pid, command, sockets), most first. */
  holders?: SocketOwner[];
  /** CLOSE_WAIT: sockets whose holder could not be looked up (another user's process, without root). */
  unreadable?: number;
  /** The values the verdict rests on. */
  evidence: Record<string, unknown>;
  /** What it means for connections here. */
  meaning: string;
  /** What to do about it. */
  fix?: string;
}

/** What {@link connectionAudit} returns. */
export interface ConnectionAudit {
  /** CLOSE_WAIT first, then TIME_WAIT per destination, most sockets first (one `ok` finding when none is above a threshold). */
  findings: ConnectionFinding[];
  /** How many findings of each severity. */
  summary: Record<Severity, number>;
  /** The most severe finding. */
  worst: Severity;
  /** The thresholds the severities follow. */
  thresholds: typeof connectionThresholds;
  /** Where the sockets were read. */
  source: 'netlink' | 'proc';
  /** What could not be read (the port range, the reuse sysctls); the rest was audited. */
  unreadable: Unreadable[];
}

const severities: Severity[] = ['ok', 'info', 'warn', 'critical'];
/** TIME_WAIT lasts TCP_TIMEWAIT_LEN, 60 s, in every kernel. */
const TIME_WAIT_SECONDS = 60;
/** Destinations looked at: enough to find each one above the warn share (at most 4 can be). */
const DESTINATIONS = 8;
const percent = (share: number) => `${(Math.round(share * 1000) / 10).toFixed(1)}%`;

function isLoopback(address: string): boolean {
  const a = parseAddress(address.replace(/^\[|\]$/g, ''));
  if (a === undefined) return false;
  if (a.family === 4) return a.bytes[0] === 127;
  const mappedV4 = a.bytes.subarray(0, 10).every((b) => b === 0) && a.bytes[10] === 0xff && a.bytes[11] === 0xff;
  if (mappedV4) return a.bytes[12] === 127;
  return a.bytes.subarray(0, 15).every((b) => b === 0) && a.bytes[15] === 1;
}

/** The address part of `address:port` or `[v6]:port`. */
const addressOf = (destination: string) => destination.slice(0, destination.lastIndexOf(':'));

function closeWait(report: ConnectionReport): ConnectionFinding {
  const t = connectionThresholds.closeWait;
  const count = report.states.CLOSE_WAIT;
  const top = report.top.CLOSE_WAIT;
  const holders = top?.holders ?? [];
  const unreadable = top?.unreadable;
  const sides = top?.sides ?? { accepted: 0, opened: 0 };
  const evidence = { closeWait: count, sides, thresholds: t };
  const severity: Severity = count === 0 ? 'ok' : count >= t.critical ? 'critical' : count >= t.warn ? 'warn' : 'info';
  const base = { check: 'CLOSE_WAIT' as const, severity, count, holders, ...(unreadable ? { unreadable } : {}) };
  if (count === 0) return { ...base, evidence, meaning: 'No connection in CLOSE_WAIT.' };
  const who =
    [holders.map((h) => `${h.pid} ${h.command}: ${h.sockets}`).join(', '), unreadable ? `${unreadable} unreadable (run as root to see owners)` : '']
      .filter(Boolean)
      .join('; ') || 'no process (their owners ended, or passed them on)';
  const side = [
    sides.accepted ? `${sides.accepted} accepted by a listener here (a server that never ends half-closed connections)` : '',
    sides.opened ? `${sides.opened} opened here (a client or pool that keeps connections the server closed)` : '',
  ]
    .filter(Boolean)
    .join(', ');
  const meaning =
    `${count} connection${count === 1 ? '' : 's'} in CLOSE_WAIT (held by ${who}): the peer closed its side and the application never closed its own. ` +
    'No kernel timer ends CLOSE_WAIT: each keeps a file descriptor and its buffers until the process closes it or exits' +
    `${side ? `. ${side[0].toUpperCase()}${side.slice(1)}` : ''}.` +
    (severity === 'info' ? ' A few can be caught between the FIN and the close; a count that grows (socktune watch) is a leak.' : '');
  const fix =
    "An application leak, not a sysctl: close the connection on 'end' (or leave allowHalfOpen off). " +
    'The connection guard closes what the application leaves half-closed after halfCloseTimeout (tuneServer(server, presets.gracefulHeartbeat({ halfCloseTimeout })), or createAgent for a pool); ' +
    'for every connection of a process without changing its code: SOCKTUNE_POLICY=gracefulHeartbeat node --import socktune/register app.js. ' +
    'socktune stat --state close-wait shows the ports and peers.';
  return { ...base, evidence, meaning, fix };
}

interface Reuse {
  ports: { low: number; high: number; size: number } | undefined;
  twReuse: number | undefined;
  timestamps: number | undefined;
}

function timeWait(report: ConnectionReport, r: Reuse): ConnectionFinding[] {
  const t = connectionThresholds.timeWaitPortShare;
  const destinations = report.top.TIME_WAIT?.destinations ?? [];
  if (destinations.length === 0) {
    return [
      {
        check: 'TIME_WAIT',
        severity: 'ok',
        count: 0,
        evidence: { timeWait: report.states.TIME_WAIT, thresholds: t },
        meaning: 'No TIME_WAIT socket of a connection opened here.',
      },
    ];
  }
  if (r.ports === undefined) {
    const [d] = destinations;
    return [
      {
        check: 'TIME_WAIT',
        severity: 'info',
        destination: d.key,
        count: d.count,
        evidence: { thresholds: t },
        meaning: `${d.count} TIME_WAIT sockets to ${d.key}; net.ipv4.ip_local_port_range could not be read, so their share of the local ports is not known.`,
      },
    ];
  }
  const { low, high, size } = r.ports;
  const perSecond = Math.floor(size / TIME_WAIT_SECONDS);
  const out: ConnectionFinding[] = [];
  for (const d of destinations) {
    const portShare = Math.round((d.count / size) * 1000) / 1000;
    let severity: Severity = portShare >= t.critical ? 'critical' : portShare >= t.warn ? 'warn' : 'ok';
    if (severity === 'ok' && out.length > 0) break; // below the thresholds: only the largest is reported
    const loopback = isLoopback(addressOf(d.key));
    // tcp_tw_reuse lets connect() take a port in TIME_WAIT to the same destination once its
    // timestamps prove it safe (1: every destination; 2: loopback only), so the share does not run out.
    const reusable = r.timestamps !== 0 && (r.twReuse === 1 || (r.twReuse === 2 && loopback));
    const evidence = {
      timeWait: d.count,
      portRange: { low, high, size },
      portShare,
      tcpTwReuse: r.twReuse,
      tcpTimestamps: r.timestamps,
      loopback,
      reusable,
      thresholds: t,
    };
    const held = `${d.count} TIME_WAIT sockets to ${d.key} hold ${percent(portShare)} of the ${size} local ports of net.ipv4.ip_local_port_range (${low}-${high})`;
    const why =
      `A new connection to ${d.key} needs a local port that is not in TIME_WAIT with it: past half the range connect() searches port by port and slows, ` +
      `and with every port taken it fails with EADDRNOTAVAIL. This side closed first and holds each port for ${TIME_WAIT_SECONDS} s, so ${d.key} sustains ${size} / ${TIME_WAIT_SECONDS} s = ${perSecond} new connections per second.`;
    if (severity === 'ok') {
      out.push({ check: 'TIME_WAIT', severity, destination: d.key, count: d.count, portShare, evidence, meaning: `${held}; the most of any destination.` });
      break;
    }
    if (reusable) {
      severity = 'info';
      out.push({
        check: 'TIME_WAIT',
        severity,
        destination: d.key,
        count: d.count,
        portShare,
        evidence,
        meaning: `${held}. tcp_tw_reuse=${r.twReuse}${r.twReuse === 2 ? ' (loopback)' : ''} lets connect() reuse them about 1 s after their TIME_WAIT began, when the peer sends TCP timestamps (most do), so they do not run out unless more than ${size} connections a second go to it.`,
      });
      continue;
    }
    const ways = [
      'close with RST on this side, the side that closes first (tune(socket, presets.rstOnClose()): no TIME_WAIT, what was written is drained first)',
      'reuse connections (a pool: createAgent(policy, { keepAlive: true }))',
      ...(r.twReuse === 0 || (r.twReuse === 2 && !loopback)
        ? ['let connect() reuse TIME_WAIT ports (sysctl -w net.ipv4.tcp_tw_reuse=1; it needs TCP timestamps)']
        : []),
      ...(size < 65535 - 10240 + 1 ? ['widen the range (sysctl -w net.ipv4.ip_local_port_range="10240 65535")'] : []),
    ];
    const fix = ways.join('; or ');
    out.push({
      check: 'TIME_WAIT',
      severity,
      destination: d.key,
      count: d.count,
      portShare,
      evidence,
      meaning: `${held}. ${why}`,
      fix: `${fix[0].toUpperCase()}${fix.slice(1)}.`,
    });
  }
  return out;
}

/**
 * Audits the connections of this network namespace: CLOSE_WAIT sockets (an application leak, with
 * the processes holding them and the side they are on) and TIME_WAIT sockets per destination of
 * connections opened here, against the size of `net.ipv4.ip_local_port_range`. Severities follow
 * {@link connectionThresholds}:
 * - CLOSE_WAIT in the namespace: `ok` 0, `info` 1 to 9, `warn` 10 to 99, `critical` 100 or more.
 * - TIME_WAIT to one destination: `warn` from 25% of the local port range, `critical` from 50%;
 *   `info` instead when `tcp_tw_reuse` lets connect() reuse those ports (1, or 2 for a loopback
 *   destination, with `tcp_timestamps` on). Below 25%, one `ok` finding names the largest.
 *
 * Linux; run as root to see the processes holding other users' sockets (`unreadable` otherwise).
 */
export function connectionAudit(): ConnectionAudit {
  const report = connectionReport({}, DESTINATIONS);
  const unreadable: Unreadable[] = [];
  const read = (setting: string) => {
    try {
      return readSysctl(setting);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      unreadable.push({ what: setting, path: e.path ?? setting, code: e.code ?? 'EIO', message: e.message });
      return undefined;
    }
  };
  const num = (text: string | undefined) => (text === undefined || text.trim() === '' || !Number.isFinite(Number(text)) ? undefined : Number(text));
  const range = read('net.ipv4.ip_local_port_range')?.trim().split(/\s+/).map(Number);
  const reuse: Reuse = {
    ports:
      range && range.length === 2 && range.every(Number.isInteger) && range[1] >= range[0]
        ? { low: range[0], high: range[1], size: range[1] - range[0] + 1 }
        : undefined,
    twReuse: num(read('net.ipv4.tcp_tw_reuse')),
    timestamps: num(read('net.ipv4.tcp_timestamps')),
  };
  const findings = [closeWait(report), ...timeWait(report, reuse)];
  const summary = { ok: 0, info: 0, warn: 0, critical: 0 };
  for (const f of findings) summary[f.severity]++;
  const worst = severities.reduce((w, s) => (summary[s] > 0 ? s : w), 'ok' as Severity);
  return { findings, summary, worst, thresholds: connectionThresholds, source: report.source, unreadable };
}
