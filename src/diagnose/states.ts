/**
 * TCP connection states of a network namespace or of one process, counted from the kernel's own
 * table (netlink sock_diag, in-process) with /proc/net/tcp{,6} as the fallback.
 * @module
 */
import { closeSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { addon, constants, native, slots } from '../binding.js';
import { invalidArgType, invalidArgValue, kernelError, outOfRange, readArgument, type KernelError } from '../errors.js';
import type { TcpState } from '../tables.js';
import { destination, formatAddress, parseAddress, type ParsedAddress } from './address.js';
import { topOf, type TopEntry, type TopOfState } from './top.js';

/** Which sockets to count or list. Everything left out matches all. */
export interface ConnectionFilter {
  /**
   * Only the sockets of this process (their inodes are in /proc/PID/fd), counted in the process's
   * own network namespace (/proc/PID/ns/net) when it is not the caller's. Reading another user's
   * process needs root, as `ss -p` does.
   */
  pid?: number;
  /** Only sockets owned by this process: `pid: process.pid`. Default: the whole namespace. */
  process?: boolean;
  /**
   * Another network namespace: a name as `ip netns` names them (`/run/netns/NAME`), or the path of
   * a namespace file (`/proc/PID/ns/net`, a container's). Entered by a short-lived thread with
   * setns(2) (needs CAP_SYS_ADMIN); the calling thread never changes namespace.
   */
  netns?: string;
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
  /** `'namespace'` (every socket of the network namespace) or `'process'` (one process's). */
  scope: 'namespace' | 'process';
  /** Where the counts came from. */
  source: 'netlink' | 'proc';
  /** The process whose sockets were counted (scope `'process'`). */
  pid?: number;
  /** The network namespace counted when it is not the caller's: the name or path given, or `/proc/PID/ns/net`. */
  netns?: string;
}

/** One TCP socket as the kernel lists it. */
export interface Connection {
  state: TcpState;
  family: 4 | 6;
  /** As inet_ntop writes it: `'127.0.0.1'`, `'::1'`, `'::ffff:127.0.0.1'` (an IPv4 peer of an IPv6 socket). */
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
const stateNumber = new Map<string, number>(constants.tcpStates.map((n, i) => [n, i]));
const { layout, families } = constants;
/** PID_MAX_LIMIT: no Linux pid is larger. */
const PID_MAX = 4_194_304;
/** The most rows a ranking may ask for (one per local port). */
export const TOP_LIMIT_MAX = 65_535;

function checkPort(name: string, v: unknown): number {
  if (v === undefined) return -1;
  if (typeof v !== 'number') throw invalidArgType(name, 'of type number', v);
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw outOfRange(name, 'an integer >= 0 and <= 65535', v);
  return v;
}

interface Normalized {
  pid: number | undefined;
  self: boolean;
  netns: string | undefined;
  family: 0 | 4 | 6;
  mask: number;
  localPort: number;
  remotePort: number;
  port: number;
  local: ParsedAddress | undefined;
  remote: ParsedAddress | undefined;
  source: 'auto' | 'netlink' | 'proc';
}

const knownFilter = ['pid', 'process', 'netns', 'family', 'states', 'localPort', 'remotePort', 'port', 'localAddress', 'remoteAddress', 'source'];

function checkAddress(name: string, v: unknown): ParsedAddress | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgType(name, 'of type string', v);
  const parsed = parseAddress(v);
  if (parsed === undefined) throw invalidArgValue(name, v, 'is not an IPv4 or IPv6 address');
  return parsed;
}

/** {@link readFilter}, with what the caller's code throws while the filter is read (getters, Proxy traps) as a coded error. */
function normalize(filter: unknown): Normalized {
  return readArgument('filter', filter, () => readFilter(filter));
}

function readFilter(filter: unknown): Normalized {
  if (filter === undefined) filter = {};
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) throw invalidArgType('filter', 'of type object', filter);
  // Own enumerable properties, each read exactly once: a getter or an inherited property cannot
  // change the filter between its check and its use.
  const o: Record<string, unknown> = { ...filter };
  for (const key of Object.keys(o)) {
    if (!knownFilter.includes(key)) throw invalidArgValue('filter', key, `has no option '${key}'; known: ${knownFilter.join(', ')}`);
  }
  const { pid, process: self = false, netns, family, states, source = 'auto' } = o;
  if (typeof self !== 'boolean') throw invalidArgType('filter.process', 'of type boolean', self);
  if (pid !== undefined) {
    if (typeof pid !== 'number') throw invalidArgType('filter.pid', 'of type number', pid);
    if (!Number.isInteger(pid) || pid < 1 || pid > PID_MAX) throw outOfRange('filter.pid', `an integer >= 1 and <= ${PID_MAX}`, pid);
    if (self) throw invalidArgValue('filter.process', self, "cannot be combined with 'pid' (process: true means pid: process.pid)");
  }
  if (netns !== undefined) {
    if (typeof netns !== 'string') throw invalidArgType('filter.netns', 'of type string', netns);
    if (netns === '' || netns.includes('\0') || netns === '.' || netns === '..' || (netns.includes('/') && !netns.startsWith('/'))) {
      throw invalidArgValue('filter.netns', netns, 'must be a name under /run/netns or an absolute path to a network namespace file');
    }
  }
  if (family !== undefined && family !== 4 && family !== 6) throw invalidArgValue('filter.family', family, 'must be 4 or 6');
  if (typeof source !== 'string' || !['auto', 'netlink', 'proc'].includes(source)) {
    throw invalidArgValue('filter.source', source, "must be 'auto', 'netlink' or 'proc'");
  }
  let mask = 0xffffffff | 0;
  if (states !== undefined) {
    if (!Array.isArray(states)) throw invalidArgType('filter.states', 'an array of state names', states);
    if (states.length === 0) throw invalidArgValue('filter.states', states, 'must name at least one state');
    mask = 0;
    for (const s of states) {
      const n = typeof s === 'string' ? stateNumber.get(s) : undefined;
      if (n === undefined || n === 0) throw invalidArgValue('filter.states', s, `is not a TCP state; known: ${stateNames.join(', ')}`);
      mask |= 1 << n;
    }
  }
  return {
    pid: self ? process.pid : (pid as number | undefined),
    self,
    netns: netns as string | undefined,
    family: (family ?? 0) as 0 | 4 | 6,
    mask,
    localPort: checkPort('filter.localPort', o.localPort),
    remotePort: checkPort('filter.remotePort', o.remotePort),
    port: checkPort('filter.port', o.port),
    local: checkAddress('filter.localAddress', o.localAddress),
    remote: checkAddress('filter.remoteAddress', o.remoteAddress),
    source: source as Normalized['source'],
  };
}

