/**
 * The one module that loads the native addon and types it. Nothing else in socktune calls
 * node-gyp-build, `process.binding` or the addon directly.
 * @module
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** Status codes and raw calls of the native core (see native/binding.cc). */
export interface NativeBinding {
  init(scratch: ArrayBuffer): void;
  /**
   * Applies `slots[layout.count]` options to `fd`; 0, a negative errno, or a status. With
   * `slots[layout.verify]` set, first checks that `fd` is a TCP socket of IPv4/IPv6
   * (SO_TYPE/SO_DOMAIN/SO_PROTOCOL). Every call below does the same check the same way.
   */
  apply(fd: number): number;
  read(fd: number): number;
  tcpInfo(fd: number): number;
  queues(fd: number): number;
  cookie(fd: number): number;
  /** SIOCOUTQ into `slots[layout.queues]`; when 0, also SO_LINGER {on, 0} (the next close sends RST). */
  lingerIfDrained(fd: number): number;
  /** SO_ERROR into `slots[layout.queues]` (a positive errno, 0 for none); reading it clears it. */
  socketError(fd: number): number;
  /** Counts TCP sockets by kernel state (netlink sock_diag) into `slots[layout.diagCounts + state]`. */
  diagCount(inodes?: Uint32Array): number;
  /** Lists TCP sockets (netlink sock_diag) as packed records, or a negative errno. */
  diagList(inodes?: Uint32Array): ArrayBuffer | number;
  constants: {
    options: Array<{ id: number; name: string; supported: boolean; level: number; optname: number }>;
    infoFields: string[];
    tcpStates: string[];
    layout: {
      bytes: number; count: number; ids: number; values: number; failedOption: number;
      failedSyscall: number; read: number; queues: number; verify: number; infoOffset: number;
      cookieOffset: number; diagStates: number; diagFamily: number; diagSport: number; diagDport: number;
      diagAnyPort: number; diagCounts: number; diagEntryBytes: number; diagSrcFamily: number;
      diagDstFamily: number; diagSrc: number; diagDst: number;
    };
    families: { inet: number; inet6: number };
    status: { OK: number; E_HANDLE: number; E_NOFD: number };
    syscalls: string[];
    platform: { name: string; tcpInfo: boolean; queues: boolean; cookie: boolean; sockDiag: boolean };
  };
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const loadAddon = require('node-gyp-build') as (dir: string) => NativeBinding;

/** The loaded addon (prebuild first, then a local build). */
export const native: NativeBinding = loadAddon(root);
/** Shapes and names exported by the native core. */
export const constants = native.constants;
const { layout } = constants;

/**
 * Node's own TCP handle class. Handles are checked against it, and the fd is read through its
 * `fd` accessor, whose receiver check rejects any object Node did not create.
 * `process.binding('tcp_wrap')` is on Node's allow-list (DEP0111 is documentation-only) on
 * Node 20 through 26.
 */
export const TCP: abstract new (...args: never[]) => object = (
  process as unknown as { binding(name: string): { TCP: abstract new (...args: never[]) => object } }
).binding('tcp_wrap').TCP;

/** Node's `fd` accessor of TCP handles: throws "Illegal invocation" on any other receiver. */
export const readFd: (this: object) => number = fdGetter();

function fdGetter(): (this: object) => number {
  for (let p: object | null = TCP.prototype; p !== null; p = Object.getPrototypeOf(p)) {
    const d = Object.getOwnPropertyDescriptor(p, 'fd');
    if (d?.get) return d.get as (this: object) => number;
  }
  throw new Error('socktune: this Node.js has no fd accessor on TCP handles');
}

const scratch = new ArrayBuffer(layout.bytes);
/** 32-bit argument and result slots shared with the native core (one per thread). */
export const slots = new Int32Array(scratch, 0, layout.infoOffset / 4);
/** TCP_INFO fields written by `native.tcpInfo`, in `constants.infoFields` order. */
export const infoSlots = new Float64Array(scratch, layout.infoOffset, constants.infoFields.length);
/** SO_COOKIE written by `native.cookie`. */
export const cookieSlot = new BigUint64Array(scratch, layout.cookieOffset, 1);

native.init(scratch);
