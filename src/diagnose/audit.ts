/**
 * The sysctl audit behind `socktune doctor`: every kernel setting that decides how TCP connections
 * end, read with the counts and counters that show whether it bites here, and advice that fits
 * the running kernel version.
 * @module
 */
import { codes, invalidArgType, invalidArgValue, readArgument, socktuneError } from '../errors.js';
import { connectionStates, type ConnectionStates } from './states.js';
import {
  kernelVersion,
  netCounters,
  netCountersAsync,
  readSysctl,
  readSysctlAsync,
  sockstat,
  sockstatAsync,
  sysctlPath,
  type KernelVersion,
  type NetCounters,
  type Sockstat,
  type TcpExtCounters,
} from './proc.js';

/** How much a finding matters: `ok` nothing to do, `info` worth knowing, `warn` likely to cause failures, `critical` breaks connections now. */
export type Severity = 'ok' | 'info' | 'warn' | 'critical';

/** One setting, what it holds, what that means here, and how to change it. */
export interface Finding {
  /** The sysctl name (`net.ipv4.tcp_tw_reuse`). */
  setting: string;
  severity: Severity;
  /** What the kernel holds (vectors space-separated: `'32768 60999'`), `undefined` when it has no such setting. */
  value: string | undefined;
  /** The values and counts the verdict rests on; seconds and counts unless a key names its unit. */
  evidence: Record<string, unknown>;
  /** What the value means for connections here. */
  meaning: string;
  /** A shell command (as root) that sets the advised value now and keeps it across reboots. */
  fix?: string;
  /** Why the setting could not be read (then `severity` is `'warn'` and it was not audited). */
  error?: { code: string; message: string };
}

/** Something the audit could not read; it audited the rest. */
export interface Unreadable {
  /** The sysctl name, or what the file holds (`'sockstat'`, `'counters'`, `'TIME_WAIT count'`). */
  what: string;
  /** The file or view that failed (`/proc/sys/net/ipv4/tcp_fin_timeout`, `/proc/net/sockstat`, `sock_diag`). */
  path: string;
  /** `'EACCES'`, `'EIO'`, ... */
  code: string;
  message: string;
}

/** Options of {@link sysctlAudit}. */
export interface AuditOptions {
  /**
   * Counts of this network namespace to use instead of counting now (as `connectionStates()`
   * returns them; TIME_WAIT sockets belong to no process, so a process-scope count is refused).
   */
  states?: ConnectionStates;
}

/** What {@link sysctlAudit} returns. */
export interface SysctlAudit {
  /** The running kernel, whose version the advice follows. */
  kernel: KernelVersion;
  /** One finding per setting, in a fixed order. */
  findings: Finding[];
  /** How many findings of each severity. */
  summary: Record<Severity, number>;
  /** The most severe finding. */
  worst: Severity;
  /** TIME_WAIT sockets in this network namespace (both families). */
  timeWait: number;
  /**
   * Where `timeWait` came from: counted now over `'netlink'` or `'proc'`, given by the `'caller'`,
   * or, when no socket table could be read, /proc/net/sockstat's `tw` (`'sockstat'`, which also
   * counts orphaned FIN_WAIT2 sockets) or nothing (`'none'`, and `timeWait` is 0).
   */
  timeWaitSource: 'netlink' | 'proc' | 'caller' | 'sockstat' | 'none';
  /** /proc/net/sockstat{,6} at the time of the audit (absent when it could not be read). */
  sockstat?: Sockstat;
  /** What could not be read (empty when everything could). Each unreadable setting is also a `warn` finding. */
  unreadable: Unreadable[];
}

/** TIME_WAIT lasts TCP_TIMEWAIT_LEN, fixed at 60 s in the kernel; no sysctl changes it. */
const TIME_WAIT_SECONDS = 60;
/** Node's default `listen()` backlog (net.Server); the kernel caps it at net.core.somaxconn. */
const NODE_DEFAULT_BACKLOG = 511;

/**
 * Idle timeouts after which common middleboxes forget a TCP flow without telling either end, in
 * seconds (defaults; most are configurable). A connection idle longer is dead for its next packet.
 */
