/**
 * The three failures `socktune demo` reproduces, each measured without and with socktune in the
 * same run: ephemeral-port exhaustion by TIME_WAIT, a peer that vanishes silently, and pooled
 * keep-alive requests racing a server's idle timeout. Each scenario returns its numbers, or says
 * why it could not run; none ever reports a number it did not measure.
 * @module
 */
import { keepAliveBudget, presets } from '../policy/presets.js';
import type { Lab } from './lab.js';
import type { ChurnResult, HangupArm, HoldArm, HoldConnection } from './peer.js';

/** Why a scenario did not run (`why`), or the error that stopped it (`error`). */
export interface NotRun {
  ran: false;
  /** The machine cannot run it (not root, a tool missing). */
  why?: string;
  /** It started and failed. */
  error?: string;
}

/** One client of the port-exhaustion scenario. */
export interface ChurnArm extends ChurnResult {
  /** How the client closes. */
  label: string;
  /** Connects that failed with EADDRNOTAVAIL (no free local port). */
  eaddrnotavail: number;
}

/** The port-exhaustion scenario: many short connections from a small local port range. */
export interface PortExhaustionReport {
  ran: true;
  /** Where it ran, in words. */
  where: string;
  /** Connections attempted per client. */
  connects: number;
  /** Connections in flight at once. */
  concurrency: number;
  /** Server ports each client spreads its connections over. */
  serverPorts: number;
  /**
   * Whether EADDRNOTAVAIL was provoked (a narrowed `ip_local_port_range` and `tcp_tw_reuse=0` in a
   * namespace of the demo's own); when false, `eaddrnotavailWhy` says why not.
   */
  eaddrnotavailMeasured: boolean;
  eaddrnotavailWhy?: string;
  arms: { plainClose: ChurnArm; rstOnClose: ChurnArm };
}

/** Summary of a set of durations, in milliseconds. */
export interface Spread {
  min: number;
  median: number;
  max: number;
}

/** One way of watching a peer in the dead-peer scenario. */
export interface DeadPeerArm {
  /** The client code, in words. */
  label: string;
  /** The kernel timings this arm runs with. */
  timings: string;
  /** When the kernel should give up, in milliseconds after the last packet received; null: never. */
  budgetMs: number | null;
  connections: number;
  /** Connections that noticed (closed) before the cap. */
  noticed: number;
  /** Milliseconds from the vanishing to `'close'`, over the connections that noticed; null if none did. */
  noticedMs: Spread | null;
  /** The same from the last packet received. */
  sinceLastPacketMs: Spread | null;
  /** Errors they closed with (`ETIMEDOUT`). */
  errors: Record<string, number>;
  /** Kernel states of the connections still open at the cap. */
  statesAtCap: Record<string, number>;
}

/** The dead-peer scenario: idle connections to a peer that silently vanishes. */
export interface DeadPeerReport {
  ran: true;
  where: string;
  /** How long the demo waited after the vanishing, in milliseconds. */
  capMs: number;
  connectionsPerArm: number;
  /** Milliseconds between the last packet received and the vanishing. */
  lastPacketBeforeVanishMs: number;
  arms: Record<HoldArm, DeadPeerArm>;
  /** The production defaults of `presets.gracefulHeartbeat()`, for comparison (not measured here). */
  production: { keepAlive: { idle: number; interval: number; count: number }; userTimeout: number; budgetMs: number };
}

/** One client of the idle-timeout race. */
export interface HangUpsArm extends HangupArm {
  label: string;
  /** Failures with Node's message "socket hang up". */
  hangUps: number;
}

/** The idle-timeout race: pooled keep-alive requests sent around the server's idle timeout. */
export interface HangUpsReport {
  ran: true;
  where: string;
  /** The server's idle timeout, in milliseconds (no `Keep-Alive` hint sent). */
  idleTimeoutMs: number;
  jitterMs: number;
  trials: number;
  arms: { nodeAgent: HangUpsArm; socktuneAgent: HangUpsArm };
  /** The pool idle timeout of the policy the socktune agent used, in milliseconds. */
  poolIdleTimeoutMs: number;
}

