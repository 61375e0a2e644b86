/**
 * The self-check behind `socktune doctor`: on a loopback connection of its own, set each option to
 * a value different from the one the kernel holds, read it back, and report what works here.
 * @module
 */
import net from 'node:net';
import os from 'node:os';
import { once } from 'node:events';
import {
  configure, readOptions, receiveQueue, sendQueue, socketCookie, supportedOptions, tcpInfo,
  type AppliedOptions, type SocketOptions,
} from '../options.js';

/** One row of the self-check. */
export interface SelfCheckRow {
  /** Kernel name of the option or view (`TCP_KEEPIDLE`, `TCP_INFO`, ...). */
  name: string;
  /** Whether this platform has it at all. */
  supported: boolean;
  /** What the kernel held before (as readOptions reports it), when it applies. */
  before?: unknown;
  /** What socktune asked for. */
  wrote?: unknown;
  /** What the kernel held afterwards. */
  read?: unknown;
  /** Whether the value read back is the one asked for (or the view answered). */
  ok: boolean;
  /** The error, when one was thrown. */
  error?: string;
}

/** Result of {@link selfCheck}. */
export interface SelfCheck {
  node: string;
  platform: string;
  kernel: string;
  rows: SelfCheckRow[];
  /** True when every supported option and view worked. */
  ok: boolean;
}

interface Probe {
  name: string;
  /** Options that differ from `before`, and how to pick the value out of a read. */
  set: (before: AppliedOptions) => SocketOptions;
  pick: (o: AppliedOptions) => unknown;
}

const probes: Probe[] = [
  { name: 'SO_KEEPALIVE', set: (b) => ({ keepAlive: b.keepAlive === false }), pick: (o) => o.keepAlive !== false },
  { name: 'TCP_KEEPIDLE', set: (b) => ({ keepAlive: { idle: (b.keepAliveTimings?.idle ?? 0) === 61_000 ? 62_000 : 61_000 } }), pick: (o) => o.keepAliveTimings?.idle },
  { name: 'TCP_KEEPINTVL', set: (b) => ({ keepAlive: { interval: (b.keepAliveTimings?.interval ?? 0) === 7_000 ? 8_000 : 7_000 } }), pick: (o) => o.keepAliveTimings?.interval },
  { name: 'TCP_KEEPCNT', set: (b) => ({ keepAlive: { count: (b.keepAliveTimings?.count ?? 0) === 4 ? 5 : 4 } }), pick: (o) => o.keepAliveTimings?.count },
  { name: 'TCP_USER_TIMEOUT', set: (b) => ({ userTimeout: b.userTimeout === 30_000 ? 31_000 : 30_000 }), pick: (o) => o.userTimeout },
  { name: 'SO_LINGER', set: (b) => ({ linger: b.linger === 0 ? false : 0 }), pick: (o) => o.linger },
  { name: 'TCP_NODELAY', set: (b) => ({ noDelay: !b.noDelay }), pick: (o) => o.noDelay },
  { name: 'SO_REUSEADDR', set: (b) => ({ reuseAddress: !b.reuseAddress }), pick: (o) => o.reuseAddress },
  { name: 'SO_REUSEPORT', set: (b) => ({ reusePort: !b.reusePort }), pick: (o) => o.reusePort },
];

function wanted(set: SocketOptions, pick: Probe['pick']): unknown {
  const k = set.keepAlive;
  if (typeof k === 'object') return k.idle ?? k.interval ?? k.count;
  if (typeof k === 'boolean') return k;
  return pick(set as AppliedOptions);
}

function message(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
}

/** Opens a loopback connection, exercises every option and view, and closes it again. */
export async function selfCheck(): Promise<SelfCheck> {
  const server = net.createServer((s) => s.on('error', () => {}));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  const rows: SelfCheckRow[] = [];
  try {
    await once(client, 'connect');
    const supported = new Map(supportedOptions().map((o) => [o.name, o.supported]));
    for (const probe of probes) {
      if (!supported.get(probe.name)) {
        rows.push({ name: probe.name, supported: false, ok: false, error: 'not available on this platform' });
        continue;
      }
      try {
        const before = readOptions(client);
        const set = probe.set(before);
        configure(client, set);
        const want = wanted(set, probe.pick);
        const read = probe.pick(readOptions(client));
        rows.push({ name: probe.name, supported: true, before: probe.pick(before), wrote: want, read, ok: read === want });
      } catch (err) {
        rows.push({ name: probe.name, supported: true, ok: false, error: message(err) });
      }
    }
    const views: Array<[string, () => unknown]> = [
      ['TCP_INFO', () => tcpInfo(client).state],
      ['SIOCOUTQ/SIOCOUTQNSD', () => sendQueue(client)],
      ['SIOCINQ', () => receiveQueue(client)],
      ['SO_COOKIE', () => String(socketCookie(client))],
    ];
    for (const [name, view] of views) {
      try {
        rows.push({ name, supported: true, read: view(), ok: true });
      } catch (err) {
        const code = (err as { code?: string }).code;
        rows.push({ name, supported: code !== 'ERR_SOCKTUNE_UNSUPPORTED', ok: false, error: message(err) });
      }
    }
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
    rows,
    ok: rows.every((r) => r.ok || !r.supported),
  };
}