export const middleboxIdleTimeouts: ReadonlyArray<Readonly<{ name: string; seconds: number }>> = Object.freeze([
  Object.freeze({ name: 'Azure Load Balancer', seconds: 240 }),
  Object.freeze({ name: 'AWS Network Load Balancer / NAT gateway', seconds: 350 }),
  Object.freeze({ name: 'GCP VPC firewall', seconds: 600 }),
]);

const defaultPortRange = { low: 32768, high: 60999 };
const severities: Severity[] = ['ok', 'info', 'warn', 'critical'];
/** Share of the local port range in TIME_WAIT from which connect() slows and then fails. */
const portShareWarn = 0.5;
/** Share of a kernel limit from which a finding warns before the limit is hit. */
const limitShareWarn = 0.8;

/** The command that sets `setting` now and, in a file of its own under /etc/sysctl.d, at every boot. */
function fix(setting: string, value: string | number): string {
  const v = String(value);
  const arg = v.includes(' ') ? `${setting}="${v}"` : `${setting}=${v}`;
  return `sysctl -w ${arg} && echo '${setting} = ${v}' > /etc/sysctl.d/90-${setting}.conf`;
}

function atLeast(k: KernelVersion, major: number, minor: number): boolean {
  return k.major > major || (k.major === major && k.minor >= minor);
}

function int(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : undefined;
}

const share = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 1000) / 1000 : 0);
const percent = (s: number) => `${Math.round(s * 100)}%`;

/** What every check reads: settings (read once), counts and counters. */
interface Context {
  kernel: KernelVersion;
  get(setting: string): string | undefined;
  /** Why a setting could not be read, when it could not. */
  failed(setting: string): Unreadable | undefined;
  num(setting: string): number | undefined;
  states: ConnectionStates['states'];
  timeWait: number;
  sockstat: Sockstat;
  ext: Partial<TcpExtCounters>;
  ports: { low: number; high: number; size: number } | undefined;
}

type Check = (c: Context) => Omit<Finding, 'value'> | undefined;

const absent = (setting: string): Omit<Finding, 'value'> => ({
  setting,
  severity: 'info',
  evidence: { present: false },
  meaning: 'This kernel or network namespace has no such setting.',
});