/** Options of {@link portExhaustion}. */
export interface PortExhaustionOptions {
  /** Use namespaces (root): a narrowed port range and tcp_tw_reuse=0 across a veth. Otherwise loopback. */
  namespaces: boolean;
  /** Why namespaces cannot be used, shown when `namespaces` is false. */
  why?: string;
  /** Connections per client (default 3000 in namespaces, 1000 on loopback). */
  connects?: number;
  /** Local ports the clients may use (default 1000). */
  localPorts?: number;
  /** Server ports per client (default 2). */
  serverPorts?: number;
  /** Connections in flight (default 50). */
  concurrency?: number;
  /** Third octet of the first of two /24 subnets (default 200: 10.213.200.x and 10.213.201.x). */
  subnet?: number;
}

function message(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0];
}

const CHILD_MS = 60_000;

/**
 * Many connect/request/close cycles from a client whose local port range is narrowed, spread over
 * a few server ports: plain close (FIN, this side keeps TIME_WAIT for 60 s) against
 * `presets.rstOnClose()` (RST after the response is acknowledged, no TIME_WAIT). Without root it
 * runs on loopback with the machine's own port range and counts only TIME_WAIT.
 */
export async function portExhaustion(lab: Lab, o: PortExhaustionOptions): Promise<PortExhaustionReport | NotRun> {
  const connects = o.connects ?? (o.namespaces ? 3000 : 1000);
  const localPorts = o.localPorts ?? 1000;
  const serverPorts = o.serverPorts ?? 2;
  const concurrency = o.concurrency ?? 50;
  const subnet = o.subnet ?? 200;
  const labels = { plainClose: 'plain close: socket.end() (FIN)', rstOnClose: 'tune(socket, presets.rstOnClose()); socket.end()' };
  const server = lab.start(
    o.namespaces ? lab.namespace('srv') : undefined,
    'serve',
    { host: o.namespaces ? '0.0.0.0' : '127.0.0.1', count: 2 * serverPorts },
    CHILD_MS,
  );
  try {
    const { ports } = await server.next<{ ports: number[] }>();
    const arms = {} as PortExhaustionReport['arms'];
    const plan = [
      { key: 'plainClose', close: 'plain', suffix: 'a', dev: 'st-a', net: subnet },
      { key: 'rstOnClose', close: 'rst', suffix: 'b', dev: 'st-b', net: subnet + 1 },
    ] as const;
    for (const [i, arm] of plan.entries()) {
      const armPorts = ports.slice(i * serverPorts, (i + 1) * serverPorts);
      let ns: string | undefined;
      let host = '127.0.0.1';
      let sysctl: Record<string, string> | undefined;
      if (o.namespaces) {
        // One client namespace per arm: TIME_WAIT left by one arm must not cost the other ports.
        ns = lab.namespace(arm.suffix);
        lab.link(ns, 'st-s', `10.213.${arm.net}.1`, `${lab.prefix}-srv`, arm.dev, `10.213.${arm.net}.2`);
        host = `10.213.${arm.net}.2`;
        // tcp_tw_reuse=0: new namespaces default to 2 (reuse on loopback only), and no reuse is
        // what a busy client talking to one upstream over a real link lives with.
        sysctl = { 'net.ipv4.ip_local_port_range': `40000 ${40000 + localPorts - 1}`, 'net.ipv4.tcp_tw_reuse': '0' };
      }
      const child = lab.start(ns, 'churn', { host, ports: armPorts, count: connects, concurrency, close: arm.close, sysctl, deadlineMs: 30_000 }, CHILD_MS);
      const r = await child.next<ChurnResult>();
      arms[arm.key] = { label: labels[arm.key], ...r, eaddrnotavail: r.errors.EADDRNOTAVAIL ?? 0 };
    }
    return {
      ran: true,
      where: o.namespaces
        ? `two client namespaces (ip_local_port_range ${localPorts} ports, tcp_tw_reuse=0), each across a veth to a server namespace`
        : 'loopback, this namespace (not root: port range and tcp_tw_reuse left as they are)',
      connects,
      concurrency,
      serverPorts,
      eaddrnotavailMeasured: o.namespaces,
      ...(o.namespaces
        ? {}
        : { eaddrnotavailWhy: `narrowing ip_local_port_range and tcp_tw_reuse needs a namespace of the demo's own: ${o.why ?? 'not root'}` }),
      arms,
    };
  } catch (err) {
    return { ran: false, error: message(err) };
  } finally {
    await lab.stop(server);
  }
}