/** An error about a file or namespace, shaped like Node's fs errors (`code`, `errno`, `syscall`, `path`). */
function pathError(errno: number, syscall: string, path: string): KernelError & { path: string } {
  const err = kernelError(errno, syscall, path) as KernelError & { path: string };
  delete err.option;
  err.path = path;
  return err;
}

/** Kernel error text, as kernelError writes it: `EPERM: operation not permitted`. */
function errnoText(errno: number): string {
  const { code, message } = kernelError(errno, '');
  return `${code}${message.slice(message.indexOf(code) + code.length)}`;
}

/**
 * The error of a network namespace that could not be entered, in words that say what to do: a name
 * that does not exist, root needed, a file that is not a namespace. Shaped like Node's fs errors
 * (`code`, `errno`, `syscall`, `path`).
 */
function namespaceError(errno: number, given: string, path: string): KernelError & { path: string } {
  const { EACCES, EINVAL, ENOENT, EPERM } = osConstants.errno;
  // open(2) finds the file; setns(2) is refused for lack of CAP_SYS_ADMIN (EPERM) or for a file
  // that is no namespace (EINVAL, also what a non-regular file such as a FIFO gets).
  const syscall = errno === -EPERM || errno === -EINVAL ? 'setns' : 'open';
  const err = pathError(errno, syscall, path);
  const why = `${syscall} ${errnoText(errno)}`;
  if (errno === -ENOENT) {
    err.message = given.startsWith('/')
      ? `no network namespace file ${path} (${why})`
      : `no network namespace named '${given}': ${path} does not exist; \`ip netns list\` names them (${why})`;
  } else if (errno === -EPERM || errno === -EACCES) {
    err.message = `entering network namespace ${given} needs root (CAP_SYS_ADMIN) (${why})`;
  } else if (errno === -EINVAL) {
    err.message = `${path} is not a network namespace file: give a name under /run/netns or a path such as /proc/PID/ns/net (${why})`;
  }
  return err;
}

