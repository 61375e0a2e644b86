/**
 * The processes of `socktune demo`, run inside the demo's network namespaces (`ip netns exec NS
 * node dist/demo/peer.js <mode> <json>`) or on loopback: servers, a connection churner, a client
 * holding idle connections to a peer that vanishes, and the pooled-request race. Each prints JSON
 * lines on stdout and exits when its stdin closes, so a parent that dies takes it along.
 * @module
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { connectionStates, createAgent, presets, tcpState, tune } from '../index.js';

/** Arguments of `serve`: request/response servers that answer every line with `pong`. */
export interface ServeArgs {
  /** Address to listen on. */
  host: string;
  /** Number of servers (ports). */
  count: number;
}

/** Arguments of `churn`: connect, send a request, read the response, close; many times. */
export interface ChurnArgs {
  /** Server address. */
  host: string;
  /** Server ports, used in turn. */
  ports: number[];
  /** Connections to attempt. */
  count: number;
  /** Connections in flight at once. */
  concurrency: number;
  /** `'plain'`: `end()` (FIN). `'rst'`: `tune(socket, presets.rstOnClose())`, then the same `end()`. */
  close: 'plain' | 'rst';
  /** Sysctls of this namespace to set first (`net.ipv4.tcp_tw_reuse`: `'0'`). */
  sysctl?: Record<string, string>;
  /** Stop starting connections after this long, in milliseconds. */
  deadlineMs: number;
}

/** What `churn` prints. */
export interface ChurnResult {
  /** Connections started. */
  attempted: number;
  /** Connections that got their response and closed without an error. */
  completed: number;
  /** Connections that failed (connect error, reset, no response). */
  failed: number;
  /** Failures by error code (`EADDRNOTAVAIL`, ...). */
  errors: Record<string, number>;
  /** TIME_WAIT sockets towards the server ports, counted after the last close. */
  timeWait: number;
  /** The sysctls as the kernel holds them during the run. */
  sysctl: Record<string, string>;
  /** Milliseconds the churn took. */
  ms: number;
}

/** One arm of `hold`: how its connections watch the peer. */
export type HoldArm = 'nodeDefault' | 'setKeepAlive' | 'gracefulHeartbeat';

/** Arguments of `hold`: idle connections to a peer that is about to vanish. */
export interface HoldArgs {
  /** Peer address. */
  host: string;
  /** Peer port. */
  port: number;
  /** Connections per arm. */
  per: number;
  arms: HoldArm[];
  /** `setKeepAlive(true, delay)`, in milliseconds. */
  keepAliveDelay: number;
  /** Keepalive timings of the heartbeat policy, in milliseconds. */
  heartbeat: { idle: number; interval: number; count: number };
}

/** One connection of `hold` once the wait is over. */
export interface HoldConnection {
  /** Milliseconds from the vanishing to `'close'`, or null if it had not closed at the cap. */
  noticedMs: number | null;
  /** Milliseconds from the last byte received to `'close'`, or null. */
  sinceLastPacketMs: number | null;
  /** The error it closed with (`ETIMEDOUT`), if any. */
  error: string | null;
  /** Kernel state at the cap, for connections still open then. */
  state: string | null;
}

/** Arguments of `hangup`: a server closing idle keep-alive sockets at `idleTimeout`, and pooled clients. */
export interface HangupArgs {
  /** Server idle timeout, in milliseconds; the server sends no `Keep-Alive` hint. */
  idleTimeout: number;
  /** Trials per client. */
  trials: number;
  /** The second request goes at `idleTimeout - jitter ... idleTimeout + jitter` ms, in 1 ms steps. */
  jitter: number;
  /** Milliseconds between trial starts. */
  stagger: number;
}