const checks: Check[] = [
  function twReuse(c) {
    const setting = 'net.ipv4.tcp_tw_reuse';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const delayMs = c.num('net.ipv4.tcp_tw_reuse_delay') ?? 1000;
    const timestamps = c.num('net.ipv4.tcp_timestamps');
    const size = c.ports?.size ?? 0;
    const used = share(c.timeWait, size);
    const evidence = { timeWait: c.timeWait, portRangeSize: size, timeWaitShare: used, reuseDelayMs: delayMs, tcpTimestamps: timestamps };
    const pressure = used >= portShareWarn;
    const scope = 'It helps outgoing connections only (the side that closed first holds TIME_WAIT) and needs tcp_timestamps on both ends.';
    const waitOut = `A new outgoing connection to the same destination ip:port cannot reuse a local port until its TIME_WAIT (${TIME_WAIT_SECONDS} s) ends`;
    if (v === 0) {
      const was = atLeast(c.kernel, 4, 18) ? ' The default is 2 (loopback only).' : '';
      return pressure
        ? {
            setting,
            severity: 'warn',
            evidence,
            meaning: `Off. ${waitOut}, and TIME_WAIT holds ${c.timeWait} of ${size} local ports (${percent(used)}): connect() may fail with EADDRNOTAVAIL. With 1, a port is reused ${delayMs} ms after its TIME_WAIT began. ${scope}`,
            fix: fix(setting, 1),
          }
        : { setting, severity: 'info', evidence, meaning: `Off. ${waitOut}.${was} ${scope}` };
    }
    if ((v === 1 || v === 2) && timestamps === 0) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `Set to ${v}, but tcp_timestamps=0: reuse needs timestamps, so it never happens.`,
        fix: fix('net.ipv4.tcp_timestamps', 1),
      };
    }
    if (v === 1)
      return {
        setting,
        severity: 'ok',
        evidence,
        meaning: `On: an outgoing connection may reuse a local port ${delayMs} ms after its TIME_WAIT began, when timestamps prove it safe. ${scope}`,
      };
    if (v === 2) {
      return pressure
        ? {
            setting,
            severity: 'warn',
            evidence,
            meaning: `Loopback only: connections to other hosts wait out TIME_WAIT (${TIME_WAIT_SECONDS} s) before reusing a local port, and TIME_WAIT holds ${c.timeWait} of ${size} local ports (${percent(used)}). Unless those are loopback connections, connect() may fail with EADDRNOTAVAIL; 1 reuses ports to every host. ${scope}`,
            fix: fix(setting, 1),
          }
        : {
            setting,
            severity: 'ok',
            evidence,
            meaning: `Loopback only (the default since Linux 4.18): connections to other hosts wait out TIME_WAIT (${TIME_WAIT_SECONDS} s) before reusing a local port. ${scope}`,
          };
    }
    return { setting, severity: 'info', evidence, meaning: `Unknown value ${v}: 0 off, 1 on, 2 loopback only.` };
  },

  function twRecycle(c) {
    const setting = 'net.ipv4.tcp_tw_recycle';
    const v = c.num(setting);
    const evidence = { present: v !== undefined, removedIn: '4.12' };
    if (v === undefined) {
      return {
        setting,
        severity: 'ok',
        evidence,
        meaning:
          'Absent, as in every kernel since 4.12. It dropped SYNs from clients behind NAT; a line setting it in /etc/sysctl.conf or /etc/sysctl.d now only makes `sysctl -p` fail: delete it.',
      };
    }
    if (v !== 0) {
      return {
        setting,
        severity: 'critical',
        evidence,
        meaning:
          'On: SYNs whose timestamp is older than the last one seen from the same IP are dropped, so clients behind one NAT fail to connect at random. Removed from Linux 4.12 for this reason.',
        fix: fix(setting, 0),
      };
    }
    return { setting, severity: 'ok', evidence, meaning: 'Off, as it must stay (removed in Linux 4.12: it broke clients behind NAT).' };
  },

  function timestamps(c) {
    const setting = 'net.ipv4.tcp_timestamps';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const reuse = c.num('net.ipv4.tcp_tw_reuse');
    const evidence = { tcpTwReuse: reuse };
    if (v === 0) {
      return reuse === 1 || reuse === 2
        ? {
            setting,
            severity: 'warn',
            evidence,
            meaning: `Off: tcp_tw_reuse=${reuse} cannot reuse TIME_WAIT ports without timestamps, and PAWS (protection against wrapped sequence numbers) is off.`,
            fix: fix(setting, 1),
          }
        : {
            setting,
            severity: 'info',
            evidence,
            meaning: 'Off: no PAWS protection, coarser RTT estimates, and TIME_WAIT reuse impossible.',
            fix: fix(setting, 1),
          };
    }
    const offsets = v === 2 ? 'without random offsets' : atLeast(c.kernel, 4, 10) ? 'with a random offset per connection' : 'with the uptime as clock';
    return { setting, severity: 'ok', evidence, meaning: `On, ${offsets}; needed by tcp_tw_reuse and PAWS.` };
  },

  function finTimeout(c) {
    const setting = 'net.ipv4.tcp_fin_timeout';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const evidence = { seconds: v, finWait2: c.states.FIN_WAIT2, orphans: c.sockstat.TCP?.orphan, timeWaitSeconds: TIME_WAIT_SECONDS };
    const meaning = `A connection its process has closed waits up to ${v} s in FIN_WAIT2 for the peer's FIN. It is not the TIME_WAIT length, fixed at ${TIME_WAIT_SECONDS} s (TCP_TIMEWAIT_LEN): lowering it does not shorten TIME_WAIT.`;
    return v > TIME_WAIT_SECONDS
      ? {
          setting,
          severity: 'info',
          evidence,
          meaning: `${meaning} Above ${TIME_WAIT_SECONDS} s, orphaned FIN_WAIT2 sockets to vanished peers linger longer.`,
          fix: fix(setting, TIME_WAIT_SECONDS),
        }
      : { setting, severity: 'ok', evidence, meaning };
  },

  function maxTwBuckets(c) {
    const setting = 'net.ipv4.tcp_max_tw_buckets';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const tw = c.sockstat.TCP?.tw ?? c.timeWait;
    const overflow = c.ext.TCPTimeWaitOverflow ?? 0;
    const evidence = { max: v, timeWait: tw, TCPTimeWaitOverflow: overflow };
    const raise = fix(setting, Math.max(v * 2, 262144));
    if (overflow > 0) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `"time wait bucket table overflow" ${overflow} times: at ${v} TIME_WAIT sockets the kernel closes further connections without TIME_WAIT, so late segments of an old connection can reach a new one on the same ports. Raise the limit, or close less (pooled keep-alive connections).`,
        fix: raise,
      };
    }
    if (tw >= v * limitShareWarn) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `${tw} TIME_WAIT sockets, ${percent(share(tw, v))} of the limit of ${v}; beyond it connections close without TIME_WAIT ("time wait bucket table overflow").`,
        fix: raise,
      };
    }
    return { setting, severity: 'ok', evidence, meaning: `At most ${v} TIME_WAIT sockets; ${tw} now. Beyond the limit connections close without TIME_WAIT.` };
  },

  function portRange(c) {
    const setting = 'net.ipv4.ip_local_port_range';
    if (!c.ports) return absent(setting);
    const { low, high, size } = c.ports;
    const used = share(c.timeWait, size);
    const perSecond = Math.floor(size / TIME_WAIT_SECONDS);
    const reserved = c.get('net.ipv4.ip_local_reserved_ports') ?? '';
    const evidence = { low, high, size, timeWait: c.timeWait, timeWaitShare: used, connectsPerSecondPerDestination: perSecond, reservedPorts: reserved };
    const rate = `A local port stays taken for ${TIME_WAIT_SECONDS} s after the side that closed first closes, so without TIME_WAIT reuse one destination ip:port sustains ${size} / ${TIME_WAIT_SECONDS} s = ${perSecond} new connections per second.`;
    const widen = size < 65535 - 10240 + 1 ? fix(setting, '10240 65535') : undefined;
    if (used >= portShareWarn) {
      // connect() tries ports of one parity first (Linux 4.6+); past half the range it searches
      // the other half port by port, then fails with EADDRNOTAVAIL.
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `${c.timeWait} TIME_WAIT sockets against ${size} local ports (${percent(used)}; all destinations and inbound connections counted, so an upper bound for one destination). ${rate} Beyond it connect() fails with EADDRNOTAVAIL. Reuse connections (keep-alive), enable tcp_tw_reuse, or widen the range.`,
        fix: widen,
      };
    }
    const def = defaultPortRange.high - defaultPortRange.low + 1;
    if (size < def) {
      return {
        setting,
        severity: 'info',
        evidence,
        meaning: `${size} ports, fewer than the default ${defaultPortRange.low}-${defaultPortRange.high} (${def}). ${rate}`,
        fix: widen,
      };
    }
    return { setting, severity: 'ok', evidence, meaning: `${size} ports, ${c.timeWait} in TIME_WAIT (${percent(used)}). ${rate}` };
  },

  function keepaliveTime(c) {
    const setting = 'net.ipv4.tcp_keepalive_time';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const interval = c.num('net.ipv4.tcp_keepalive_intvl');
    const probes = c.num('net.ipv4.tcp_keepalive_probes');
    const idleTimeouts = middleboxIdleTimeouts.map((m) => ({ ...m, keptAlive: v < m.seconds }));
    const evidence = {
      seconds: v,
      intervalSeconds: interval,
      probes,
      deadPeerAfterSeconds: interval !== undefined && probes !== undefined ? v + interval * probes : undefined,
      idleTimeouts,
    };
    const scope =
      'It applies only to sockets with SO_KEEPALIVE on that set no idle time of their own; socktune sets keepalive per socket with configure(socket, { keepAlive: { idle, interval, count } }).';
    const lost = idleTimeouts.filter((m) => !m.keptAlive);
    if (lost.length > 0) {
      const names = lost.map((m) => `${m.name} (${m.seconds} s)`).join(', ');
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `The first keepalive probe goes out after ${v} s idle; ${names} forget an idle flow sooner, silently, and the connection fails on its next packet. A vanished peer is noticed after ${evidence.deadPeerAfterSeconds ?? '?'} s. ${scope}`,
        fix: fix(setting, 120),
      };
    }
    return {
      setting,
      severity: 'ok',
      evidence,
      meaning: `The first keepalive probe goes out after ${v} s idle, before the common middlebox idle timeouts (${middleboxIdleTimeouts[0].seconds} s and up). ${scope}`,
    };
  },

  function keepaliveInterval(c) {
    const setting = 'net.ipv4.tcp_keepalive_intvl';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const probes = c.num('net.ipv4.tcp_keepalive_probes') ?? 9;
    const evidence = { seconds: v, probes, afterFirstProbeSeconds: v * probes };
    const meaning = `Unanswered probes repeat every ${v} s; a dead peer is given up ${v} × ${probes} = ${v * probes} s after the first one.`;
    return v * probes > 300
      ? { setting, severity: 'info', evidence, meaning, fix: fix(setting, Math.max(1, Math.floor(90 / probes))) }
      : { setting, severity: 'ok', evidence, meaning };
  },

  function keepaliveProbes(c) {
    const setting = 'net.ipv4.tcp_keepalive_probes';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const evidence = { probes: v, intervalSeconds: c.num('net.ipv4.tcp_keepalive_intvl') };
    return v < 3
      ? {
          setting,
          severity: 'info',
          evidence,
          meaning: `${v} unanswered probe${v === 1 ? '' : 's'} drop the connection: one or two lost packets kill a healthy one.`,
          fix: fix(setting, 3),
        }
      : { setting, severity: 'ok', evidence, meaning: `${v} unanswered probes drop the connection with ETIMEDOUT.` };
  },

  function syncookies(c) {
    const setting = 'net.ipv4.tcp_syncookies';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const sent = c.ext.SyncookiesSent ?? 0;
    const evidence = {
      SyncookiesSent: sent,
      SyncookiesRecv: c.ext.SyncookiesRecv,
      SyncookiesFailed: c.ext.SyncookiesFailed,
      TCPReqQFullDoCookies: c.ext.TCPReqQFullDoCookies,
      TCPReqQFullDrop: c.ext.TCPReqQFullDrop,
    };
    if (v === 0)
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: "Off: when a listener's SYN queue is full (a burst or a SYN flood), new SYNs are dropped and clients retry after 1 s, 3 s, 7 s...",
        fix: fix(setting, 1),
      };
    if (v === 2)
      return {
        setting,
        severity: 'info',
        evidence,
        meaning: 'Every SYN is answered with a cookie (meant for testing): without timestamps, connections lose window scaling and SACK.',
        fix: fix(setting, 1),
      };
    if (sent > 0)
      return {
        setting,
        severity: 'info',
        evidence,
        meaning: `On. A SYN queue overflowed: ${sent} cookies sent (a burst beyond the listen backlog, or a flood).`,
      };
    return { setting, severity: 'ok', evidence, meaning: "On: cookies answer SYNs only when a listener's SYN queue is full." };
  },

  function maxSynBacklog(c) {
    const setting = 'net.ipv4.tcp_max_syn_backlog';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const cookies = c.num('net.ipv4.tcp_syncookies');
    const drops = c.ext.TCPReqQFullDrop ?? 0;
    const evidence = { value: v, tcpSyncookies: cookies, TCPReqQFullDrop: drops, ListenDrops: c.ext.ListenDrops };
    const meaning = `Matters only while tcp_syncookies=0: then SYNs from peers not seen before are dropped once a listener has ${v - (v >> 2)} (3/4 of ${v}) pending handshakes. Each SYN queue is also capped by the listen backlog.`;
    if (cookies === 0 && drops > 0) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `${drops} SYNs dropped because a SYN queue was full. ${meaning}`,
        fix: fix('net.ipv4.tcp_syncookies', 1),
      };
    }
    return { setting, severity: 'ok', evidence, meaning };
  },

  function somaxconn(c) {
    const setting = 'net.core.somaxconn';
    const v = c.num(setting);
    if (v === undefined) return absent(setting);
    const overflows = c.ext.ListenOverflows ?? 0;
    const kernelDefault = atLeast(c.kernel, 5, 4) ? 4096 : 128;
    const evidence = { value: v, kernelDefault, nodeDefaultBacklog: NODE_DEFAULT_BACKLOG, ListenOverflows: overflows, ListenDrops: c.ext.ListenDrops };
    const cap = `Caps every listen() backlog (the accept queue) at ${v}`;
    if (overflows > 0 && v < 4096) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `${cap}, and accept queues overflowed ${overflows} times: those handshakes were dropped and the clients retried after 1 s or more.`,
        fix: fix(setting, 4096),
      };
    }
    if (v < NODE_DEFAULT_BACKLOG) {
      return { setting, severity: 'info', evidence, meaning: `${cap}, below Node's default backlog of ${NODE_DEFAULT_BACKLOG}.`, fix: fix(setting, 4096) };
    }
    if (overflows > 0) {
      return {
        setting,
        severity: 'info',
        evidence,
        meaning: `${cap}. Accept queues overflowed ${overflows} times: a process accepted too slowly (a blocked event loop) or listened with a small backlog (server.listen({ backlog })).`,
      };
    }
    return { setting, severity: 'ok', evidence, meaning: `${cap}; Node asks for ${NODE_DEFAULT_BACKLOG}.` };
  },

  function maxOrphans(c) {
    // Global: only the initial network namespace shows it. A container cannot change it either.
    const setting = 'net.ipv4.tcp_max_orphans';
    const v = c.num(setting);
    if (v === undefined) return c.failed(setting) ? absent(setting) : undefined;
    const orphans = c.sockstat.TCP?.orphan ?? 0;
    const aborts = c.ext.TCPAbortOnMemory ?? 0;
    const evidence = { max: v, orphans, TCPAbortOnMemory: aborts };
    const meaning = `Connections closed by their process but not finished (FIN_WAIT1/2, LAST_ACK, CLOSING); beyond ${v} the kernel resets them ("too many orphaned sockets").`;
    if (aborts > 0 || orphans >= v * limitShareWarn) {
      return {
        setting,
        severity: 'warn',
        evidence,
        meaning: `${orphans} orphans now, ${aborts} connections reset for lack of orphan slots or TCP memory. ${meaning}`,
      };
    }
    return { setting, severity: 'ok', evidence, meaning: `${orphans} now. ${meaning}` };
  },
];