/** What one call reads: the scope, the process's socket inodes, and fds opened in another namespace. */
interface Target {
  scope: 'namespace' | 'process';
  pid?: number;
  netns?: string;
  inodes?: Uint32Array;
  /** [sock_diag socket, /proc/net/tcp, /proc/net/tcp6] of another namespace (-1: absent). */
  fds?: Int32Array;
}

function openTarget(f: Normalized): Target {
  const t: Target = { scope: f.pid === undefined ? 'namespace' : 'process' };
  let netnsPath: string | undefined;
  if (f.netns !== undefined) {
    t.netns = f.netns;
    netnsPath = f.netns.startsWith('/') ? f.netns : `/run/netns/${f.netns}`;
  }
  if (f.pid !== undefined) {
    t.pid = f.pid;
    const inodes = native.socketInodes(f.self ? 0 : f.pid);
    if (typeof inodes === 'number') {
      const err = pathError(inodes === -osConstants.errno.ENOENT ? -osConstants.errno.ESRCH : inodes, 'open', `/proc/${f.pid}/fd`);
      if (inodes === -osConstants.errno.EACCES || inodes === -osConstants.errno.EPERM) {
        err.message = `reading the sockets of process ${f.pid} needs root, or to be its user (${err.message})`;
      }
      throw err;
    }
    t.inodes = inodes;
    if (netnsPath === undefined && !f.self) {
      // The sockets of a process live in its network namespace, which may not be this one.
      const theirs = `/proc/${f.pid}/ns/net`;
      let other: boolean;
      try {
        other = readlinkSync(theirs) !== readlinkSync('/proc/self/ns/net');
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw pathError(e.errno ?? -osConstants.errno.EIO, 'readlink', theirs);
      }
      if (other) t.netns = netnsPath = theirs;
    }
  }
  if (netnsPath !== undefined) {
    const fds = native.netnsOpen(netnsPath);
    if (typeof fds === 'number') throw namespaceError(fds, t.netns!, netnsPath);
    t.fds = fds;
  }
  return t;
}

function closeTarget(t: Target): void {
  if (t.fds) for (const fd of t.fds) if (fd >= 0) closeSync(fd);
}

function withTarget<T>(f: Normalized, body: (t: Target) => T): T {
  const t = openTarget(f);
  try {
    return body(t);
  } finally {
    closeTarget(t);
  }
}

/** The result's shape, keys in one order: counts, scope, source, then the process and namespace. */
function result(counted: { states: ConnectionStates['states']; total: number }, t: Target, source: ConnectionStates['source']): ConnectionStates {
  const out: ConnectionStates = { states: counted.states, total: counted.total, scope: t.scope, source };
  if (t.pid !== undefined) out.pid = t.pid;
  if (t.netns !== undefined) out.netns = t.netns;
  return out;
}

/** native/diag.h's DIAG_WITH_LISTENERS, or'ed into the family slot: every listener of the namespace is visited too, as context. */
const DIAG_WITH_LISTENERS = 0x100;