/** Options of {@link deadPeer}. */
export interface DeadPeerOptions {
  /** Connections per arm (default 1). */
  per?: number;
  /** How long to wait after the vanishing, in milliseconds (default 30000). */
  capMs?: number;
  /** Third octet of the /24 subnet between client and peer (default 202). */
  subnet?: number;
  /** `setKeepAlive(true, delay)`, in milliseconds (default 2000). */
  keepAliveDelay?: number;
  /** Keepalive of the heartbeat arm, in milliseconds (default 2000/1000/3). */
  heartbeat?: { idle: number; interval: number; count: number };
  /** Namespace suffixes (default `dc`, `dp`). */
  names?: [client: string, peer: string];
}

function spread(xs: number[]): Spread | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return { min: s[0], median: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2, max: s[s.length - 1] };
}

function tally(values: Array<string | null>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) if (v !== null) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/**
 * Idle connections from a client namespace to a peer namespace across a veth; then the peer
 * vanishes (nftables drops inside its namespace) right after its last packet. Measures when each
 * connection notices: Node's default (no keepalive), `setKeepAlive(true, d)` (Node sets 1 s
 * probes, 10 of them) and `presets.gracefulHeartbeat` with demo-scale timings. Needs root.
 */
export async function deadPeer(lab: Lab, o: DeadPeerOptions = {}): Promise<DeadPeerReport | NotRun> {
  const per = o.per ?? 1;
  const capMs = o.capMs ?? 30_000;
  const subnet = o.subnet ?? 202;
  const keepAliveDelay = o.keepAliveDelay ?? 2000;
  const heartbeat = o.heartbeat ?? { idle: 2000, interval: 1000, count: 3 };
  const [cName, pName] = o.names ?? ['dc', 'dp'];
  const clientAddr = `10.213.${subnet}.1`;
  const peerAddr = `10.213.${subnet}.2`;
  let peer: ReturnType<Lab['start']> | undefined;
  let client: ReturnType<Lab['start']> | undefined;
  try {
    const cns = lab.namespace(cName);
    const pns = lab.namespace(pName);
    lab.link(cns, 'st-p', clientAddr, pns, 'st-c', peerAddr);
    peer = lab.start(pns, 'serve', { host: peerAddr, count: 1 }, capMs + CHILD_MS);
    const { ports } = await peer.next<{ ports: number[] }>();
    const arms: HoldArm[] = ['nodeDefault', 'setKeepAlive', 'gracefulHeartbeat'];
    client = lab.start(cns, 'hold', { host: peerAddr, port: ports[0], per, arms, keepAliveDelay, heartbeat }, capMs + CHILD_MS);
    const ready = await client.next<{ policy: { userTimeout: number } }>();
    lab.vanish(pns, 'st-c');
    const vanishedAt = Date.now();
    client.send({ vanishedAt, capMs });
    const r = await client.next<{ arms: Record<HoldArm, HoldConnection[]>; lastPacketBeforeVanishMs: number }>();
    const s = (ms: number) => `${ms / 1000} s`;
    const describe: Record<HoldArm, { label: string; timings: string; budgetMs: number | null }> = {
      nodeDefault: { label: 'Node default (net.connect, no keepalive)', timings: 'none', budgetMs: null },
      setKeepAlive: {
        label: `socket.setKeepAlive(true, ${keepAliveDelay})`,
        // Node's setKeepAlive sets TCP_KEEPINTVL=1 and TCP_KEEPCNT=10 itself.
        timings: `keepalive idle ${s(keepAliveDelay)}, interval 1 s, count 10 (set by Node)`,
        budgetMs: Math.ceil(keepAliveDelay / 1000) * 1000 + 10_000,
      },
      gracefulHeartbeat: {
        label: `presets.gracefulHeartbeat({ keepAlive: { idle: ${heartbeat.idle}, interval: ${heartbeat.interval}, count: ${heartbeat.count} } })`,
        timings: `keepalive ${s(heartbeat.idle)}/${s(heartbeat.interval)}/${heartbeat.count}, userTimeout ${s(ready.policy.userTimeout)} (demo scale)`,
        budgetMs: keepAliveBudget(heartbeat),
      },
    };
    const production = presets.gracefulHeartbeat();
    const ka = production.keepAlive as { idle: number; interval: number; count: number };
    return {
      ran: true,
      where: `client namespace ${cns} (10.213.${subnet}.1) and peer namespace ${pns} (10.213.${subnet}.2) across a veth; the peer vanishes by nftables drops inside its namespace`,
      capMs,
      connectionsPerArm: per,
      lastPacketBeforeVanishMs: r.lastPacketBeforeVanishMs,
      arms: Object.fromEntries(
        arms.map((arm) => {
          const conns = r.arms[arm] ?? [];
          const noticed = conns.filter((c) => c.noticedMs !== null);
          const result: DeadPeerArm = {
            ...describe[arm],
            connections: conns.length,
            noticed: noticed.length,
            noticedMs: spread(noticed.map((c) => c.noticedMs!)),
            sinceLastPacketMs: spread(noticed.map((c) => c.sinceLastPacketMs!)),
            errors: tally(noticed.map((c) => c.error ?? 'closed without error')),
            statesAtCap: tally(conns.map((c) => c.state)),
          };
          return [arm, result];
        }),
      ) as Record<HoldArm, DeadPeerArm>,
      production: { keepAlive: { ...ka }, userTimeout: production.userTimeout!, budgetMs: keepAliveBudget(ka) },
    };
  } catch (err) {
    return { ran: false, error: message(err) };
  } finally {
    if (client) await lab.stop(client);
    if (peer) await lab.stop(peer);
  }
}

