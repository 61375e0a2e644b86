/**
 * The kernel's own text views, read without spawning anything: socket counts
 * (/proc/net/sockstat{,6}), protocol counters (/proc/net/netstat, /proc/net/snmp), sysctls
 * (/proc/sys) and the kernel version. Every reader sees the network namespace of the calling
 * process, as `ss`, `nstat` and `sysctl` would.
 * @module
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { codes, invalidArgType, invalidArgValue, socktuneError } from '../errors.js';

/**
 * Reads a /proc file. `undefined` when it does not exist and `optional` (a protocol or setting
 * this kernel lacks); off Linux, where /proc has none of these files, an `ERR_SOCKTUNE_UNSUPPORTED`.
 */
function procText(path: string, optional = false): string | undefined {
  linuxOnly(path);
  try {
    return readFileSync(path, 'latin1');
  } catch (err) {
    return absentOrThrow(err, optional);
  }
}

/** {@link procText} on libuv's thread pool: the kernel formats the file off the event loop. */
async function procTextAsync(path: string, optional = false): Promise<string | undefined> {
  linuxOnly(path);
  try {
    return await readFile(path, 'latin1');
  } catch (err) {
    return absentOrThrow(err, optional);
  }
}

function linuxOnly(path: string): void {
  if (process.platform !== 'linux') {
    throw socktuneError(codes.UNSUPPORTED, `${path} is a Linux view; it is not available on ${process.platform}`);
  }
}

function absentOrThrow(err: unknown, optional: boolean): undefined {
  // ENOTDIR: a path through a setting (net.ipv4.tcp_fin_timeout.x) names nothing either.
  const code = (err as NodeJS.ErrnoException).code;
  if (optional && (code === 'ENOENT' || code === 'ENOTDIR')) return undefined;
  throw err;
}

/** The views that take no argument refuse one rather than ignore it. */
function noArguments(fn: string, args: IArguments): void {
  if (args.length > 0) throw invalidArgValue('args', [...args], `must be empty: ${fn}() takes no arguments`);
}

/**
 * Socket counts of /proc/net/sockstat and /proc/net/sockstat6, by protocol, with the kernel's
 * field names. `inuse` and `tw` count this network namespace; `orphan`, `alloc` and `mem` are
 * global to the machine.
 */
export interface Sockstat {
  /** Sockets of every family in use in this namespace. */
  sockets: { used: number };
  TCP: {
    /** IPv4 TCP sockets in use (not TIME_WAIT) in this namespace. */
    inuse: number;
    /** Orphaned sockets: closed by their process, still finishing (FIN_WAIT1/2, LAST_ACK, CLOSING). Global. */
    orphan: number;
    /** TIME_WAIT mini-sockets of this namespace (IPv4 and IPv6), including orphaned FIN_WAIT2 ones. */
    tw: number;
    /** TCP sockets allocated (IPv4 and IPv6, every namespace). */
    alloc: number;
    /** Memory held by TCP buffers, in pages (the unit of net.ipv4.tcp_mem; a page is usually 4096 bytes). Global. */
    mem: number;
  };
  UDP: {
    inuse: number;
    /** Memory held by UDP buffers, in pages. Global. */
    mem: number;
  };
  UDPLITE?: { inuse: number };
  RAW: { inuse: number };
  /** IPv4 reassembly queues. */
  FRAG: {
    inuse: number;
    /** Bytes. */
    memory: number;
  };
  /** IPv6 TCP sockets in use in this namespace (absent without IPv6). */
  TCP6?: { inuse: number };
  UDP6?: { inuse: number };
  UDPLITE6?: { inuse: number };
  RAW6?: { inuse: number };
  /** IPv6 reassembly queues; `memory` in bytes. */
  FRAG6?: { inuse: number; memory: number };
  /** Any line a newer kernel adds. */
  [protocol: string]: Record<string, number> | undefined;
}

/** Parses `NAME: key value key value ...` lines. */
function parsePairs(text: string, into: Record<string, Record<string, number>>): void {
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const words = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    const fields: Record<string, number> = {};
    for (let i = 0; i + 1 < words.length; i += 2) fields[words[i]] = Number(words[i + 1]);
    into[line.slice(0, colon)] = fields;
  }
}