function setDiagFilter(f: Normalized, t: Target, listeners = false): void {
  slots[layout.diagStates] = f.mask;
  slots[layout.diagFamily] = (f.family === 4 ? families.inet : f.family === 6 ? families.inet6 : 0) | (listeners ? DIAG_WITH_LISTENERS : 0);
  slots[layout.diagSport] = f.localPort;
  slots[layout.diagDport] = f.remotePort;
  slots[layout.diagAnyPort] = f.port;
  slots[layout.diagNetlink] = t.fds ? t.fds[0] : -1;
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

/**
 * Runs a sock_diag call with the filter set, when netlink is to be used. Returns undefined to
 * fall back to /proc (netlink unavailable or refused, and the caller did not insist on it).
 */
function viaNetlink<T>(f: Normalized, t: Target, dump: () => T | number, listeners = false): T | undefined {
  if (!useNetlink(f)) return undefined;
  setDiagFilter(f, t, listeners);
  const out = dump();
  if (typeof out !== 'number') return out;
  if (f.source === 'netlink') throw kernelError(out, 'sock_diag');
  return undefined;
}

function emptyStates(): Record<Exclude<TcpState, 'UNKNOWN'>, number> {
  const states = {} as Record<Exclude<TcpState, 'UNKNOWN'>, number>;
  for (const name of stateNames) states[name] = 0;
  return states;
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

/**
 * Counts TCP sockets by kernel state, for this network namespace (default), another one
 * (`netns`), or one process (`pid`, `process`), without spawning anything: netlink sock_diag
 * in-process (IPv4 and IPv6 in one walk of the kernel's table), /proc/net/tcp{,6} as the fallback.
 * State names are the kernel's (`'TIME_WAIT'`, `'CLOSE_WAIT'`); `ss` prints them with dashes.
 *
 * Synchronous: at 200,000 sockets the kernel's dump takes ~0.1 s of this thread. The Prometheus
 * collector counts on a worker thread instead.
 */
export function connectionStates(filter?: ConnectionFilter): ConnectionStates {
  const f = normalize(filter);
  return withTarget(f, (t) => {
    const counted = viaNetlink(f, t, () => {
      const rc = native.diagCount(t.inodes);
      return rc === 0 ? countsFrom((n) => slots[layout.diagCounts + n]) : rc;
    });
    return counted ? result(counted, t, 'netlink') : result(countList(procConnections(f, t)), t, 'proc');
  });
}

/** Lists TCP sockets with addresses, ports, queues and inodes (same filter as {@link connectionStates}). */
export function listConnections(filter?: ConnectionFilter): Connection[] {
  const f = normalize(filter);
  return withTarget(f, (t) => {
    const records = viaNetlink(f, t, () => native.diagList(t.inodes));
    return records ? decode(records) : procConnections(f, t);
  });
}

/** {@link connectionStates} plus who holds the TIME_WAIT and CLOSE_WAIT sockets. */
export interface ConnectionReport extends ConnectionStates {
  /** Per state (TIME_WAIT, CLOSE_WAIT): the top peers, destinations and local ports, and their owners. */
  top: Record<string, TopOfState>;
}

/** States ranked by {@link connectionReport}. */
const ranked = ['TIME_WAIT', 'CLOSE_WAIT'] as const;
/** Of those, the ones a process holds: TIME_WAIT sockets belong to the kernel after close(). */
const owned = new Set<string>(['CLOSE_WAIT']);
const maskOf = (names: Iterable<string>) => [...names].reduce((m, n) => m | (1 << stateNumber.get(n)!), 0);

function checkLimit(limit: unknown): number {
  if (limit === undefined) return 5;
  if (typeof limit !== 'number') throw invalidArgType('limit', 'of type number', limit);
  if (!Number.isInteger(limit) || limit < 0 || limit > TOP_LIMIT_MAX) throw outOfRange('limit', `an integer >= 0 and <= ${TOP_LIMIT_MAX}`, limit);
  return limit;
}

/**
 * Counts by state and ranks the peers, destinations and local ports holding TIME_WAIT and
 * CLOSE_WAIT sockets, from one dump; for CLOSE_WAIT each ranked group also names the processes
 * holding its sockets (pid and command, as `ss -p` shows them), and `holders` names every process
 * holding any. TIME_WAIT sockets have no owner: the kernel keeps them after the process closed
 * them. With netlink, counting and ranking happen in one pass in native code, so 200,000 sockets
 * cost no JavaScript object each.
 *
 * Destinations rank the connections this side opened, local ports the connections a listener of
 * the namespace accepted (a local port that any listening socket of the namespace has, whatever
 * the filter): an accepted connection's remote port is the client's ephemeral port, and an opened
 * connection's local port an ephemeral port of its own, so neither would say anything.
 *
 * A socket whose holder cannot be looked up (held by another user's process, whose /proc/PID/fd
 * only root may read) is counted in `unreadable`, not reported as held by no process.
 *
 * @param limit rows per ranking, an integer from 0 to 65535 (default 5; 0 ranks nothing)
 */
export function connectionReport(filter?: ConnectionFilter, limit?: number): ConnectionReport {
  const f = normalize(filter);
  const rows = checkLimit(limit);
  return withTarget(f, (t) => {
    const keep = rows > 0 ? maskOf(owned) : 0;
    const out = viaNetlink(f, t, () => native.diagReport(rows, rows > 0 ? maskOf(ranked) : 0, keep, t.inodes), rows > 0);
    let report: ConnectionReport;
    let kept: Connection[];
    let listening: ReadonlySet<number>;
    if (out) {
      const fromRows = topFromRows(out[0]);
      listening = fromRows.listening;
      report = {
        ...result(
          countsFrom((n) => slots[layout.diagCounts + n]),
          t,
          'netlink',
        ),
        top: rows > 0 ? fromRows.top : {},
      };
      kept = decode(out[1]);
    } else {
      const list = procConnections(f, t);
      listening = rows > 0 ? procListening(f, t) : new Set();
      report = { ...result(countList(list), t, 'proc'), top: rows > 0 ? topOf(list, rows, [...ranked], listening) : {} };
      kept = list.filter((c) => owned.has(c.state));
    }
    for (const [state, top] of Object.entries(report.top)) {
      top.owned = owned.has(state);
      if (top.owned)
        attachOwners(
          top,
          kept.filter((c) => c.state === state),
          listening,
        );
    }
    return report;
  });
}

/** The local ports of every listening socket of the target's namespace, from /proc (whatever the filter says). */
function procListening(f: Normalized, t: Target): Set<number> {
  const all: Normalized = {
    ...f,
    pid: undefined,
    self: false,
    mask: 1 << stateNumber.get('LISTEN')!,
    localPort: -1,
    remotePort: -1,
    port: -1,
    local: undefined,
    remote: undefined,
  };
  return new Set(procConnections(all, { ...t, inodes: undefined }).map((c) => c.localPort));
}

const kinds = ['peers', 'destinations', 'localPorts', 'listening'] as const;

function topFromRows(buf: ArrayBuffer): { top: Record<string, TopOfState>; listening: Set<number> } {
  const top: Record<string, TopOfState> = {};
  const listening = new Set<number>();
  for (const name of ranked) top[name] = { peers: [], destinations: [], localPorts: [], owned: owned.has(name) };
  const size = layout.topRowBytes;
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  for (let off = 0; off + size <= buf.byteLength; off += size) {
    const state = constants.tcpStates[bytes[off]];
    const kind = kinds[bytes[off + 1]];
    const port = view.getUint16(off + 4, true);
    const count = view.getUint32(off + 8, true);
    if (kind === 'listening') {
      listening.add(port);
      continue;
    }
    const addr = kind === 'localPorts' ? '' : formatAddress(bytes.subarray(off + 12, off + 28), bytes[off + 2] === families.inet);
    const key = kind === 'peers' ? addr : kind === 'destinations' ? destination(addr, port) : String(port);
    top[state][kind].push({ key, count });
  }
  return { top, listening };
}

/** (inode, pid) pairs of the processes holding `inodes`, and (0, pid) for a process whose fds cannot be read; a negative errno when /proc cannot be. */
function socketOwners(inodes: Uint32Array): Uint32Array | number {
  if (addon.error === undefined) return native.socketOwners(inodes);
  // Without the addon: the same walk of /proc/PID/fd, in JavaScript.
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch (err) {
    return (err as NodeJS.ErrnoException).errno ?? -osConstants.errno.EIO;
  }
  const wanted = new Set(inodes);
  const out: number[] = [];
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') out.push(0, Number(pid));
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue; // closed since the directory was read
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && wanted.has(Number(m[1]))) out.push(Number(m[1]), Number(pid));
    }
  }
  return Uint32Array.from(out);
}

