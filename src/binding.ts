/**
 * The one module that loads the native addon and types it. Nothing else in socktune calls
 * node-gyp-build or the addon directly. Loading it never throws: without an addon, a stub whose
 * calls throw the coded reason takes its place.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { codes, socktuneError } from './errors.js';
import { layoutNames, optionNames, tcpStateNames, type Layout, type TcpState, type tcpInfoFieldNames } from './tables.js';

const require = createRequire(import.meta.url);

/** Status codes and raw calls of the native core (see native/binding.cc). */
export interface NativeBinding {
  init(scratch: ArrayBuffer): void;
  /**
   * The socket functions take the fd in `slots[layout.fd]` and write 0, a negative errno, or a
   * status to `slots[layout.result]`. With `slots[layout.verify]` set, each first checks that the
   * fd is a TCP socket of IPv4/IPv6 (SO_TYPE/SO_DOMAIN/SO_PROTOCOL).
   *
   * `apply` sets `slots[layout.count]` options in order, stopping at the first the kernel refuses
   * (`slots[layout.applied]` is how many were set before it). With `slots[layout.keepShorter]` set
   * it first leaves out the keepalive options when the socket already has a shorter keepalive
   * budget, and TCP_USER_TIMEOUT when its own is shorter (`slots[layout.kept]`: their bit mask).
   */
  apply(): void;
  read(): void;
  tcpInfo(): void;
  queues(): void;
  cookie(): void;
  /** The kernel state number (tcpi_state) into `slots[layout.state]`. */
  state(): void;
  /**
   * SIOCOUTQ into `slots[layout.queues]`; when 0, also SO_LINGER {on, 0} (the next close sends
   * RST), unless the peer has closed first (CLOSE_WAIT): then `slots[layout.queues + 1]` is 1 and
   * nothing is changed.
   */
  lingerIfDrained(): void;
  /**
   * The socket of this process with these addresses, where the runtime hands out no fd (Node's TCP
   * handles on Windows): `candidate` (-1 for none) is tried first. No remote: a listening socket.
   * Returns the socket, or a negative errno (-ENOENT: none matches; -ENOTSUP: fds are handed out).
   */
  locate(localAddress: string, localPort: number, remoteAddress: string | undefined, remotePort: number | undefined, candidate: number): number;
  /** Nothing but the TCP check (with `slots[layout.verify]` set): is the fd TCP over IPv4/IPv6. */
  check(): void;
  /** SO_ERROR into `slots[layout.queues]` (a positive errno, 0 for none); reading it clears it. */
  socketError(): void;
  /**
   * A new TCP socket for the stages before Node: IP version `slots[layout.newFamily]` (4 or 6),
   * IPV6_V6ONLY from `slots[layout.bindV6Only]` (-1 untouched), the `slots[layout.count]` options,
   * then bound to `slots[layout.bindAddr]`:`slots[layout.bindPort]` unless that port is -1. The fd
   * goes to `slots[layout.newFd]`, 0 or a negative errno to `slots[layout.result]`. The binding
   * holds the fd until {@link NativeBinding.releaseSocket}.
   */
  createSocket(): void;
  /** The fd `createSocket` made is Node's now (`true`: nothing happens) or is closed (`false`). */
  releaseSocket(handedOver: boolean): void;
  /**
   * The fd in `slots[layout.fd]` joins this environment's watch set (native/watch.h: the peer's FIN
   * or RST reported once, edge-triggered) under the key `hi:lo`; 0 or -errno into `slots[layout.result]`.
   */
  watchAdd(hi: number, lo: number): void;
  /** The keys (hi, lo pairs) of watched sockets whose peer's FIN or RST came since the last call; the count, or -errno. */
  watchDrain(keys: Uint32Array): number;
  /** Counts TCP sockets by kernel state (netlink sock_diag) into `slots[layout.diagCounts + state]`. */
  diagCount(inodes?: Uint32Array): number;
  /** Lists TCP sockets (netlink sock_diag) as packed records, or a negative errno. */
  diagList(inodes?: Uint32Array): ArrayBuffer | number;
  /**
   * Counts by state into `slots[layout.diagCounts + state]` and ranks the states of the `ranked`
   * mask by peer, destination and local port, from one dump: [rankings (TopRow records), the
   * records of the states of the `keep` mask], or a negative errno.
   */
  diagReport(limit: number, ranked: number, keep: number, inodes?: Uint32Array): [ArrayBuffer, ArrayBuffer] | number;
  /** One dump on a worker thread: namespace counts by state, then this process's (Uint32Array(32)), or a negative errno. */
  diagScrape(process: boolean): Promise<Uint32Array | number>;
  /** Sorted socket inodes of /proc/<pid>/fd (0: this process), or a negative errno. */
  socketInodes(pid: number): Uint32Array | number;
  /** (inode, pid) pairs of every process holding one of the sorted `inodes`, or a negative errno. */
  socketOwners(inodes: Uint32Array): Uint32Array | number;
  /** [sock_diag socket, /proc/net/tcp, /proc/net/tcp6] fds opened in the network namespace at `path`, or a negative errno. */
  netnsOpen(path: string): Int32Array | number;
  constants: {
    options: Array<{ id: number; name: (typeof optionNames)[number]; supported: boolean; level: number; optname: number }>;
    infoFields: Array<(typeof tcpInfoFieldNames)[number]>;
    tcpStates: TcpState[];
    layout: Layout;
    families: { inet: number; inet6: number };
    status: { OK: number; E_NOFD: number };
    syscalls: string[];
    platform: { name: string; tcpInfo: boolean; queues: boolean; cookie: boolean; sockDiag: boolean; watch: boolean };
  };
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

/** Where the addon came from, or why there is none. */
export interface AddonStatus {
  /** The file loaded, or `undefined` when no addon could be loaded. */
  path: string | undefined;
  /** The file chosen for this process (a local build, or the prebuild of its platform, CPU and C library), loaded or not; `undefined` when none fits. */
  file: string | undefined;
  /** Why no addon is loaded (the loader's own error is its `cause`). */
  error: (Error & { code: string }) | undefined;
}

/**
 * The C library this process runs on ('musl' or 'glibc'), or undefined where that cannot be read.
 * Recognised by what is mapped, by content: the process's dynamic loader (the mapping that holds
 * AT_BASE of /proc/self/auxv) says "musl libc" in musl and carries GLIBC_PRIVATE in glibc. Names
 * mislead both ways: musl's own install maps its loader as `libc.so` (Debian's musl, Void,
 * distroless images), a glibc-compatibility shim in a musl process is named `ld-linux-*.so.2`
 * (Alpine's gcompat), and node-gyp-build knows musl only by /etc/alpine-release. Where auxv cannot
 * be read, the mapped files named like a loader or a C library are read instead.
 */
export function runningLibc(): 'glibc' | 'musl' | undefined {
  let maps: string;
  try {
    maps = readFileSync('/proc/self/maps', 'latin1');
  } catch {
    return undefined;
  }
  const regions: Array<{ from: bigint; to: bigint; file: string }> = [];
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s+(\/.*)$/.exec(line);
    if (m) regions.push({ from: BigInt(`0x${m[1]}`), to: BigInt(`0x${m[2]}`), file: m[3].replace(/ \(deleted\)$/, '') });
  }
  const base = loaderBase();
  const loader = base === undefined ? undefined : regions.find((r) => base >= r.from && base < r.to)?.file;
  const candidates = loader !== undefined ? [loader] : [...new Set(regions.map((r) => r.file).filter((f) => /^(ld|libc)([-.]|$)/.test(basename(f))))];
  let glibc = false;
  for (const file of candidates) {
    const kind = libcOf(file);
    if (kind === 'musl') return 'musl';
    if (kind === 'glibc') glibc = true;
  }
  return glibc ? 'glibc' : undefined;
}