/** Options of {@link hangUps}. */
export interface HangUpsOptions {
  /** Run inside a namespace of its own (loopback inside); otherwise on this namespace's loopback. */
  namespaces: boolean;
  /** Server idle timeout, in milliseconds (default 5000, Node's http.Server keepAliveTimeout). */
  idleTimeout?: number;
  /** Trials per client (default 200). */
  trials?: number;
  /** Second request at idleTimeout ± jitter ms (default 10). */
  jitter?: number;
  /** Milliseconds between trial starts (default 20). */
  stagger?: number;
}

/**
 * A keep-alive HTTP server closes connections idle for T (default 5 s, Node's own
 * `keepAliveTimeout`) and sends no `Keep-Alive` hint; each client makes one request, waits
 * T−10 … T+10 ms and makes another on the same agent. Node's `http.Agent({ keepAlive: true })`
 * against socktune's `createAgent`. Runs on loopback; in a namespace of its own when root.
 */
export async function hangUps(lab: Lab, o: HangUpsOptions): Promise<HangUpsReport | NotRun> {
  const idleTimeout = o.idleTimeout ?? 5000;
  const trials = o.trials ?? 200;
  const jitter = o.jitter ?? 10;
  const stagger = o.stagger ?? 20;
  let child: ReturnType<Lab['start']> | undefined;
  try {
    const ns = o.namespaces ? lab.namespace('h') : undefined;
    child = lab.start(ns, 'hangup', { idleTimeout, trials, jitter, stagger }, idleTimeout + trials * stagger + CHILD_MS);
    const r = await child.next<{ policy: { name: string; poolIdleTimeout: number }; arms: { nodeAgent: HangupArm; socktuneAgent: HangupArm } }>();
    const arm = (a: HangupArm, label: string): HangUpsArm => ({ label, ...a, hangUps: a.errors['socket hang up'] ?? 0 });
    return {
      ran: true,
      where: ns ? `loopback inside namespace ${ns}` : 'loopback, this namespace',
      idleTimeoutMs: idleTimeout,
      jitterMs: jitter,
      trials,
      arms: {
        nodeAgent: arm(r.arms.nodeAgent, 'new http.Agent({ keepAlive: true })'),
        socktuneAgent: arm(r.arms.socktuneAgent, `createAgent(presets.gracefulHeartbeat(), { keepAlive: true })`),
      },
      poolIdleTimeoutMs: r.policy.poolIdleTimeout,
    };
  } catch (err) {
    return { ran: false, error: message(err) };
  } finally {
    if (child) await lab.stop(child);
  }
}