/** This process's effective uid (0: root, which reads every process's fds). */
const euid = () => process.geteuid?.() ?? 0;

/**
 * Names the processes holding the sockets of each ranked group (as `ss -p` finds them) and of the
 * whole state (`holders`), splits the state by side, and counts the sockets whose holder could not
 * be looked up: none was found, some processes' fds could not be read, and the socket belongs to
 * another user (a process of this user can always be read).
 */
function attachOwners(top: TopOfState, conns: Connection[], listening: ReadonlySet<number>): void {
  const accepted = conns.filter((c) => listening.has(c.localPort)).length;
  top.sides = { accepted, opened: conns.length - accepted };
  const all = [...top.peers, ...top.destinations, ...top.localPorts];
  if (conns.length === 0) {
    top.holders = [];
    return;
  }
  const inodes = Uint32Array.from(new Set(conns.map((c) => c.inode).filter((i) => i > 0))).sort();
  const pairs = socketOwners(inodes);
  if (typeof pairs === 'number') {
    top.ownersError = kernelError(pairs, 'opendir', '/proc').message;
    top.holders = [];
    for (const e of all) e.owners = [];
    return;
  }
  const pidsOf = new Map<number, number[]>();
  let someUnreadable = false;
  for (let i = 0; i < pairs.length; i += 2) {
    if (pairs[i] === 0) {
      someUnreadable = true;
      continue;
    }
    const list = pidsOf.get(pairs[i]) ?? [];
    list.push(pairs[i + 1]);
    pidsOf.set(pairs[i], list);
  }
  const me = euid();
  const unreadable = (c: Connection) => someUnreadable && me !== 0 && c.uid !== me && (pidsOf.get(c.inode)?.length ?? 0) === 0;
  const commands = new Map<number, string>();
  const command = (pid: number) => {
    if (!commands.has(pid)) {
      let name = '?';
      try {
        name = readFileSync(`/proc/${pid}/comm`, 'utf8').trimEnd();
      } catch {
        // ended since its fds were read: the pid still says who it was
      }
      commands.set(pid, name);
    }
    return commands.get(pid)!;
  };
  // The key of a socket in each ranking, or undefined where its side keeps it out of that ranking.
  const keyOf = {
    peers: (c: Connection) => c.remoteAddress,
    destinations: (c: Connection) => (listening.has(c.localPort) ? undefined : destination(c.remoteAddress, c.remotePort)),
    localPorts: (c: Connection) => (listening.has(c.localPort) ? String(c.localPort) : undefined),
  };
  /** Who holds `group` (most sockets first), and how many of its sockets could not be looked up. */
  const owners = (group: Connection[]) => {
    const sockets = new Map<number, number>();
    let cannot = 0;
    for (const c of group) {
      for (const pid of pidsOf.get(c.inode) ?? []) sockets.set(pid, (sockets.get(pid) ?? 0) + 1);
      if (unreadable(c)) cannot++;
    }
    const list = [...sockets].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([pid, n]) => ({ pid, command: command(pid), sockets: n }));
    return { list, cannot };
  };
  for (const kind of ['peers', 'destinations', 'localPorts'] as const) {
    for (const entry of top[kind]) {
      const { list, cannot } = owners(conns.filter((c) => keyOf[kind](c) === entry.key));
      entry.owners = list;
      if (cannot > 0) entry.unreadable = cannot;
    }
  }
  const whole = owners(conns);
  top.holders = whole.list;
  if (whole.cannot > 0) top.unreadable = whole.cannot;
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
      localAddress: formatAddress(bytes.subarray(off + 24, off + 40), v4),
      remoteAddress: formatAddress(bytes.subarray(off + 40, off + 56), v4),
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
  return formatAddress(bytes, v4);
}

