/**
 * TCP connection states of this network namespace or of this process, counted from the kernel's
 * own table (netlink sock_diag, in-process) with /proc/net/tcp{,6} as the fallback.
 * @module
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { isIP } from 'node:net';
import { constants, native, slots } from '../binding.js';
import { invalidArgType, invalidArgValue, kernelError, outOfRange } from '../errors.js';
import type { TcpState } from '../options.js';
import { rankCounts, topOf, type TopOfState } from './top.js';

/** Which sockets to count or list. Everything left out matches all. */
export interface ConnectionFilter {
  /** Only sockets owned by this process (their inodes are in /proc/self/fd). Default: the namespace. */
  process?: boolean;
  /** 4 or 6: only that address family. */
  family?: 4 | 6;
  /** Only these kernel states. */
  states?: TcpState[];
  /** Local port. */
  localPort?: number;
  /** Remote port. */
  remotePort?: number;
  /** A port on either side. */
  port?: number;
  /** Local address (`'127.0.0.1'`, `'::1'`): only sockets of that family bound to it. */
  localAddress?: string;
  /** Remote address: only sockets of that family connected to it. */
  remoteAddress?: string;
  /** Where to read: `'netlink'` (sock_diag), `'proc'` (/proc/net/tcp{,6}), or `'auto'` (netlink, else proc). */
  source?: 'auto' | 'netlink' | 'proc';
}

/** Counts by state, as `connectionStates` returns them. */
export interface ConnectionStates {
  /** Every kernel state name with its count (zeros included). */
  states: Record<Exclude<TcpState, 'UNKNOWN'>, number>;
  /** All sockets counted. */
  total: number;
  /** `'namespace'` (every socket of this network namespace) or `'process'`. */
  scope: 'namespace' | 'process';
  /** Where the counts came from. */
  source: 'netlink' | 'proc';
}

/** One TCP socket as the kernel lists it. */
export interface Connection {
  state: TcpState;
  family: 4 | 6;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** Socket inode (0 for TIME_WAIT and request sockets, which have no file). */
  inode: number;
  uid: number;
  /** Bytes in the receive queue (LISTEN: connections waiting for accept). */
  receiveQueue: number;
  /** Bytes in the send queue (LISTEN: the accept backlog). */
  sendQueue: number;
}

const stateNames = constants.tcpStates.slice(1) as Array<Exclude<TcpState, 'UNKNOWN'>>;
const stateNumber = new Map(constants.tcpStates.map((n, i) => [n, i]));
const { layout, families } = constants;

function checkPort(name: string, v: unknown): number {
  if (v === undefined) return -1;
  if (typeof v !== 'number') throw invalidArgType(name, 'of type number', v);
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw outOfRange(name, 'an integer >= 0 and <= 65535', v);
  return v;
}

interface Normalized {
  process: boolean;
  family: 0 | 4 | 6;
  mask: number;
  localPort: number;
  remotePort: number;
  port: number;
  local: ParsedAddress | undefined;
  remote: ParsedAddress | undefined;
  source: 'auto' | 'netlink' | 'proc';
}

interface ParsedAddress {
  family: 4 | 6;
  bytes: Uint8Array;
  /** inet_ntop's spelling, to compare with addresses read from /proc. */
  text: string;
}

