// socktune/register: an application with no socktune import, started with
// NODE_OPTIONS=--import=socktune/register (or --require, or the flag on the command line) and
// SOCKTUNE_POLICY, has the policy on every TCP connection it opens or accepts: server side, raw
// net.connect and new net.Socket().connect, tls.connect, http.Agent, https.Agent, fetch over http
// and https. Read back from the kernel by witnesses outside the code under test: `ss -tnpoi` (the
// keepalive timer the kernel runs, plus the time since the last packet, is the keepalive idle
// time) and strace (the last value each option was set to on each socket's fd). The application
// loads socktune/register the way users do: from a consumer project's node_modules, through the
// package's `exports`. Also: a Unix-domain connection is left alone and works; SOCKTUNE_CONFIG
// rules by direction, port and host; bad configuration stops the process before the application
// runs; the guards are reachable (stats, createCollector, close); SOCKTUNE_TRACE names the
// function that created a leaked connection.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import dc from 'node:diagnostics_channel';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectPublishes } from '../src/register/process.js';
import { canUse } from './helpers/env.js';
import { closeAll, listen, track } from './helpers/sockets.js';
import { tlsServer } from './helpers/http.js';
import { Netns, ssCount } from './helpers/netns.js';
import { fixtures, keepAliveIdleSeen, runToEnd, ssSockets, startApp, straceOptions, type App, type SsSocket } from './helpers/register.js';