function validAuditOptions(options: unknown): AuditOptions {
  return readArgument('options', options, () => parseAuditOptions(options));
}

function parseAuditOptions(options: unknown): AuditOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgType('options', 'of type object', options);
  for (const key in options) if (key !== 'states') throw invalidArgValue('options', key, `has no option '${key}'; known: states`);
  const { states } = options as AuditOptions;
  if (states !== undefined) {
    const tw = (states as { states?: { TIME_WAIT?: unknown } } | null)?.states?.TIME_WAIT;
    if (typeof tw !== 'number' || !Number.isInteger(tw) || tw < 0) {
      throw invalidArgType('options.states', 'a ConnectionStates object (as connectionStates() returns it)', states);
    }
    if (states.scope === 'process') {
      throw invalidArgValue('options.states.scope', states.scope, "must be 'namespace': TIME_WAIT sockets belong to no process");
    }
  }
  return options as AuditOptions;
}

/**
 * Audits the TCP settings of this network namespace (sysctls are per namespace: a container sees
 * its own) against the TIME_WAIT count, /proc/net/sockstat and the TcpExt counters, and advises
 * for the running kernel version. Nothing is spawned and nothing is changed. Linux only.
 *
 * One finding per setting, in this order, with these severities:
 * - `net.ipv4.tcp_tw_reuse`: warn when off (0), or loopback-only (2), while TIME_WAIT holds half
 *   the local port range or more; warn when on but tcp_timestamps=0; info when off otherwise.
 * - `net.ipv4.tcp_tw_recycle`: critical when present and on; ok when off or absent (Linux 4.12+).
 * - `net.ipv4.tcp_timestamps`: warn when off while tcp_tw_reuse is 1 or 2; info when off.
 * - `net.ipv4.tcp_fin_timeout`: info above 60 s. It is the FIN_WAIT2 time of orphaned
 *   connections, not the TIME_WAIT length (fixed at 60 s).
 * - `net.ipv4.tcp_max_tw_buckets`: warn when TcpExt TCPTimeWaitOverflow > 0, or TIME_WAIT ≥ 80% of it.
 * - `net.ipv4.ip_local_port_range`: warn when TIME_WAIT ≥ 50% of its size (one destination
 *   sustains size / 60 s new connections per second); info when narrower than 32768-60999.
 * - `net.ipv4.tcp_keepalive_time`: warn when not below every idle timeout in
 *   {@link middleboxIdleTimeouts} (240 s). `tcp_keepalive_intvl`: info when interval × probes > 300 s.
 *   `tcp_keepalive_probes`: info below 3.
 * - `net.ipv4.tcp_syncookies`: warn when 0; info when 2, or when cookies were sent.
 * - `net.ipv4.tcp_max_syn_backlog`: warn when SYNs were dropped (TCPReqQFullDrop) with cookies off.
 * - `net.core.somaxconn`: warn when accept queues overflowed (ListenOverflows) and it is below
 *   4096; info when below Node's backlog of 511, or when queues overflowed anyway.
 * - `net.ipv4.tcp_max_orphans` (only where readable: the initial namespace): warn when
 *   TCPAbortOnMemory > 0 or orphans ≥ 80% of it.
 *
 * A setting the kernel lacks is `info` with `value: undefined`; one that cannot be read (a file
 * made unreadable, EACCES) is `warn` with `error`, and is listed in `unreadable` with anything else
 * that could not be read (/proc/net/sockstat, the counters, the socket table): the rest is audited.
 * Counters count since the namespace was created (since boot for the initial one), so a warning may
 * describe the past.
 *
 * @param options `states`: counts to use instead of counting TIME_WAIT now
 */