function parseSockstat(v4: string, v6: string | undefined): Sockstat {
  const out: Record<string, Record<string, number>> = {};
  parsePairs(v4, out);
  if (v6 !== undefined) parsePairs(v6, out);
  return out as unknown as Sockstat;
}

/** Reads /proc/net/sockstat and, when the kernel has IPv6, /proc/net/sockstat6. Linux only. */
export function sockstat(): Sockstat {
  noArguments('sockstat', arguments);
  return parseSockstat(procText('/proc/net/sockstat')!, procText('/proc/net/sockstat6', true));
}

/** {@link sockstat}, read on the thread pool (the collector's scrape). */
export async function sockstatAsync(): Promise<Sockstat> {
  const [v4, v6] = await Promise.all([procTextAsync('/proc/net/sockstat'), procTextAsync('/proc/net/sockstat6', true)]);
  return parseSockstat(v4!, v6);
}

/**
 * TcpExt counters (/proc/net/netstat, `nstat` prints them as `TcpExt<Name>`): events counted since
 * this network namespace was created (since boot for the initial one). The ones socktune reads
 * are named; every other counter the kernel prints is there too.
 */
export interface TcpExtCounters {
  [name: string]: number;
  /** Connections that finished TIME_WAIT (by its 60 s timer). */
  TW: number;
  /** TIME_WAIT skipped because `tcp_max_tw_buckets` was reached ("time wait bucket table overflow"). */
  TCPTimeWaitOverflow: number;
  /** Connections reset on close() because unread data was left in the receive queue. */
  TCPAbortOnData: number;
  /** Connections reset because data arrived after the application closed them. */
  TCPAbortOnClose: number;
  /** Connections reset because of too many orphans or too little TCP memory. */
  TCPAbortOnMemory: number;
  /** Connections dropped after retransmissions or keepalive probes went unanswered. */
  TCPAbortOnTimeout: number;
  /** Connections closed by SO_LINGER with a timeout or TCP_LINGER2. */
  TCPAbortOnLinger: number;
  /** Keepalive probes sent. */
  TCPKeepAlive: number;
  /** Handshakes dropped because a listener's accept queue was full. */
  ListenOverflows: number;
  /** Handshakes dropped at a listener for any reason (overflows included). */
  ListenDrops: number;
  /** SYN cookies sent (a SYN queue overflowed, or tcp_syncookies=2). */
  SyncookiesSent: number;
  SyncookiesRecv: number;
  SyncookiesFailed: number;
  /** SYNs dropped because a SYN queue was full and cookies were off. */
  TCPReqQFullDrop: number;
  /** SYNs answered with a cookie because a SYN queue was full. */
  TCPReqQFullDoCookies: number;
}

/** Tcp counters of /proc/net/snmp (`nstat`: `Tcp<Name>`). */
export interface TcpCounters {
  [name: string]: number;
  /** Retransmission timeout bounds, milliseconds. */
  RtoMin: number;
  RtoMax: number;
  /** -1: no limit. */
  MaxConn: number;
  /** connect()s that sent a SYN. */
  ActiveOpens: number;
  /** Connections accepted from a listener. */
  PassiveOpens: number;
  AttemptFails: number;
  /** Connections reset from ESTABLISHED or CLOSE_WAIT. */
  EstabResets: number;
  /** Connections now in ESTABLISHED or CLOSE_WAIT (a gauge, not a counter). */
  CurrEstab: number;
  InSegs: number;
  OutSegs: number;
  RetransSegs: number;
  InErrs: number;
  /** Segments sent with RST. */
  OutRsts: number;
}

/**
 * Counters of /proc/net/netstat and /proc/net/snmp by group (`TcpExt`, `IpExt`, `MPTcpExt`, `Ip`,
 * `Icmp`, `IcmpMsg`, `Tcp`, `Udp`, `UdpLite`), names as the kernel prints them; `nstat` joins
 * group and name (`TcpExtListenOverflows`). Values are JavaScript numbers, exact below 2^53.
 */