const app = (name: string) => join(fixtures, name);
const tmp = mkdtempSync(join(tmpdir(), 'socktune-register-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** fetch over https trusts the test certificate the way an application would be told to. */
const caEnv = { NODE_EXTRA_CA_CERTS: join(fixtures, 'tls', 'cert.pem') };

/** The keepalive idle the kernel runs, from ss: timer (whole seconds, rounded down) + time since the last packet. */
function expectIdle(s: SsSocket, idle: number): void {
  const seen = keepAliveIdleSeen(s);
  expect(seen, `no keepalive timer: ${s.line}`).toBeDefined();
  // ss rounds the remaining time down to a second; keepalive timers fire on jiffies (±0.5 s).
  expect(seen!, `${s.local} -> ${s.peer}`).toBeGreaterThan(idle - 1500);
  expect(seen!, `${s.local} -> ${s.peer}`).toBeLessThanOrEqual(idle + 500);
}

/**
 * The last values strace saw set on the fd of `s`; for a connection accepted by one of `listeners`
 * (port → the listening socket's fd), on its listener's fd, from which Linux copies them: socktune
 * sets them there once, and nothing on the accepted connection's own fd.
 */
function expectSet(sets: Map<number, Record<string, number>>, s: SsSocket, wanted: Record<string, number>, listeners?: Map<number, number>): void {
  expect(s.fd, `${s.local} -> ${s.peer} has no owner in ss`).toBeDefined();
  const listener = listeners?.get(s.localPort);
  if (listener !== undefined) expect(sets.get(s.fd!)?.TCP_KEEPIDLE, `${s.local} <- ${s.peer}: set on its own fd`).toBeUndefined();
  const got = sets.get(listener ?? s.fd!) ?? {};
  const picked = Object.fromEntries(Object.keys(wanted).map((k) => [k, got[k]]));
  expect(picked, `${s.local} -> ${s.peer} (fd ${listener ?? s.fd}${listener !== undefined ? ', its listener' : ''})`).toEqual(wanted);
}

/** The listening sockets of namespace `ns`, port → fd (`ss -Htlnp`). */
async function listenerFds(ns: string): Promise<Map<number, number>> {
  const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', ns, 'ss', '-Htlnp']);
  const out = new Map<number, number>();
  for (const line of stdout.split('\n')) {
    const port = /:(\d+)\s/.exec(line.split(/\s+/).slice(3, 4).join(' ') + ' ');
    const fd = /fd=(\d+)/.exec(line);
    if (port && fd) out.set(Number(port[1]), Number(fd[1]));
  }
  return out;
}

describe('what this Node publishes on the channels socktune/register builds on', () => {
  afterEach(closeAll);

  /** Every net.client.socket message while `run` runs, with whether the socket was connecting yet. */
  async function published(run: () => Promise<void>): Promise<Array<{ socket: net.Socket; connecting: boolean; handle: boolean }>> {
    const seen: Array<{ socket: net.Socket; connecting: boolean; handle: boolean }> = [];
    const onMessage = (m: unknown) => {
      const socket = (m as { socket: net.Socket }).socket;
      seen.push({ socket, connecting: socket.connecting, handle: (socket as unknown as { _handle: unknown })._handle != null });
    };
    dc.subscribe('net.client.socket', onMessage);
    try {
      await run();
    } finally {
      dc.unsubscribe('net.client.socket', onMessage);
    }
    return seen;
  }

  it(`net.connect() always; new net.Socket().connect() and tls.connect() ${connectPublishes() ? 'too (Node 22+)' : 'not (Node 20: Socket#connect is wrapped)'}; always before connecting`, async () => {
    const server = await listen();
    const { port } = server.address() as net.AddressInfo;
    const viaConnect = await published(async () => {
      await once(track(net.connect(port, '127.0.0.1')), 'connect');
    });
    expect(viaConnect).toHaveLength(1);
    expect(viaConnect[0]).toMatchObject({ connecting: false, handle: false });
    const bare = await published(async () => {
      const socket = track(new net.Socket());
      socket.connect(port, '127.0.0.1');
      await once(socket, 'connect');
    });
    const secure = await tlsServer();
    const viaTls = await published(async () => {
      await once(track(tls.connect({ port: secure.port, host: '127.0.0.1', rejectUnauthorized: false })), 'secureConnect');
    });
    // What socktune/register's feature detection concluded is what this Node does.
    expect(bare.length === 1 && viaTls.length === 1).toBe(connectPublishes());
    expect(bare.length + viaTls.length).toBe(connectPublishes() ? 2 : 0);
    if (connectPublishes()) expect(viaTls[0].socket).toBeInstanceOf(tls.TLSSocket);
  });

  it("net.server.socket: after the server's 'connection' listeners ran, connected", async () => {
    const order: string[] = [];
    const onMessage = (m: unknown) => order.push(`channel:${(m as { socket: net.Socket }).socket.connecting}`);
    dc.subscribe('net.server.socket', onMessage);
    try {
      const server = await listen();
      server.on('connection', () => order.push('connection'));
      await once(track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')), 'connect');
      while (order.length < 2) await new Promise((r) => setImmediate(r));
    } finally {
      dc.unsubscribe('net.server.socket', onMessage);
    }
    expect(order).toEqual(['connection', 'channel:false']);
  });
});

const gracefulHeartbeat = { SO_KEEPALIVE: 1, TCP_KEEPIDLE: 30, TCP_KEEPINTVL: 10, TCP_KEEPCNT: 3, TCP_USER_TIMEOUT: 60_000 };
/**
 * Node 20's keep-alive agents have Node set SO_KEEPALIVE with keepAliveMsecs (1 s) at connect:
 * 1 s + 10 probes × 1 s is a shorter dead-peer budget than a policy's, which keeps it, and the
 * user timeout follows it (11 s).
 */
const nodeAgent = { SO_KEEPALIVE: 1, TCP_KEEPIDLE: 1, TCP_KEEPINTVL: 1, TCP_KEEPCNT: 10, TCP_USER_TIMEOUT: 11_000 };

/** The client ends of the application's http.Agent and https.Agent connections. */
const agentEnds = (locals: Record<string, number>) => [locals.agent, locals.secureAgent];

describe.runIf(canUse('ip', 'ss', 'strace'))('SOCKTUNE_POLICY=gracefulHeartbeat: every established TCP connection of an unchanged application', () => {
  const ns = new Netns('reg');
  beforeAll(() => {
    ns.create();
  });
  afterAll(() => ns.destroy());

  const ways: Array<{ how: string; script: string; env: Record<string, string>; nodeArgs: string[] }> = [
    {
      how: 'NODE_OPTIONS=--import=socktune/register, ES module application',
      script: 'register-app.mjs',
      env: { NODE_OPTIONS: '--import=socktune/register' },
      nodeArgs: [],
    },
    {
      how: 'NODE_OPTIONS=--require=socktune/register, CommonJS application',
      script: 'register-app.cjs',
      env: { NODE_OPTIONS: '--require=socktune/register' },
      nodeArgs: [],
    },
    { how: 'node --import socktune/register', script: 'register-app.mjs', env: {}, nodeArgs: ['--import', 'socktune/register'] },
    { how: 'node --require socktune/register', script: 'register-app.cjs', env: {}, nodeArgs: ['--require', 'socktune/register'] },
  ];

  it.each(ways)('$how', async ({ script, env, nodeArgs }) => {
    const trace = join(tmp, `strace-${script}-${nodeArgs.length}.log`);
    const a = await startApp(app(script), { ns: ns.name, env: { ...caEnv, ...env, SOCKTUNE_POLICY: 'gracefulHeartbeat' }, nodeArgs, strace: trace });
    try {
      const { port, securePort, locals, unixEcho } = a.ready as { port: number; securePort: number; locals: Record<string, number>; unixEcho: string };
      const sockets = await ssSockets(ns.name);
      // 7 connections, both ends in this process: raw, bare, tls.connect, http.Agent, https.Agent, fetch http, fetch https.
      expect(sockets).toHaveLength(14);
      expect(sockets.filter((s) => s.peerPort === port)).toHaveLength(4);
      expect(sockets.filter((s) => s.localPort === port)).toHaveLength(4);
      expect(sockets.filter((s) => s.peerPort === securePort)).toHaveLength(3);
      expect(sockets.filter((s) => s.localPort === securePort)).toHaveLength(3);
      for (const local of Object.values(locals)) expect(sockets.map((s) => s.localPort)).toContain(local);
      const sets = straceOptions(trace);
      const listeners = await listenerFds(ns.name);
      for (const s of sockets) {
        const agent = agentEnds(locals).includes(s.localPort);
        expectIdle(s, agent ? 1000 : 30_000);
        // An accepted connection inherits the policy from its listener (socktune/register put it
        // there once): the kernel runs its keepalive (above), set on the listener's fd.
        expectSet(sets, s, agent ? nodeAgent : gracefulHeartbeat, listeners);
      }
      // The Unix-domain connection was passed through: it works, and it is counted as untuned.
      expect(unixEcho).toBe('ping');
      const { stats, guards } = (await a.send('stats')) as { stats: Record<string, number>; guards: Record<string, { untuned: number; seen: number }> };
      expect(stats).toEqual({
        opened: 8,
        accepted: 8,
        tuned: 14,
        untuned: 2,
        explicit: 0,
        unmatched: 0,
        refused: 0,
        retried: 0,
        stale: 0,
        sessions: 0,
        active: true,
      });
      expect(Object.keys(guards)).toEqual(['default']);
      expect(guards.default).toMatchObject({ seen: 14, untuned: 2 });
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });

  it("control: the same application without socktune/register has Node's settings, which the witnesses tell apart", async () => {
    const trace = join(tmp, 'strace-control.log');
    const a = await startApp(app('register-app.mjs'), { ns: ns.name, env: caEnv, strace: trace });
    try {
      const { locals } = a.ready as { locals: Record<string, number> };
      const sockets = await ssSockets(ns.name);
      expect(sockets).toHaveLength(14);
      // A raw connection has no keepalive at all; nothing anywhere was set to the policy's 30 s.
      const raw = sockets.find((s) => s.localPort === locals.raw)!;
      expect(raw.keepAliveTimer).toBeUndefined();
      const sets = straceOptions(trace);
      expect(sockets.filter((s) => sets.get(s.fd!)?.TCP_KEEPIDLE === 30)).toEqual([]);
      expect(sockets.filter((s) => sets.get(s.fd!)?.TCP_USER_TIMEOUT !== undefined)).toEqual([]);
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });

  it('the guard is reachable: createCollector() exports it unasked, and close() ends every connection it tracks', async () => {
    const a = await startApp(app('register-app.mjs'), {
      ns: ns.name,
      env: { ...caEnv, NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: 'gracefulHeartbeat' },
    });
    try {
      const { metrics } = (await a.send('metrics')) as { metrics: string };
      expect(metrics).toMatch(/^socktune_guard_connections\{guard="default",state="tracked"\} 14$/m);
      expect(metrics).toMatch(/^socktune_guard_closed_total\{guard="default",reason="half-closed"\} 0$/m);
      const { report, guards } = (await a.send('close')) as { report: { ended: number; forced: number }; guards: Record<string, { tracked: number }> };
      expect(report.ended + report.forced).toBe(14);
      expect(guards.default.tracked).toBe(0);
      expect(await ssSockets(ns.name)).toEqual([]);
    } finally {
      await a.stop();
    }
  });

  it('policies compose and take JSON overrides: the user timeout follows the overridden keepalive', async () => {
    const trace = join(tmp, 'strace-json.log');
    const policy = JSON.stringify({ preset: 'gracefulHeartbeat+rstOnClose', keepAlive: { idle: 12_000, interval: 2000 } });
    const a = await startApp(app('register-app.mjs'), {
      ns: ns.name,
      env: { ...caEnv, NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: policy },
      strace: trace,
    });
    try {
      const { locals } = a.ready as { locals: Record<string, number> };
      const sockets = await ssSockets(ns.name);
      expect(sockets).toHaveLength(14);
      const sets = straceOptions(trace);
      const listeners = await listenerFds(ns.name);
      for (const s of sockets) {
        const agent = agentEnds(locals).includes(s.localPort);
        expectIdle(s, agent ? 1000 : 12_000);
        expectSet(sets, s, agent ? nodeAgent : { SO_KEEPALIVE: 1, TCP_KEEPIDLE: 12, TCP_KEEPINTVL: 2, TCP_KEEPCNT: 3, TCP_USER_TIMEOUT: 18_000 }, listeners);
      }
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });
});

describe('a socket that connects again keeps its policy', () => {
  afterEach(closeAll);

  it('every connection of a net.Socket that reconnects in place gets the policy and the guard, counted as tuned', async () => {
    const server = await listen('127.0.0.1');
    server.on('connection', (s) => s.resume());
    const port = (server.address() as net.AddressInfo).port;
    const a = await startApp(app('reconnect-app.mjs'), {
      env: { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: 'gracefulHeartbeat' },
      args: ['127.0.0.1', String(port), '3'],
    });
    try {
      const policy = { keepAlive: { idle: 30_000, interval: 10_000, count: 3 }, userTimeout: 60_000, guarded: true };
      expect(a.ready.connections).toEqual([policy, policy, policy]);
      expect(a.ready.stats).toMatchObject({ opened: 3, tuned: 3, explicit: 0 });
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });
});

describe.runIf(canUse('ip', 'ss', 'strace'))('SOCKTUNE_CONFIG: rules by direction, port and host', () => {
  const ns = new Netns('regr');
  beforeAll(() => {
    ns.create();
  });
  afterAll(() => ns.destroy());

  it('the first matching rule decides; policy false and no match leave a connection alone', async () => {
    const file = join(tmp, 'rules.json');
    writeFileSync(
      file,
      JSON.stringify({
        rules: [
          {
            name: 'postgres',
            direction: 'opened',
            port: 5432,
            host: ['db.internal', 'localhost'],
            policy: { preset: 'gracefulHeartbeat', keepAlive: { idle: 10_000, interval: 2000, count: 4 } },
          },
          { name: 'https-out', direction: 'opened', port: 443, policy: 'rstOnClose' },
          { name: 'elsewhere', direction: 'opened', port: 6000, host: '10.9.9.9', policy: 'gracefulHeartbeat' },
          { name: 'public', direction: 'accepted', localPort: 443, policy: false },
          { name: 'servers', direction: 'accepted', policy: 'gracefulHeartbeat' },
        ],
      }),
    );
    const trace = join(tmp, 'strace-rules.log');
    const a = await startApp(app('register-rules-app.mjs'), {
      ns: ns.name,
      env: { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_CONFIG: file },
      strace: trace,
    });
    try {
      const { locals } = a.ready as { locals: Record<string, number> };
      const sockets = await ssSockets(ns.name);
      expect(sockets).toHaveLength(6);
      const sets = straceOptions(trace);
      const opened = (port: number) => sockets.find((s) => s.localPort === locals[port])!;
      const accepted = (port: number) => sockets.find((s) => s.localPort === port)!;
      // Opened to localhost:5432: the postgres rule (matched by the name the application connected to).
      expectIdle(opened(5432), 10_000);
      expectSet(sets, opened(5432), { SO_KEEPALIVE: 1, TCP_KEEPIDLE: 10, TCP_KEEPINTVL: 2, TCP_KEEPCNT: 4, TCP_USER_TIMEOUT: 18_000 });
      // Accepted on 5432 and 6000: the servers rule.
      const listeners = await listenerFds(ns.name);
      for (const port of [5432, 6000]) {
        expectIdle(accepted(port), 30_000);
        expectSet(sets, accepted(port), gracefulHeartbeat, listeners);
      }
      // Nothing on the listener whose rule is policy false.
      expect(sets.get(listeners.get(443)!)?.TCP_KEEPIDLE).toBeUndefined();
      // Accepted on 443 (policy false), opened to 6000 (its rule wants another host), opened to 443
      // (rstOnClose sets no kernel option): no keepalive, no option set.
      for (const s of [accepted(443), opened(6000), opened(443)]) {
        expect(s.keepAliveTimer, `${s.local} -> ${s.peer}`).toBeUndefined();
        expect(sets.get(s.fd!)?.TCP_USER_TIMEOUT, `${s.local} -> ${s.peer}`).toBeUndefined();
      }
      const { stats, guards } = (await a.send('stats')) as { stats: Record<string, number>; guards: string[] };
      expect(stats).toEqual({
        opened: 3,
        accepted: 3,
        tuned: 4,
        untuned: 0,
        explicit: 0,
        unmatched: 2,
        refused: 0,
        retried: 0,
        stale: 0,
        sessions: 0,
        active: true,
      });
      expect(guards).toEqual(['postgres', 'https-out', 'elsewhere', 'servers']);

      // RST-on-close on the connection to 443: the server sees a reset and no TIME_WAIT is left
      // for it; the control on 6000 closes with FIN and leaves one.
      expect(await a.send('close 443')).toEqual({ closed: 443, serverSaw: 'ECONNRESET' });
      expect(await a.send('close 6000')).toEqual({ closed: 6000, serverSaw: 'end' });
      expect(await ssCount('time-wait', '( dport = :443 )', ns)).toBe(0);
      expect(await ssCount('time-wait', '( dport = :6000 )', ns)).toBe(1);
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });
});

describe('bad configuration stops the process before the application runs', () => {
  const file = (name: string, content: string) => {
    const path = join(tmp, name);
    writeFileSync(path, content);
    return path;
  };
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['nothing configured', {}, /neither SOCKTUNE_POLICY \(e\.g\. gracefulHeartbeat\) nor SOCKTUNE_CONFIG/],
    [
      'an unknown preset',
      { SOCKTUNE_POLICY: 'gracefulHeartbeet' },
      /SOCKTUNE_POLICY: unknown preset 'gracefulHeartbeet'; presets: gracefulHeartbeat, rstOnClose/,
    ],
    ['an empty policy', { SOCKTUNE_POLICY: ' ' }, /SOCKTUNE_POLICY: is empty/],
    ['a preset twice', { SOCKTUNE_POLICY: 'gracefulHeartbeat+gracefulHeartbeat' }, /names preset 'gracefulHeartbeat' twice/],
    ['an empty name in a chain', { SOCKTUNE_POLICY: 'gracefulHeartbeat+' }, /has an empty preset name/],
    ['invalid JSON', { SOCKTUNE_POLICY: '{"preset": gracefulHeartbeat}' }, /SOCKTUNE_POLICY: is not valid JSON/],
    ['a misspelt field', { SOCKTUNE_POLICY: '{"preset":"gracefulHeartbeat","keepalive":{"idle":5000}}' }, /has no field 'keepalive'/],
    ['a value out of range', { SOCKTUNE_POLICY: '{"preset":"gracefulHeartbeat","keepAlive":{"idle":1.5}}' }, /out of range/],
    ['a string where a number goes', { SOCKTUNE_POLICY: '{"keepAlive":{"idle":"30000","interval":1000,"count":3}}' }, /must be of type number/],
    [
      'a heartbeat (it needs a ping function)',
      { SOCKTUNE_POLICY: '{"preset":"gracefulHeartbeat","heartbeat":{"interval":1000,"timeout":1000}}' },
      /heartbeat\.ping/,
    ],
    ['both variables', { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_CONFIG: '/dev/null' }, /are both set/],
    ['a missing file', { SOCKTUNE_CONFIG: '/nonexistent/socktune.json' }, /SOCKTUNE_CONFIG \(\/nonexistent\/socktune\.json\): cannot be read: ENOENT/],
    ['SOCKTUNE_TRACE not 1 or 0', { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_TRACE: 'yes' }, /SOCKTUNE_TRACE: must be 1 or 0/],
  ];
  const fileCases: Array<[string, string, RegExp]> = [
    ['a file of invalid JSON', '{ rules: [] }', /is not valid JSON/],
    ['a file with neither rules nor policy', '{}', /has neither "rules" nor a default "policy"/],
    ['an unknown field in a rule', '{"rules":[{"prot":5432,"policy":"gracefulHeartbeat"}]}', /rules\[0\]: has no field 'prot'/],
    ['a port out of range', '{"rules":[{"port":70000,"policy":"gracefulHeartbeat"}]}', /rules\[0\]\.port: must be a port number 1\.\.65535; got 70000/],
    ['a bad direction', '{"rules":[{"direction":"outbound","policy":"gracefulHeartbeat"}]}', /rules\[0\]\.direction: must be "opened" or "accepted"/],
    ['a rule without a policy', '{"rules":[{"port":5432}]}', /rules\[0\]: has no "policy"/],
    [
      'a rule that can never apply',
      '{"rules":[{"direction":"opened","policy":"rstOnClose"},{"direction":"opened","port":443,"policy":"gracefulHeartbeat"}]}',
      /rules\[1\] can never apply: rule 'rules\[0\]' before it/,
    ],
    ['a default after a catch-all', '{"rules":[{"policy":"rstOnClose"}],"policy":"gracefulHeartbeat"}', /the default "policy" can never apply/],
    ['a name used twice', '{"rules":[{"name":"a","port":1,"policy":"rstOnClose"},{"name":"a","port":2,"policy":"rstOnClose"}]}', /'a' is used twice/],
    ['a policy of the wrong type in a rule', '{"rules":[{"port":5432,"policy":30000}]}', /rules\[0\]\.policy: must be preset names/],
  ];
  const all: Array<[string, Record<string, string>, RegExp]> = [
    ...cases,
    ...fileCases.map(([what, content, message], i): [string, Record<string, string>, RegExp] => [
      what,
      { SOCKTUNE_CONFIG: file(`bad-${i}.json`, content) },
      message,
    ]),
  ];

  it.each(all)('%s', async (_what, env, message) => {
    const { code, stdout, stderr } = await runToEnd(['--import', 'socktune/register', '-e', 'console.log("application ran")'], env);
    expect(stdout).not.toContain('application ran');
    expect(code).toBe(9);
    expect(stderr).toMatch(/^socktune\/register: bad configuration, not starting: /);
    expect(stderr).toMatch(message);
    expect(stderr).toMatch(/\(ERR_SOCKTUNE_CONFIG\)\n$/);
    // One line: a message, not a stack trace.
    expect(stderr.trim().split('\n')).toHaveLength(1);
  });

  it('the same under --require, and a good configuration lets the application run', async () => {
    const bad = await runToEnd(['--require', 'socktune/register', '-e', 'console.log("application ran")'], { SOCKTUNE_POLICY: 'rstOnclose' });
    expect(bad.code).toBe(9);
    expect(bad.stderr).toMatch(/unknown preset 'rstOnclose'/);
    expect(bad.stdout).toBe('');
    const good = await runToEnd(['--import', 'socktune/register', '-e', 'console.log("application ran")'], {
      SOCKTUNE_CONFIG: file('good.json', '{"rules":[{"direction":"accepted","policy":"gracefulHeartbeat"}],"policy":"rstOnClose","trace":true}'),
    });
    expect(good).toEqual({ code: 0, stdout: 'application ran\n', stderr: '' });
  });
});

describe.runIf(canUse('ip'))('SOCKTUNE_TRACE=1: the line of code that created a leaked connection', () => {
  const ns = new Netns('regt');
  beforeAll(() => {
    ns.create();
  });
  afterAll(() => ns.destroy());
  // Short deadlines so the guard closes the leaks within seconds; FIN-wait left to the peer.
  const policy = JSON.stringify({ preset: 'gracefulHeartbeat', halfCloseTimeout: 800, finWaitTimeout: false, idleTimeout: 2500, scanInterval: 200 });

  async function closes(a: App, wanted: (closed: Array<Record<string, unknown>>) => boolean): Promise<Array<Record<string, unknown>>> {
    const closed: Array<Record<string, unknown>> = [];
    while (!wanted(closed)) closed.push(await a.next());
    return closed;
  }
  const enough = (closed: Array<Record<string, unknown>>) =>
    closed.filter((c) => c.closed === 'half-closed').length === 2 && closed.some((c) => c.closed === 'idle');

  it("one stderr line per half-closed or idle close, naming the application's function and file:line, not Node's or socktune's", async () => {
    const a = await startApp(app('register-leak.mjs'), {
      ns: ns.name,
      env: { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: policy, SOCKTUNE_TRACE: '1' },
    });
    try {
      const { ports } = a.ready as { ports: Record<string, number> };
      const closed = await closes(a, enough);
      const lines = a
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('socktune: closed '));
      const traced = closed.filter((c) => c.closed === 'half-closed' || c.closed === 'idle');
      expect(lines).toHaveLength(traced.length);
      const file = /\(file:\/\/\/\S+\/register-leak\.mjs:\d+:\d+\)/.source;
      // The client this process opened and paused: CLOSE_WAIT on the opened side.
      const opened = lines.filter((l) => l.includes(`-> 127.0.0.1:${ports.ending} `));
      expect(opened).toHaveLength(1);
      expect(opened[0]).toMatch(
        new RegExp(
          `^socktune: closed half-closed connection 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${ports.ending} \\(rule default, fin\\); origin: connect at openLeakyClient ${file} < main ${file}`,
        ),
      );
      // The half-open server's side: CLOSE_WAIT on the accepted side, created by server.listen() in listenForLeaks.
      const accepted = lines.filter((l) => l.includes(`127.0.0.1:${ports.halfOpen} <- `));
      expect(accepted).toHaveLength(1);
      expect(accepted[0]).toMatch(
        new RegExp(
          `^socktune: closed half-closed connection 127\\.0\\.0\\.1:${ports.halfOpen} <- 127\\.0\\.0\\.1:\\d+ \\(rule default, fin\\); origin: listen at listenForLeaks ${file} < main ${file}`,
        ),
      );
      // The unused connection: idle, on whichever side the guard reached first.
      const idle = lines.filter((l) => l.startsWith('socktune: closed idle connection'));
      expect(idle.length).toBeGreaterThanOrEqual(1);
      for (const l of idle) expect(l).toMatch(new RegExp(`origin: (connect at openIdleConnection|listen at listenForLeaks) ${file}`));
      for (const l of lines) {
        expect(l).not.toMatch(/node:|\/dist\//);
      }
      // The guard's own events carry the same origin.
      const event = traced.find((c) => c.closed === 'half-closed' && c.remote === ports.ending)!;
      expect(opened[0]).toContain(`origin: ${event.origin as string}`);
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });

  it('without SOCKTUNE_TRACE the guard closes the same leaks silently and records no origin', async () => {
    const a = await startApp(app('register-leak.mjs'), { ns: ns.name, env: { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: policy } });
    try {
      const closed = await closes(a, enough);
      expect(closed.every((c) => c.origin === undefined)).toBe(true);
      expect(a.stderr()).toBe('');
    } finally {
      expect(await a.stop()).toBe(0);
    }
  });
});
