/**
 * The self-check behind `socktune doctor`: on a loopback connection of its own, set each option to
 * a value different from the one the kernel holds, read it back, and report what works here.
 * @module
 */
import net from 'node:net';
import os from 'node:os';
import { once } from 'node:events';
import { addon } from '../binding.js';
import { configure, readOptions, supportedOptions, type AppliedOptions, type SocketOptions } from '../options.js';
import { receiveQueue, sendQueue, socketCookie, tcpInfo } from '../views.js';

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
  /**
   * Why nothing could be checked, when socktune's native addon is not loaded (the loader's
   * `ERR_SOCKTUNE_NO_ADDON` message). Every row then failed with it too.
   */
  noAddon?: string;
}

interface Probe {
  name: string;
  /** The option's value in a read, in configure()'s units. */
  pick: (o: AppliedOptions) => unknown;
  /** A value different from `current`, to prove the write reached the kernel. */
  next: (current: unknown) => unknown;
  /** The configure() options that set `value`. */
  set: (value: never) => SocketOptions;
}

const other =
  <T>(a: T, b: T) =>
  (current: unknown) =>
    current === a ? b : a;

const probes: Probe[] = [
  { name: 'SO_KEEPALIVE', pick: (o) => o.keepAlive !== false, next: (c) => !c, set: (v: boolean) => ({ keepAlive: v }) },
  { name: 'TCP_KEEPIDLE', pick: (o) => o.keepAliveTimings?.idle, next: other(61_000, 62_000), set: (v: number) => ({ keepAlive: { idle: v } }) },
  { name: 'TCP_KEEPINTVL', pick: (o) => o.keepAliveTimings?.interval, next: other(7_000, 8_000), set: (v: number) => ({ keepAlive: { interval: v } }) },
  { name: 'TCP_KEEPCNT', pick: (o) => o.keepAliveTimings?.count, next: other(4, 5), set: (v: number) => ({ keepAlive: { count: v } }) },
  { name: 'TCP_USER_TIMEOUT', pick: (o) => o.userTimeout, next: other(30_000, 31_000), set: (v: number) => ({ userTimeout: v }) },
  { name: 'SO_LINGER', pick: (o) => o.linger, next: other<false | 0>(0, false), set: (v: false | 0) => ({ linger: v }) },
  { name: 'TCP_NODELAY', pick: (o) => o.noDelay, next: (c) => !c, set: (v: boolean) => ({ noDelay: v }) },
  { name: 'SO_REUSEADDR', pick: (o) => o.reuseAddress, next: (c) => !c, set: (v: boolean) => ({ reuseAddress: v }) },
  { name: 'SO_REUSEPORT', pick: (o) => o.reusePort, next: (c) => !c, set: (v: boolean) => ({ reusePort: v }) },
];

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
        const before = probe.pick(readOptions(client));
        const want = probe.next(before);
        configure(client, probe.set(want as never));
        const read = probe.pick(readOptions(client));
        rows.push({ name: probe.name, supported: true, before, wrote: want, read, ok: read === want });
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
    ...(addon.error ? { noAddon: addon.error.message } : {}),
  };
}