/**
 * Reads /proc/net/tcp (and tcp6, absent without IPv6) of the caller's namespace or, through the
 * fds opened there, of another one. Any other failure to read is thrown with the path: counting
 * what could be read as if it were everything would report too few sockets.
 */
function procText(path: string, fd: number | undefined, family: 4 | 6): string | undefined {
  try {
    if (fd === undefined) return readFileSync(path, 'latin1');
    if (fd < 0) throw pathError(-osConstants.errno.ENOENT, 'open', path);
    return readFromStart(fd);
  } catch (err) {
    if (family === 6 && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // no IPv6 in this kernel
    throw err;
  }
}

/** The whole of an open /proc file, read from offset 0 (one call may read a namespace's file twice: its sockets, then its listeners). */
function readFromStart(fd: number): string {
  const chunks: Buffer[] = [];
  let position = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(64 * 1024);
    const n = readSync(fd, chunk, 0, chunk.length, position);
    if (n === 0) break;
    chunks.push(chunk.subarray(0, n));
    position += n;
  }
  return Buffer.concat(chunks).toString('latin1');
}

function procConnections(f: Normalized, t: Target): Connection[] {
  const wanted = t.inodes ? new Set(t.inodes) : undefined;
  const out: Connection[] = [];
  const files: Array<[string, 4 | 6, number | undefined]> = [];
  const where = t.netns === undefined ? '' : ` of network namespace ${t.netns}`;
  if (f.family !== 6) files.push([`/proc/net/tcp${where}`, 4, t.fds?.[1]]);
  if (f.family !== 4) files.push([`/proc/net/tcp6${where}`, 6, t.fds?.[2]]);
  for (const [file, family, fd] of files) {
    const text = procText(file, fd, family);
    if (text === undefined) continue;
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

/** Counts of this network namespace and of this process, from one scrape. */
export interface ScrapeStates {
  namespace: ConnectionStates;
  process: ConnectionStates;
}

let scraping: Promise<ScrapeStates> | undefined;

/**
 * Counts this network namespace and this process by state from one sock_diag dump made on a
 * worker thread (the event loop keeps running), with this process's socket inodes read there too.
 * Callers while a dump is in flight share it. Where netlink is unavailable it falls back to
 * {@link connectionStates} over /proc (synchronous). Used by the Prometheus collector.
 */
export function scrapeStates(): Promise<ScrapeStates> {
  scraping ??= (async () => {
    try {
      const counts = constants.platform.sockDiag ? await native.diagScrape(true) : -osConstants.errno.EPROTONOSUPPORT;
      if (typeof counts === 'number') {
        return { namespace: connectionStates({ source: 'proc' }), process: connectionStates({ process: true, source: 'proc' }) };
      }
      return {
        namespace: { ...countsFrom((n) => counts[n]), scope: 'namespace', source: 'netlink' },
        process: { ...countsFrom((n) => counts[16 + n]), scope: 'process', source: 'netlink', pid: process.pid },
      };
    } finally {
      scraping = undefined;
    }
  })();
  return scraping;
}

export type { TopEntry, TopOfState };