export function sysctlAudit(options?: AuditOptions): SysctlAudit {
  const { states: given } = validAuditOptions(options);
  linuxOnly();
  const read = new Readings();
  const counted = given ?? read.attempt('TIME_WAIT count', 'sock_diag', () => connectionStates());
  for (const setting of auditedSettings) read.setting(setting, () => readSysctl(setting));
  const stat = read.attempt('sockstat', '/proc/net/sockstat', () => sockstat());
  const counters = read.attempt('counters', '/proc/net/netstat', () => netCounters());
  return judge(read, counted, given !== undefined, stat, counters);
}

/**
 * {@link sysctlAudit} with every file read on libuv's thread pool, for the collector: the event
 * loop only parses and judges. `states` is the count of this namespace (the scrape's dump).
 * @internal
 */
export async function sysctlAuditAsync(states: ConnectionStates): Promise<SysctlAudit> {
  validAuditOptions({ states });
  linuxOnly();
  const read = new Readings();
  const [stat, counters] = await Promise.all([
    read.attemptAsync('sockstat', '/proc/net/sockstat', sockstatAsync),
    read.attemptAsync('counters', '/proc/net/netstat', netCountersAsync),
    ...auditedSettings.map((setting) => read.settingAsync(setting, () => readSysctlAsync(setting))),
  ]);
  return judge(read, states, true, stat as Sockstat | undefined, counters as NetCounters | undefined);
}