/** Parses an IPv4 or IPv6 address (with `::` and a dotted IPv4 tail) into network-order bytes. */
function parseAddress(name: string, v: unknown): ParsedAddress | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgType(name, 'of type string', v);
  const family = isIP(v) as 0 | 4 | 6;
  if (family === 0) throw invalidArgValue(name, v, 'is not an IPv4 or IPv6 address');
  const bytes = new Uint8Array(16);
  if (family === 4) {
    v.split('.').forEach((part, i) => (bytes[i] = Number(part)));
  } else {
    let text = v.split('%')[0];
    const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
    if (tail) {
      const [a, b, c, d] = tail[1].split('.').map(Number);
      text = `${text.slice(0, -tail[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    }
    const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
    const left = head ? head.split(':') : [];
    const right = rest ? rest.split(':') : [];
    const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
    groups.forEach((g, i) => {
      const n = parseInt(g, 16);
      bytes[i * 2] = n >> 8;
      bytes[i * 2 + 1] = n & 0xff;
    });
  }
  return { family, bytes, text: address(bytes, family === 4) };
}

function normalize(filter: ConnectionFilter = {}): Normalized {
  if (typeof filter !== 'object' || filter === null) throw invalidArgType('filter', 'of type object', filter);
  const known = ['process', 'family', 'states', 'localPort', 'remotePort', 'port', 'localAddress', 'remoteAddress', 'source'];
  for (const key in filter) if (!known.includes(key)) throw invalidArgValue('filter', key, `has no option '${key}'; known: ${known.join(', ')}`);
  const { process: proc = false, family, states, source = 'auto' } = filter;
  if (typeof proc !== 'boolean') throw invalidArgType('filter.process', 'of type boolean', proc);
  if (family !== undefined && family !== 4 && family !== 6) throw invalidArgValue('filter.family', family, 'must be 4 or 6');
  if (!['auto', 'netlink', 'proc'].includes(source)) throw invalidArgValue('filter.source', source, "must be 'auto', 'netlink' or 'proc'");
  let mask = 0xffffffff | 0;
  if (states !== undefined) {
    if (!Array.isArray(states)) throw invalidArgType('filter.states', 'an array of state names', states);
    mask = 0;
    for (const s of states) {
      const n = stateNumber.get(s);
      if (n === undefined || n === 0) throw invalidArgValue('filter.states', s, `is not a TCP state; known: ${stateNames.join(', ')}`);
      mask |= 1 << n;
    }
  }
  return {
    process: proc,
    family: family ?? 0,
    mask,
    localPort: checkPort('filter.localPort', filter.localPort),
    remotePort: checkPort('filter.remotePort', filter.remotePort),
    port: checkPort('filter.port', filter.port),
    local: parseAddress('filter.localAddress', filter.localAddress),
    remote: parseAddress('filter.remoteAddress', filter.remoteAddress),
    source,
  };
}

/** Inodes of this process's sockets, sorted (the process view). */
function processInodes(): Uint32Array {
  const out: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed between readdir and readlink
    }
    if (target.startsWith('socket:[')) out.push(Number(target.slice(8, -1)));
  }
  return Uint32Array.from(out).sort();
}

function setDiagFilter(f: Normalized): void {
  slots[layout.diagStates] = f.mask;
  slots[layout.diagFamily] = f.family === 4 ? families.inet : f.family === 6 ? families.inet6 : 0;
  slots[layout.diagSport] = f.localPort;
  slots[layout.diagDport] = f.remotePort;
  slots[layout.diagAnyPort] = f.port;
  const familyOf = (a: ParsedAddress | undefined) => (a === undefined ? 0 : a.family === 4 ? families.inet : families.inet6);
  slots[layout.diagSrcFamily] = familyOf(f.local);
  slots[layout.diagDstFamily] = familyOf(f.remote);
  const bytes = new Uint8Array(slots.buffer, slots.byteOffset, slots.byteLength);
  bytes.set(f.local?.bytes ?? new Uint8Array(16), layout.diagSrc * 4);
  bytes.set(f.remote?.bytes ?? new Uint8Array(16), layout.diagDst * 4);
}

function useNetlink(f: Normalized): boolean {
  if (f.source === 'proc') return false;
  if (!constants.platform.sockDiag) {
    if (f.source === 'netlink') throw kernelError(-osConstants.errno.EPROTONOSUPPORT, 'socket', 'NETLINK_SOCK_DIAG');
    return false;
  }
  return true;
}

function emptyStates(): Record<Exclude<TcpState, 'UNKNOWN'>, number> {
  const states = {} as Record<Exclude<TcpState, 'UNKNOWN'>, number>;
  for (const name of stateNames) states[name] = 0;
  return states;
}

/**
 * Counts TCP sockets by kernel state, for this network namespace (default) or this process,
 * without spawning anything: netlink sock_diag in-process, /proc/net/tcp{,6} as the fallback.
 * State names are the kernel's (`'TIME_WAIT'`, `'CLOSE_WAIT'`); `ss` prints them with dashes.
 */
export function connectionStates(filter?: ConnectionFilter): ConnectionStates {
  const f = normalize(filter);
  const inodes = f.process ? processInodes() : undefined;
  const scope = f.process ? 'process' : 'namespace';
  const counted = viaNetlink(f, inodes, (i) => {
    const rc = i ? native.diagCount(i) : native.diagCount();
    return rc === 0 ? countsFrom((n) => slots[layout.diagCounts + n]) : rc;
  });
  if (counted) return { ...counted, scope, source: 'netlink' };
  return { ...countList(procConnections(f, inodes)), scope, source: 'proc' };
}

/**
 * Runs a sock_diag call with the filter set, when netlink is to be used. Returns undefined to
 * fall back to /proc (netlink unavailable or refused, and the caller did not insist on it).
 */
function viaNetlink<T>(f: Normalized, inodes: Uint32Array | undefined, dump: (inodes?: Uint32Array) => T | number): T | undefined {
  if (!useNetlink(f)) return undefined;
  setDiagFilter(f);
  const out = dump(inodes);
  if (typeof out !== 'number') return out;
  if (f.source === 'netlink') throw kernelError(out, 'sock_diag');
  return undefined;
}

/** Every state name with its count from `count(stateNumber)`, and the total. */
function countsFrom(count: (state: number) => number): { states: ConnectionStates['states']; total: number } {
  const states = emptyStates();
  let total = 0;
  for (let i = 1; i < constants.tcpStates.length; i++) {
    const n = count(i);
    states[constants.tcpStates[i] as Exclude<TcpState, 'UNKNOWN'>] = n;
    total += n;
  }
  return { states, total };
}

function countList(list: Connection[]): { states: ConnectionStates['states']; total: number } {
  const states = emptyStates();
  for (const c of list) if (c.state !== 'UNKNOWN') states[c.state]++;
  return { states, total: list.length };
}

/** Lists TCP sockets with addresses, ports, queues and inodes (same filter as {@link connectionStates}). */
export function listConnections(filter?: ConnectionFilter): Connection[] {
  const f = normalize(filter);
  const inodes = f.process ? processInodes() : undefined;
  const records = viaNetlink(f, inodes, (i) => (i ? native.diagList(i) : native.diagList()));
  return records ? decode(records) : procConnections(f, inodes);
}

/** {@link connectionStates} plus who holds the TIME_WAIT and CLOSE_WAIT sockets. */
export interface ConnectionReport extends ConnectionStates {
  /** Per state (TIME_WAIT, CLOSE_WAIT): the top peers, destinations and local ports. */
  top: Record<string, TopOfState>;
}

const ranked = ['TIME_WAIT', 'CLOSE_WAIT'] as const;

/**
 * Counts by state and ranks the peers, destinations and local ports holding TIME_WAIT and
 * CLOSE_WAIT sockets, from one dump. With netlink the ranking works on the packed records
 * (numeric keys, strings only for the top `limit`), so 50,000 sockets cost no object each.
 */
export function connectionReport(filter?: ConnectionFilter, limit = 5): ConnectionReport {
  const f = normalize(filter);
  const inodes = f.process ? processInodes() : undefined;
  const scope = f.process ? 'process' : 'namespace';
  const records = viaNetlink(f, inodes, (i) => (i ? native.diagList(i) : native.diagList()));
  if (records) return { ...reportFromRecords(records, limit), scope, source: 'netlink' };
  const list = procConnections(f, inodes);
  return { ...countList(list), scope, source: 'proc', top: topOf(list, limit, [...ranked]) };
}

function reportFromRecords(buf: ArrayBuffer, limit: number): Omit<ConnectionReport, 'scope' | 'source'> {
  const size = layout.diagEntryBytes;
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  const counts = new Uint32Array(16);
  const rankedStates = ranked.map((name) => stateNumber.get(name)!);
  const acc = ranked.map(() => ({ peers: new Map<number | string, number>(), dests: new Map<number | string, number>(), ports: new Uint32Array(65536) }));
  const bump = (m: Map<number | string, number>, k: number | string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (let off = 0; off + size <= buf.byteLength; off += size) {
    const st = bytes[off + 1];
    counts[st]++;
    const r = rankedStates.indexOf(st);
    if (r < 0) continue;
    const a = acc[r];
    const dport = view.getUint16(off + 4, true);
    a.ports[view.getUint16(off + 2, true)]++;
    if (bytes[off] === families.inet) {
      const peer = view.getUint32(off + 40, false); // network order: a.b.c.d → one number
      bump(a.peers, peer);
      bump(a.dests, peer * 65536 + dport);
    } else {
      const peer = address(bytes.subarray(off + 40, off + 56), false);
      bump(a.peers, peer);
      bump(a.dests, `[${peer}]:${dport}`);
    }
  }
  const v4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  const top: Record<string, TopOfState> = {};
  ranked.forEach((name, r) => {
    const a = acc[r];
    const ports = new Map<number, number>();
    a.ports.forEach((n, port) => n > 0 && ports.set(port, n));
    top[name] = {
      peers: rankCounts(a.peers, limit, (k) => (typeof k === 'number' ? v4(k) : k)),
      destinations: rankCounts(a.dests, limit, (k) => (typeof k === 'number' ? `${v4(Math.floor(k / 65536))}:${k % 65536}` : k)),
      localPorts: rankCounts(ports, limit, String),
    };
  });
  return { ...countsFrom((n) => counts[n]), top };
}

function address(bytes: Uint8Array, v4: boolean): string {
  if (v4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  // Collapse the longest run of zero groups, as inet_ntop does.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function decode(buf: ArrayBuffer): Connection[] {
  const size = layout.diagEntryBytes;
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  const out: Connection[] = [];
  for (let off = 0; off + size <= buf.byteLength; off += size) {
    const v4 = view.getUint8(off) === families.inet;
    out.push({
      family: v4 ? 4 : 6,
      state: (constants.tcpStates[view.getUint8(off + 1)] ?? 'UNKNOWN') as TcpState,
      localPort: view.getUint16(off + 2, true),
      remotePort: view.getUint16(off + 4, true),
      inode: view.getUint32(off + 8, true),
      uid: view.getUint32(off + 12, true),
      receiveQueue: view.getUint32(off + 16, true),
      sendQueue: view.getUint32(off + 20, true),
      localAddress: address(bytes.subarray(off + 24, off + 40), v4),
      remoteAddress: address(bytes.subarray(off + 40, off + 56), v4),
    });
  }
  return out;
}

/** /proc/net/tcp{,6} hold addresses as host-order 32-bit words in hex. */
function procAddress(hex: string, v4: boolean): string {
  const bytes = new Uint8Array(16);
  for (let w = 0; w < hex.length / 8; w++) {
    const word = parseInt(hex.slice(w * 8, w * 8 + 8), 16);
    // Each word is printed as the host-order u32 of 4 network-order bytes (little-endian hosts).
    bytes[w * 4] = word & 0xff;
    bytes[w * 4 + 1] = (word >>> 8) & 0xff;
    bytes[w * 4 + 2] = (word >>> 16) & 0xff;
    bytes[w * 4 + 3] = (word >>> 24) & 0xff;
  }
  return address(bytes, v4);
}

function procConnections(f: Normalized, inodes: Uint32Array | undefined): Connection[] {
  const wanted = inodes ? new Set(inodes) : undefined;
  const out: Connection[] = [];
  const files: Array<[string, 4 | 6]> = [];
  if (f.family !== 6) files.push(['/proc/net/tcp', 4]);
  if (f.family !== 4) files.push(['/proc/net/tcp6', 6]);
  for (const [file, family] of files) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch {
      continue; // no IPv6 in this kernel
    }
    const lines = text.split('\n');
    for (let i = 1; i < lines.length; i++) {
      const cols = lines[i].trim().split(/\s+/);
      if (cols.length < 10) continue;
      const st = parseInt(cols[3], 16);
      if (((f.mask >>> st) & 1) === 0) continue;
      const [la, lp] = cols[1].split(':');
      const [ra, rp] = cols[2].split(':');
      const localPort = parseInt(lp, 16);
      const remotePort = parseInt(rp, 16);
      if (f.localPort >= 0 && localPort !== f.localPort) continue;
      if (f.remotePort >= 0 && remotePort !== f.remotePort) continue;
      if (f.port >= 0 && localPort !== f.port && remotePort !== f.port) continue;
      const inode = Number(cols[9]);
      if (wanted && !wanted.has(inode)) continue;
      const localAddress = procAddress(la, family === 4);
      const remoteAddress = procAddress(ra, family === 4);
      if (f.local && (f.local.family !== family || f.local.text !== localAddress)) continue;
      if (f.remote && (f.remote.family !== family || f.remote.text !== remoteAddress)) continue;
      const [tx, rx] = cols[4].split(':');
      out.push({
        family,
        state: (constants.tcpStates[st] ?? 'UNKNOWN') as TcpState,
        localAddress,
        localPort,
        remoteAddress,
        remotePort,
        inode,
        uid: Number(cols[7]),
        receiveQueue: parseInt(rx, 16),
        sendQueue: parseInt(tx, 16),
      });
    }
  }
  return out;
}
