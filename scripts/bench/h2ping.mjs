// The PING heartbeat of HTTP/2 sessions at scale: what socktune's session watch costs 10,000 idle
// sessions, in CPU per session per keepalive idle time, against a bare timer per session (the
// least any per-session heartbeat costs: a timer that fires and does nothing) and a hand-written
// heartbeat (a timer per session that sends PING, as grpc-js's keepalive does), measured in the
// same run.
//
// The peer is a node:http2 server in a child process on loopback; it answers the PINGs (Node
// acknowledges them) and counts them. The measuring process opens N sessions, makes one request on
// each and leaves them idle, then runs one arm: CPU (user + system, process.cpuUsage) over `rounds`
// idle times after a warm-up of two. Each arm opens its own N sessions (20,000 sockets would not
// fit the descriptor limit twice), to a peer address of its own (127.0.1.x); the first arm,
// nothing running on N idle sessions, is the baseline the others are measured against. The arms
// run forward, then backward, and each is summed over its two runs. Sessions that end during a
// run are counted (they would make an arm look cheaper).
//   - bare timer: setInterval(idle) per session, an empty callback;
//   - hand-written PING: setInterval(idle) per session calling session.ping();
//   - socktune: tune(session, presets.gracefulHeartbeat({ keepAlive: { idle, interval: idle, count: 3 } }))
//     as each session is opened (the kernel options, the guard's deadlines, the session watch: its
//     visits every idle/8 and a PING per idle time), and the same policy with http2.ping false
//     (what the PING itself adds).
//
// Usage: node scripts/bench/h2ping.mjs [--json] [--sessions 10000] [--idle 1000] [--rounds 10]
// The peer (run by the script): node scripts/bench/h2ping.mjs --peer 127.0.1.1,127.0.1.2,...
import http2 from 'node:http2';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { intFlag, printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);
const CONNECT_CONCURRENCY = 500;

if (process.argv.includes('--peer')) {
  // One server per run, each on an address of its own: every run's connections are new 4-tuples.
  // On one address, 10,000 connections a run fill the 28,232 ephemeral ports with TIME_WAIT by the
  // third run, and loopback's tcp_tw_reuse then hands out ports still in TIME_WAIT; some of those
  // connections died under the keepalive arms (ETIMEDOUT), which is the bench's doing, not the arm's.
  const addresses = process.argv[process.argv.indexOf('--peer') + 1].split(',');
  let pings = 0;
  const ports = await Promise.all(
    addresses.map((host) => {
      const server = http2.createServer();
      server.on('session', (session) => {
        session.on('ping', () => pings++);
        session.on('error', () => {});
      });
      server.on('stream', (stream) => {
        stream.respond({ ':status': 200 });
        stream.end('ok');
      });
      return new Promise((resolve) => server.listen({ port: 0, host, backlog: 65_535 }, () => resolve(server.address().port)));
    }),
  );
  process.stdout.write(`${JSON.stringify({ ports })}\n`);
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'pings') process.stdout.write(`${JSON.stringify({ pings, cpu: process.cpuUsage() })}\n`);
  });
  process.stdin.on('end', () => process.exit(0));
}

function startPeer(addresses) {
  const child = spawn(process.execPath, [self, '--peer', addresses.join(',')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const next = () => new Promise((resolve) => lines.once('line', (l) => resolve(JSON.parse(l))));
  return { child, next, ask: (cmd) => (child.stdin.write(`${cmd}\n`), next()) };
}

/** `n` client sessions to `host`:`port`, each with one request answered: connected and idle. */
async function openSessions(host, port, n, onOpen = () => {}) {
  const sessions = [];
  for (let i = 0; i < n; i += CONNECT_CONCURRENCY) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(CONNECT_CONCURRENCY, n - i) }, async () => {
        const session = http2.connect(`http://${host}:${port}`);
        session.on('error', () => {});
        const req = session.request({ ':path': '/' });
        req.resume();
        await once(req, 'end');
        onOpen(session);
        return session;
      }),
    );
    sessions.push(...batch);
  }
  return sessions;
}

async function closeSessions(sessions) {
  await Promise.all(
    sessions.map(
      (s) =>
        new Promise((resolve) => {
          if (s.destroyed) return resolve();
          s.once('close', resolve);
          s.destroy();
        }),
    ),
  );
}