function linuxOnly(): void {
  if (process.platform !== 'linux') {
    throw socktuneError(codes.UNSUPPORTED, `sysctlAudit reads /proc/sys, which ${process.platform} does not have`);
  }
}

/** Every sysctl a check reads, read up front (so the async audit can read them all off the loop). */
const auditedSettings = [
  'net.ipv4.tcp_tw_reuse',
  'net.ipv4.tcp_tw_reuse_delay',
  'net.ipv4.tcp_tw_recycle',
  'net.ipv4.tcp_timestamps',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_max_tw_buckets',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.tcp_max_syn_backlog',
  'net.core.somaxconn',
  'net.ipv4.tcp_max_orphans',
];

/** What the audit read: each source on its own, so one that cannot be read is reported and the rest audited. */
class Readings {
  readonly unreadable: Unreadable[] = [];
  readonly values = new Map<string, string | undefined>();
  readonly failed = new Map<string, Unreadable>();

  private note(what: string, path: string, err: unknown): undefined {
    const e = err as NodeJS.ErrnoException;
    this.unreadable.push({ what, path: e.path ?? path, code: e.code ?? 'EIO', message: e.message });
    return undefined;
  }

  attempt<T>(what: string, path: string, read: () => T): T | undefined {
    try {
      return read();
    } catch (err) {
      return this.note(what, path, err);
    }
  }