export interface NetCounters {
  TcpExt: TcpExtCounters;
  Tcp: TcpCounters;
  [group: string]: Record<string, number> | undefined;
}

/** Parses the `Group: names...` / `Group: values...` line pairs of netstat and snmp. */
function parseTable(text: string, into: Record<string, Record<string, number>>): void {
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const head = lines[i];
    const body = lines[i + 1];
    const colon = head.indexOf(':');
    if (colon < 0 || body.slice(0, colon + 1) !== head.slice(0, colon + 1)) continue;
    const names = head
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    const values = body
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    const group: Record<string, number> = (into[head.slice(0, colon)] ??= {});
    names.forEach((name, k) => {
      if (name && values[k] !== undefined) group[name] = Number(values[k]);
    });
  }
}

function parseCounters(netstat: string, snmp: string): NetCounters {
  const out: Record<string, Record<string, number>> = {};
  parseTable(netstat, out);
  parseTable(snmp, out);
  return out as unknown as NetCounters;
}

/** Reads /proc/net/netstat and /proc/net/snmp of this network namespace. Linux only. */
export function netCounters(): NetCounters {
  noArguments('netCounters', arguments);
  return parseCounters(procText('/proc/net/netstat')!, procText('/proc/net/snmp')!);
}

/** {@link netCounters}, read on the thread pool (the collector's scrape). */
export async function netCountersAsync(): Promise<NetCounters> {
  const [netstat, snmp] = await Promise.all([procTextAsync('/proc/net/netstat'), procTextAsync('/proc/net/snmp')]);
  return parseCounters(netstat!, snmp!);
}

/**
 * Reads one sysctl from /proc/sys, as `sysctl -n` would: `name` in dotted form
 * (`net.ipv4.tcp_fin_timeout`; a dot inside a component, as in a VLAN interface name, is written
 * `/`: `net.ipv4.conf.eth0/100.rp_filter`). Returns the kernel's text without its trailing
 * newline (vectors are tab-separated: `'32768\t60999'`), or `undefined` when this kernel or this
 * network namespace has no such setting. Linux only.
 */
export function readSysctl(name: string): string | undefined {
  const path = sysctlPath(name);
  let text: string | undefined;
  try {
    text = procText(path, true);
  } catch (err) {
    throw groupError(name, err);
  }
  return text?.replace(/\n$/, '');
}

/** {@link readSysctl}, read on the thread pool. */
export async function readSysctlAsync(name: string): Promise<string | undefined> {
  const path = sysctlPath(name);
  let text: string | undefined;
  try {
    text = await procTextAsync(path, true);
  } catch (err) {
    throw groupError(name, err);
  }
  return text?.replace(/\n$/, '');
}

/** The /proc/sys file of a dotted sysctl name (`/` inside a component stands for a dot). */
export function sysctlPath(name: string): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  const parts = name.split('.').map((p) => p.replaceAll('/', '.'));
  if (parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0'))) {
    throw invalidArgValue('name', name, 'is not a sysctl name (dotted components, as in net.ipv4.tcp_fin_timeout)');
  }
  return `/proc/sys/${parts.join('/')}`;
}

function groupError(name: string, err: unknown): unknown {
  return (err as NodeJS.ErrnoException).code === 'EISDIR' ? invalidArgValue('name', name, 'names a group of sysctls, not one setting') : err;
}

/** The running kernel's version. */
export interface KernelVersion {
  major: number;
  minor: number;
  /** 0 when the release names none (`6.1-rc3`). */
  patch: number;
  /** The full release string (`6.8.0-45-generic`). */
  release: string;
}

/**
 * Parses a kernel release (default `os.release()`, the running kernel) into numbers, for advice
 * that depends on the version. Meaningful on Linux; elsewhere `os.release()` is another OS's version.
 */
export function kernelVersion(release: string = os.release()): KernelVersion {
  if (typeof release !== 'string') throw invalidArgType('release', 'of type string', release);
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  if (!m) throw invalidArgValue('release', release, 'is not a kernel release (major.minor[.patch]...)');
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0), release };
}