/** AT_BASE (where the dynamic loader is mapped) from /proc/self/auxv, or undefined. */
function loaderBase(): bigint | undefined {
  let auxv: Buffer;
  try {
    auxv = readFileSync('/proc/self/auxv');
  } catch {
    return undefined;
  }
  const wide = /64/.test(process.arch);
  const size = wide ? 8 : 4;
  const read = (at: number): bigint =>
    wide
      ? endianness() === 'LE'
        ? auxv.readBigUInt64LE(at)
        : auxv.readBigUInt64BE(at)
      : BigInt(endianness() === 'LE' ? auxv.readUInt32LE(at) : auxv.readUInt32BE(at));
  for (let at = 0; at + 2 * size <= auxv.length; at += 2 * size) {
    const type = read(at);
    if (type === 0n) break;
    if (type === 7n) return read(at + size) === 0n ? undefined : read(at + size); // AT_BASE; 0 in a static binary
  }
  return undefined;
}

/** Which C library the file is, by the marks each leaves in its loader and libc. */
function libcOf(file: string): 'glibc' | 'musl' | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  if (bytes.includes('musl libc')) return 'musl';
  if (bytes.includes('GLIBC_PRIVATE')) return 'glibc';
  return undefined;
}

/**
 * node-gyp-build's choice, with the C library of a prebuild matched to this process's. Throws
 * when the only prebuild for this platform and CPU is for the other C library: it cannot load.
 */
function addonPath(loader: NodeGypBuild): string {
  const chosen = loader.resolve(root);
  const tagged = /^(.*)\.(glibc|musl)\.node$/.exec(chosen);
  if (process.platform !== 'linux' || !tagged || !chosen.startsWith(join(root, 'prebuilds'))) return chosen;
  const libc = runningLibc();
  if (libc === undefined || libc === tagged[2]) return chosen;
  const sibling = `${tagged[1]}.${libc}.node`;
  if (existsSync(sibling)) return sibling;
  throw new Error(`No native build was found for this process's C library (${libc}); ${relative(root, chosen)} is for ${tagged[2]}`);
}