const cpuMs = (u) => (u.user + u.system) / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function h2PingBench({ sessions: n = 10_000, idle = 1000, rounds = 10, quiet = false } = {}) {
  const { presets, tune } = await import('../../dist/index.js');
  const keepAlive = { idle, interval: idle, count: 3 };
  const arms = {
    idle: { what: 'nothing running (baseline)', start: () => () => {} },
    timer: {
      what: 'bare timer: setInterval(idle) per session, empty',
      start: (sessions) => {
        const timers = sessions.map(() => setInterval(() => {}, idle));
        return () => timers.forEach(clearInterval);
      },
    },
    handPing: {
      what: 'hand-written: setInterval(idle) per session, session.ping()',
      start: (sessions) => {
        const timers = sessions.map((s) => setInterval(() => s.ping(() => {}), idle));
        return () => timers.forEach(clearInterval);
      },
    },
    // Tuned as each session is opened, as socktune/register and tune() at connect do. Tuning
    // sessions left idle for seconds first (the last of 10,000 takes several to open) hits a
    // kernel behaviour that is no part of the heartbeat's cost: with TCP_USER_TIMEOUT set, some of
    // a few thousand loopback connections made keepalive-idle-and-more at once end ETIMEDOUT
    // (2,000 plain TCP connections idle 2.5 s, keepalive 1/1/3 s and user timeout 4 s: 123 ended).
    socktuneNoPing: {
      what: 'socktune, http2.ping false (kernel options, guard, watch)',
      policy: () => presets.gracefulHeartbeat({ keepAlive, http2: { ping: false } }),
    },
    socktune: {
      what: 'socktune: tune(session, gracefulHeartbeat) with the PING heartbeat',
      policy: () => presets.gracefulHeartbeat({ keepAlive }),
    },
  };
  const names = Object.keys(arms);
  const order = [...names, ...[...names].reverse()];
  const addresses = order.map((_, i) => `127.0.1.${i + 1}`);
  const peer = startPeer(addresses);
  const { ports } = await peer.next();
  const results = {};
  // Forward then backward (A B C D E E D C B A): the heap a process accumulates arm after arm, and
  // any drift of the machine, weigh on every arm alike; each arm's figures are summed over its two runs.
  for (const [run, name] of order.entries()) {
    const arm = arms[name];
    const policy = arm.policy?.();
    const sessions = await openSessions(addresses[run], ports[run], n, policy === undefined ? undefined : (s) => tune(s, policy));
    const stop = arm.start?.(sessions) ?? (() => {});
    await sleep(2 * idle);
    const peerBefore = await peer.ask('pings');
    const before = process.cpuUsage();
    const t0 = performance.now();
    await sleep(rounds * idle);
    const cpu = cpuMs(process.cpuUsage(before));
    const wall = performance.now() - t0;
    const peerAfter = await peer.ask('pings');
    stop();
    // A session that ended during the run would make the arm look cheaper: counted, and shown.
    const ended = sessions.filter((s) => s.destroyed).length;
    await closeSessions(sessions);
    const r = (results[name] ??= { what: arm.what, cpuMs: 0, wallMs: 0, pings: 0, peerCpuMs: 0, ended: 0, runs: 0 });
    r.ended += ended;
    r.cpuMs += cpu;
    r.wallMs += wall;
    r.pings += peerAfter.pings - peerBefore.pings;
    r.peerCpuMs += cpuMs(peerAfter.cpu) - cpuMs(peerBefore.cpu);
    r.runs++;
  }
  peer.child.stdin.end();
  // Per session per idle time, over the baseline: the heartbeat's own cost.
  const intervals = (name) => n * (results[name].wallMs / idle);
  const overBaseline = (name) => (results[name].cpuMs - (results.idle.cpuMs * results[name].wallMs) / results.idle.wallMs) * 1000;
  const perSession = (name) => overBaseline(name) / intervals(name);
  const json = {
    sessions: n,
    idle,
    rounds,
    method:
      'CPU of the process holding the client sessions (process.cpuUsage, user + system) over rounds × idle, less the baseline (the same sessions, nothing running), per session per idle time; the peer is a node:http2 server in another process',
    arms: Object.fromEntries(
      Object.entries(results).map(([name, r]) => [
        name,
        {
          ...r,
          usPerSessionPerInterval: name === 'idle' ? 0 : perSession(name),
          pingsPerSessionPerInterval: r.pings / intervals(name),
          usPerPing: r.pings === 0 ? null : overBaseline(name) / r.pings,
        },
      ]),
    ),
  };
  const us = (x) => `${x.toFixed(2)} µs`;
  const rows = Object.entries(json.arms)
    .filter(([name]) => name !== 'idle')
    .map(([name, r]) => [
      `h2 PING, ${n.toLocaleString('en')} idle sessions, ${r.what}`,
      `${us(r.usPerSessionPerInterval)}/session/interval`,
      `${(r.usPerSessionPerInterval / json.arms.timer.usPerSessionPerInterval).toFixed(1)}× a bare timer; ${r.pingsPerSessionPerInterval.toFixed(2)} PING/session/interval${r.usPerPing === null ? '' : `, ${r.usPerPing.toFixed(1)} µs/PING`}`,
      '',
      '',
    ]);
  const idleCpu = ((results.idle.cpuMs / results.idle.wallMs) * 100).toFixed(1);
  const ended = Object.entries(results)
    .map(([name, r]) => `${name} ${r.ended}`)
    .join(', ');
  const notes = [
    `h2 PING: idle = interval = ${idle} ms, ${rounds} intervals per arm; baseline (${n.toLocaleString('en')} idle sessions, nothing running) ${idleCpu}% of a core; the peer process's CPU is in the JSON (peerCpuMs).`,
    `  sessions that ended during a run (should be 0): ${ended}`,
  ];
  if (!quiet) printRows(rows, notes);
  return { json, rows, notes };
}

if (process.argv[1] === self && !process.argv.includes('--peer')) {
  const json = process.argv.includes('--json');
  const { json: out } = await h2PingBench({ sessions: intFlag('sessions', 10_000), idle: intFlag('idle', 1000), rounds: intFlag('rounds', 10), quiet: json });
  if (json) console.log(JSON.stringify(out, null, 2));
  process.exit(0);
}