  async attemptAsync<T>(what: string, path: string, read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (err) {
      return this.note(what, path, err);
    }
  }

  private keep(setting: string, text: string | undefined, before: number): void {
    this.values.set(setting, text?.trim().split(/\s+/).join(' '));
    if (this.unreadable.length > before) this.failed.set(setting, this.unreadable[before]);
  }

  setting(setting: string, read: () => string | undefined): void {
    const before = this.unreadable.length;
    this.keep(setting, this.attempt(setting, sysctlPath(setting), read), before);
  }

  async settingAsync(setting: string, read: () => Promise<string | undefined>): Promise<void> {
    const text = await this.attemptAsync(setting, sysctlPath(setting), read);
    // Counted from the unreadable entry this setting added, whatever order the reads finished in.
    const mine = this.unreadable.findIndex((u) => u.what === setting);
    this.keep(setting, text, mine < 0 ? this.unreadable.length : mine);
  }
}

/** The findings from what was read. */
function judge(
  read: Readings,
  counted: ConnectionStates | undefined,
  given: boolean,
  stat: Sockstat | undefined,
  counters: NetCounters | undefined,
): SysctlAudit {
  const unreadable = read.unreadable;
  const failedSettings = read.failed;
  const get = (setting: string) => read.values.get(setting);
  const range = get('net.ipv4.ip_local_port_range')?.split(' ').map(Number);
  const timeWait = counted?.states.TIME_WAIT ?? stat?.TCP?.tw ?? 0;
  const c: Context = {
    kernel: kernelVersion(),
    get,
    failed: (setting) => failedSettings.get(setting),
    num: (setting) => int(get(setting)),
    states: counted?.states ?? ({} as ConnectionStates['states']),
    timeWait,
    sockstat: stat ?? ({} as Sockstat),
    ext: counters?.TcpExt ?? {},
    ports: range && range.length === 2 && range.every(Number.isInteger) ? { low: range[0], high: range[1], size: range[1] - range[0] + 1 } : undefined,
  };
  const findings: Finding[] = [];
  for (const check of checks) {
    const f = check(c);
    if (!f) continue;
    const failed = failedSettings.get(f.setting);
    if (failed) {
      findings.push({
        setting: f.setting,
        severity: 'warn',
        value: undefined,
        evidence: { path: failed.path, code: failed.code },
        meaning: `Could not be read (${failed.message}), so it was not audited.`,
        error: { code: failed.code, message: failed.message },
      });
      continue;
    }
    findings.push({
      setting: f.setting,
      severity: f.severity,
      value: get(f.setting),
      evidence: f.evidence,
      meaning: f.meaning,
      ...(f.fix ? { fix: f.fix } : {}),
    });
  }
  const summary = { ok: 0, info: 0, warn: 0, critical: 0 };
  for (const f of findings) summary[f.severity]++;
  const worst = severities.reduce((w, s) => (summary[s] > 0 ? s : w), 'ok' as Severity);
  return {
    kernel: c.kernel,
    findings,
    summary,
    worst,
    timeWait,
    timeWaitSource: given ? 'caller' : counted ? counted.source : stat?.TCP ? 'sockstat' : 'none',
    ...(stat ? { sockstat: stat } : {}),
    unreadable,
  };
}