function platformLabel(): string {
  const libc = process.platform === 'linux' ? ` (${runningLibc() ?? 'unknown C library'})` : '';
  return `${process.platform}-${process.arch}${libc}, Node ${process.version}`;
}

/** The coded error every addon-backed call throws when the addon could not be loaded. */
function noAddonError(reason: string, cause: unknown): Error & { code: string } {
  const err = socktuneError(
    codes.NO_ADDON,
    `socktune's native addon is not available on ${platformLabel()}: ${reason}. Prebuilds ship ` +
      'for linux-x64 and linux-arm64 (glibc and musl), darwin-x64, darwin-arm64 and win32-x64; ' +
      'elsewhere install a C++ compiler, make and Python 3, then run `npm rebuild socktune`. ' +
      'Without it, connectionStates() (from /proc), sysctlAudit(), `socktune stat` and `socktune doctor` still work',
  );
  (err as Error & { cause?: unknown }).cause = cause;
  return err;
}

/**
 * What the addon exports, for a process that has none: every call throws the loader's coded
 * error, and the constants let the modules that read them at load time load. sock_diag is off,
 * so connection counts come from /proc. The options claim support and the views throw when
 * asked about, so a call, a policy or a self-check row fails with the reason (no addon) at the
 * moment it is made, instead of blaming the platform.
 * @internal exported for test/00-tables, which checks its tables against the addon's
 */
export function stub(error: Error): NativeBinding {
  const fail = (): never => {
    throw error;
  };
  return {
    init() {},
    apply: fail,
    read: fail,
    tcpInfo: fail,
    queues: fail,
    cookie: fail,
    state: fail,
    lingerIfDrained: fail,
    socketError: fail,
    check: fail,
    locate: fail,
    watchAdd: fail,
    watchDrain: fail,
    createSocket: fail,
    releaseSocket: fail,
    diagCount: fail,
    diagList: fail,
    diagReport: fail,
    diagScrape: fail,
    socketInodes: fail,
    socketOwners: fail,
    netnsOpen: fail,
    constants: {
      options: optionNames.map((name, id) => ({ id, name, supported: true, level: -1, optname: -1 })),
      infoFields: [],
      // The kernel's numbering, which the /proc fallback reads.
      tcpStates: [...tcpStateNames],
      // No slot is ever used without the addon: every call throws first. Room for the cookie only.
      layout: { ...(Object.fromEntries(layoutNames.map((name) => [name, 0])) as Layout), bytes: 16, cookieOffset: 8 },
      families: { inet: -1, inet6: -1 },
      status: { OK: 0, E_NOFD: 2 },
      syscalls: ['setsockopt', 'getsockopt', 'ioctl', 'socket', 'bind'],
      platform: {
        name: process.platform,
        sockDiag: false,
        watch: false,
        get tcpInfo(): boolean {
          return fail();
        },
        get queues(): boolean {
          return fail();
        },
        get cookie(): boolean {
          return fail();
        },
      },
    },
  };
}

function load(): { native: NativeBinding; status: AddonStatus } {
  let path: string | undefined;
  try {
    path = addonPath(require('node-gyp-build') as NodeGypBuild);
  } catch (cause) {
    // node-gyp-build's "No native build was found": no prebuild for this platform, no build/.
    const error = noAddonError('no prebuild fits and none was built from source', cause);
    return { native: stub(error), status: { path: undefined, file: undefined, error } };
  }
  try {
    return { native: require(path) as NativeBinding, status: { path, file: path, error: undefined } };
  } catch (cause) {
    // A file that fits by name but not this machine (a C library or CPU it was not built for).
    const first = String((cause as Error)?.message ?? cause).split('\n')[0];
    const error = noAddonError(`${relative(root, path)} does not load here (${first})`, cause);
    return { native: stub(error), status: { path: undefined, file: path, error } };
  }
}

const loaded = load();
/** The loaded addon (a local build first, then the prebuild for this platform), or a stub whose calls throw {@link addon}'s error. */
export const native: NativeBinding = loaded.native;
/** Which addon file is loaded, or why none is (`error.code` is `ERR_SOCKTUNE_NO_ADDON`). */
export const addon: Readonly<AddonStatus> = Object.freeze(loaded.status);
/** Shapes and names exported by the native core. */
export const constants = native.constants;
const { layout } = constants;

const scratch = new ArrayBuffer(layout.bytes);
/** 32-bit argument and result slots shared with the native core (one per thread). */
export const slots = new Int32Array(scratch, 0, layout.infoOffset / 4);
/** TCP_INFO fields written by `native.tcpInfo`, in `constants.infoFields` order. */
export const infoSlots = new Float64Array(scratch, layout.infoOffset, constants.infoFields.length);
/** SO_COOKIE written by `native.cookie`. */
export const cookieSlot = new BigUint64Array(scratch, layout.cookieOffset, 1);

native.init(scratch);