/** One client of `hangup`. */
export interface HangupArm {
  /** Whether this client could run (socktune's agent may be missing). */
  available: boolean;
  /** Why the arm could not run. */
  why?: string;
  /** Trials whose second request was made. */
  trials: number;
  /** Second requests that failed. */
  failed: number;
  /** Failures by message (`socket hang up`, `read ECONNRESET`). */
  errors: Record<string, number>;
  /** Second requests that went over the pooled socket of the first. */
  reused: number;
  /** First requests that failed (the trial then does not count). */
  setupFailed: number;
  /** Pooled sockets the agent dropped because the kernel no longer held them ESTABLISHED (socktune's agent only). */
  staleDropped?: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function print(message: unknown): Promise<void> {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(message)}\n`, () => resolve()));
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** Lines from the parent; the parent closing stdin (or dying) ends this process. */
const input = createInterface({ input: process.stdin });
const messages: unknown[] = [];
const readers: Array<(m: unknown) => void> = [];
input.on('line', (line) => {
  const m = JSON.parse(line) as unknown;
  const r = readers.shift();
  if (r) r(m);
  else messages.push(m);
});
input.on('close', () => process.exit(0));
function nextMessage<T>(): Promise<T> {
  if (messages.length) return Promise.resolve(messages.shift() as T);
  return new Promise<T>((resolve) => readers.push(resolve as (m: unknown) => void));
}

async function serve(a: ServeArgs): Promise<void> {
  const servers: net.Server[] = [];
  for (let i = 0; i < a.count; i++) {
    // allowHalfOpen false: the client's FIN is answered with ours at once, so a client that
    // closes first ends in TIME_WAIT, not FIN_WAIT2.
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d) => {
        if (d.includes(10)) s.write('pong\n');
      });
    });
    server.listen({ host: a.host, port: 0, backlog: 4096 });
    servers.push(server);
  }
  await Promise.all(servers.map((s) => once(s, 'listening')));
  await print({ ports: servers.map((s) => (s.address() as net.AddressInfo).port) });
}

function sysctlPath(name: string): string {
  return `/proc/sys/${name.replace(/\./g, '/')}`;
}

async function churn(a: ChurnArgs): Promise<void> {
  // /proc/sys/net belongs to the namespace of the process that opens it: this child's.
  for (const [name, value] of Object.entries(a.sysctl ?? {})) writeFileSync(sysctlPath(name), value);
  const sysctl: Record<string, string> = {};
  for (const name of ['net.ipv4.ip_local_port_range', 'net.ipv4.tcp_tw_reuse']) {
    sysctl[name] = readFileSync(sysctlPath(name), 'utf8').trim().replace(/\s+/g, ' ');
  }
  const policy = a.close === 'rst' ? presets.rstOnClose() : undefined;
  const errors: Record<string, number> = {};
  let started = 0;
  let completed = 0;
  let failed = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let active = 0;
    const next = (): void => {
      while (active < a.concurrency && started < a.count && performance.now() - t0 < a.deadlineMs) {
        const port = a.ports[started++ % a.ports.length];
        active++;
        let answered = false;
        let error: string | undefined;
        const s = net.connect({ host: a.host, port });
        if (policy) tune(s, policy);
        s.setTimeout(5000, () => {
          error ??= 'timeout';
          s.destroy();
        });
        s.once('connect', () => s.write('ping\n'));
        s.on('data', () => {
          if (answered) return;
          answered = true;
          // The client closes first: with FIN it keeps the TIME_WAIT; under the policy, end() resets.
          s.end();
        });
        s.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code ?? err.message));
        s.on('close', () => {
          active--;
          if (error === undefined && answered) completed++;
          else {
            failed++;
            bump(errors, error ?? 'closed before the response');
          }
          next();
        });
      }
      if (active === 0) resolve();
    };
    next();
  });
  const ms = performance.now() - t0;
  // The last FINs are exchanged within a round trip of 'close'; give them a moment.
  await sleep(200);
  let timeWait = 0;
  for (const port of new Set(a.ports)) {
    timeWait += connectionStates({ states: ['TIME_WAIT'], remoteAddress: a.host, remotePort: port }).states.TIME_WAIT;
  }
  const result: ChurnResult = { attempted: started, completed, failed, errors, timeWait, sysctl, ms };
  await print(result);
  process.exit(0);
}

async function hold(a: HoldArgs): Promise<void> {
  const policy = presets.gracefulHeartbeat({ keepAlive: a.heartbeat });
  interface Held {
    arm: HoldArm;
    socket: net.Socket;
    lastReceived: number;
    closedAt?: number;
    error?: string;
  }
  const held: Held[] = [];
  for (const arm of a.arms) {
    for (let i = 0; i < a.per; i++) {
      const socket = net.connect({ host: a.host, port: a.port });
      const h: Held = { arm, socket, lastReceived: 0 };
      socket.on('error', (err: NodeJS.ErrnoException) => (h.error ??= err.code ?? err.message));
      socket.on('close', () => (h.closedAt = Date.now()));
      if (arm === 'setKeepAlive') socket.setKeepAlive(true, a.keepAliveDelay);
      else if (arm === 'gracefulHeartbeat') tune(socket, policy);
      await once(socket, 'connect');
      socket.write('ping\n');
      await once(socket, 'data');
      h.lastReceived = Date.now();
      held.push(h);
    }
  }
  await print({ ready: held.length, policy: { keepAlive: policy.keepAlive, userTimeout: policy.userTimeout } });
  const { vanishedAt, capMs } = await nextMessage<{ vanishedAt: number; capMs: number }>();
  const until = vanishedAt + capMs;
  // Only the arms that can notice are waited for; Node's default never does, by design.
  while (Date.now() < until && held.some((h) => h.arm !== 'nodeDefault' && h.closedAt === undefined)) await sleep(50);
  if (Date.now() < until) await sleep(until - Date.now());
  const arms: Partial<Record<HoldArm, HoldConnection[]>> = {};
  for (const h of held) {
    let state: string | null = null;
    if (h.closedAt === undefined) {
      try {
        state = tcpState(h.socket);
      } catch {
        state = 'UNKNOWN';
      }
    }
    const noticed = h.closedAt === undefined || h.closedAt > until ? null : h.closedAt;
    (arms[h.arm] ??= []).push({
      noticedMs: noticed === null ? null : noticed - vanishedAt,
      sinceLastPacketMs: noticed === null ? null : noticed - h.lastReceived,
      error: noticed === null ? null : (h.error ?? null),
      state,
    });
  }
  const lastReceived = Math.max(...held.map((h) => h.lastReceived));
  await print({ arms, lastPacketBeforeVanishMs: vanishedAt - lastReceived });
  process.exit(0);
}

async function hangup(a: HangupArgs): Promise<void> {
  // A keep-alive HTTP/1.1 server that closes a connection idle for idleTimeout (as Node's own
  // server does, by destroy()), but announces no Keep-Alive: timeout= hint, like many proxies.
  const server = net.createServer((s) => {
    let timer: NodeJS.Timeout | undefined;
    let buffered = '';
    s.on('error', () => {});
    s.on('close', () => clearTimeout(timer));
    s.on('data', (d) => {
      clearTimeout(timer);
      buffered += d.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        buffered = buffered.slice(end + 4);
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
      timer = setTimeout(() => s.destroy(), a.idleTimeout);
    });
  });
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 });
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;

  const policy = presets.gracefulHeartbeat();
  const arms: Array<{ name: string; make?: () => http.Agent; result: HangupArm }> = [
    { name: 'nodeAgent', make: () => new http.Agent({ keepAlive: true }), result: emptyArm() },
    { name: 'socktuneAgent', make: () => createAgent(policy, { keepAlive: true }), result: emptyArm() },
  ];

  const get = (agent: http.Agent): Promise<{ error?: string; socket?: net.Socket }> =>
    new Promise((resolve) => {
      let socket: net.Socket | undefined;
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ socket }));
        res.on('error', (err) => resolve({ error: err.message, socket }));
      });
      req.on('socket', (s) => (socket = s));
      req.on('error', (err) => resolve({ error: err.message, socket }));
    });

  const trial = async (i: number, arm: (typeof arms)[number]): Promise<void> => {
    const agent = arm.make!();
    try {
      const first = await get(agent);
      if (first.error) {
        arm.result.setupFailed++;
        return;
      }
      await sleep(a.idleTimeout - a.jitter + (i % (2 * a.jitter + 1)));
      const second = await get(agent);
      arm.result.trials++;
      if (second.socket !== undefined && second.socket === first.socket) arm.result.reused++;
      if (second.error) {
        arm.result.failed++;
        bump(arm.result.errors, second.error);
      }
    } finally {
      const stale = (agent as { staleDropped?: unknown }).staleDropped;
      if (typeof stale === 'number') arm.result.staleDropped = (arm.result.staleDropped ?? 0) + stale;
      agent.destroy();
    }
  };
  const running = arms.filter((arm) => arm.make);
  await Promise.all(
    Array.from({ length: a.trials }, async (_, i) => {
      await sleep(i * a.stagger);
      await Promise.all(running.map((arm) => trial(i, arm)));
    }),
  );
  server.close();
  await print({
    port,
    policy: { name: policy.name, poolIdleTimeout: policy.poolIdleTimeout },
    arms: Object.fromEntries(arms.map((arm) => [arm.name, arm.result])),
  });
  process.exit(0);
}

function emptyArm(): HangupArm {
  return { available: true, trials: 0, failed: 0, errors: {}, reused: 0, setupFailed: 0 };
}

const [mode, json] = process.argv.slice(2);
const args = JSON.parse(json ?? '{}') as never;
const modes: Record<string, (a: never) => Promise<void>> = { serve, churn, hold, hangup };
const run = modes[mode ?? ''];
if (run === undefined) {
  process.stderr.write(`usage: peer.js <${Object.keys(modes).join('|')}> <json arguments>\n`);
  process.exit(2);
}
run(args).catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
