// The pool-retry section of the benchmarks: what arming the retry of a request whose pooled
// connection is closed under it (policy.poolRetry, src/integrations/retry.ts and undici-retry.ts)
// costs requests that do not fail.
//
// A minimal http.Server (res.end('ok'), keepAliveTimeout 60 s so no connection is closed during the
// run) runs in a child process on loopback. Each arm is a long-lived client child that keeps
// IN_FLIGHT keep-alive GET requests in flight to it, so after the first few every request goes out
// on a reused connection (with the retry on, one armed per request). Arms:
//   nodeAgent       http.Agent({ keepAlive: true })                                  (Node, no socktune)
//   agentOff        createAgent(presets.gracefulHeartbeat({ poolRetry: false }))
//   agentOn         createAgent(presets.gracefulHeartbeat())                          (retry armed on every reuse)
//   undiciAgent     undici's request() through new undici.Agent()                      (undici, no socktune)
//   dispatcherOff   request() through createDispatcher(gracefulHeartbeat({ poolRetry: false }))
//   dispatcherOn    request() through createDispatcher(gracefulHeartbeat())            (the retry interceptor)
//   registerOff     --import socktune/register, SOCKTUNE_POLICY={"preset":"gracefulHeartbeat","poolRetry":false}, http.Agent({ keepAlive: true })
//   registerOn      --import socktune/register, SOCKTUNE_POLICY=gracefulHeartbeat, the same agent (patched addRequest/reuseSocket)
//   fetchOff        register as registerOff, Node's global fetch
//   fetchOn         register as registerOn, Node's global fetch (its dispatcher composed with the interceptor)
// Every client child warms up first. Then, round by round, each pair runs as ABBA or BAAB
// (alternating), back to back, so a drift of the machine within the pair cancels and noise hits
// both arms alike; arms without a pair run once; the order of pairs rotates each round. Batches are
// sized to about --batch-ms at the pair's warm rate. Per batch: the client's requests/s and its CPU
// time (user + system) per request. Each arm is summarised by its median over the rounds (and the
// quartiles); a pair (off, on) by the median of its per-round ratios (paired), with quartiles and
// range. Goal: with-retry / without-retry requests/s ≥ 0.99.
//
// Usage: node scripts/bench/retry.mjs [--json] [--rounds 21] [--batch-ms 120] [--in-flight 8] [--arms agentOff,agentOn,...]
// Children (run by the parent):
//   node scripts/bench/retry.mjs --server
//   node [--import socktune/register] scripts/bench/retry.mjs --client --arm NAME --port P --in-flight N
import http from 'node:http';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { median } from './measure.mjs';
import { intFlag, printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);
const root = resolve(dirname(self), '..', '..');

export const GOALS = { ratio: 0.99 };
const DEFAULTS = { rounds: 21, batchMs: 120, inFlight: 8 };
/** Requests per batch at least and at most, whatever the warm rate. */
const BATCH_REQUESTS = { min: 200, max: 10_000 };
const WARMUP = 10_000;
const WARM_RATE_REQUESTS = 2000;
const CHILD_MS = 60_000;
const REGISTER_OFF = JSON.stringify({ preset: 'gracefulHeartbeat', poolRetry: false });

const ARMS = {
  nodeAgent: { client: 'http', pool: 'node', label: 'http.Agent({ keepAlive: true }), no socktune' },
  agentOff: { client: 'http', pool: 'policy', poolRetry: false, label: 'createAgent(gracefulHeartbeat({ poolRetry: false }))' },
  agentOn: { client: 'http', pool: 'policy', label: 'createAgent(gracefulHeartbeat()), retry armed' },
  undiciAgent: { client: 'request', pool: 'undici', label: 'undici request(), new Agent(), no socktune' },
  dispatcherOff: { client: 'request', pool: 'policy', poolRetry: false, label: 'request(), createDispatcher(… poolRetry: false)' },
  dispatcherOn: { client: 'request', pool: 'policy', label: 'request(), createDispatcher(gracefulHeartbeat()), retry' },
  registerOff: { client: 'http', pool: 'node', register: REGISTER_OFF, label: 'register, http.Agent, poolRetry: false' },
  registerOn: { client: 'http', pool: 'node', register: 'gracefulHeartbeat', label: 'register, http.Agent, retry armed' },
  fetchOff: { client: 'fetch', pool: 'global', register: REGISTER_OFF, label: 'register, global fetch, poolRetry: false' },
  fetchOn: { client: 'fetch', pool: 'global', register: 'gracefulHeartbeat', label: 'register, global fetch, retry' },
};
/** [name, without retry, with retry]: the ratios the goal is about. */
const PAIRS = [
  ['createAgent', 'agentOff', 'agentOn'],
  ['createDispatcher', 'dispatcherOff', 'dispatcherOn'],
  ['register, http.Agent', 'registerOff', 'registerOn'],
  ['register, global fetch', 'fetchOff', 'fetchOn'],
];

function flag(argv, name, fallback) {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? fallback : argv[i + 1];
}

const print = (m) => new Promise((done) => process.stdout.write(`${JSON.stringify(m)}\n`, done));

// ---------------------------------------------------------------- children

async function serverChild() {
  let connections = 0;
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    res.end('ok');
  });
  // No connection is closed while the bench runs: every failure-free request is what is measured.
  server.keepAliveTimeout = 60_000;
  server.on('connection', () => connections++);
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'stats') void print({ connections, requests });
  });
  process.stdin.on('end', () => process.exit(0));
  await print({ port: server.address().port });
}

/** The request function of an arm: resolves when the whole response has been read. */
async function requester(arm, port, inFlight) {
  const url = `http://127.0.0.1:${port}/`;
  const counts = { reused: 0 };
  if (arm.client === 'http') {
    let agent;
    if (arm.pool === 'policy') {
      const { createAgent, presets } = await import('../../dist/index.js');
      agent = createAgent(presets.gracefulHeartbeat(arm.poolRetry === false ? { poolRetry: false } : undefined), { maxSockets: inFlight });
    } else {
      agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
    }
    const options = { host: '127.0.0.1', port, path: '/', agent };
    const one = () =>
      new Promise((done, fail) => {
        const req = http.get(options, (res) => {
          if (req.reusedSocket) counts.reused++;
          res.resume();
          res.once('end', done);
        });
        req.once('error', fail);
      });
    // The retry wraps a reused socket's emit (once per socket): a witness that it was armed.
    const hooked = () =>
      Object.values(agent.freeSockets)
        .flat()
        .some((socket) => socket.emit !== Object.getPrototypeOf(socket).emit);
    return { one, counts, retried: () => agent.retried ?? 0, hooked };
  }
  if (arm.client === 'request') {
    const undici = await import('undici');
    let dispatcher;
    if (arm.pool === 'policy') {
      const { createDispatcher, presets } = await import('../../dist/index.js');
      dispatcher = createDispatcher(presets.gracefulHeartbeat(arm.poolRetry === false ? { poolRetry: false } : undefined));
    } else {
      dispatcher = new undici.Agent();
    }
    const one = async () => {
      const { body } = await undici.request(url, { dispatcher });
      await body.text();
    };
    return { one, counts, retried: () => dispatcher.retried ?? 0, composed: () => composed(dispatcher) };
  }
  // Node's global fetch (its bundled undici), under socktune/register.
  const one = async () => {
    const res = await fetch(url);
    await res.text();
  };
  return { one, counts, retried: () => 0, composed: () => composed(globalThis[Symbol.for('undici.globalDispatcher.1')]) };
}

/** Whether a dispatcher's dispatch is not its class's own: an interceptor (socktune's retry) is in front. */
function composed(dispatcher) {
  if (typeof dispatcher?.dispatch !== 'function') return false;
  // undici 6's compose (Node 20's fetch) makes a ComposedDispatcher; undici 7's puts a dispatch in front of the class's.
  return dispatcher.constructor.name === 'ComposedDispatcher' || dispatcher.dispatch !== Object.getPrototypeOf(dispatcher).dispatch;
}

async function clientChild(argv) {
  const name = flag(argv, 'arm');
  const arm = ARMS[name];
  if (arm === undefined) throw new RangeError(`--arm must be one of ${Object.keys(ARMS).join(', ')}, got '${name}'`);
  const port = Number(flag(argv, 'port'));
  const inFlight = Number(flag(argv, 'in-flight', DEFAULTS.inFlight));
  const { one, counts, retried, composed: isComposed, hooked } = await requester(arm, port, inFlight);
  const run = async (n) => {
    let started = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (started < n) {
          started++;
          await one();
        }
      }),
    );
  };
  await run(WARMUP);
  // A warm rate, for the parent to size batches by.
  const w0 = performance.now();
  await run(WARM_RATE_REQUESTS);
  const warmRate = WARM_RATE_REQUESTS / ((performance.now() - w0) / 1000);
  createInterface({ input: process.stdin }).on('line', async (line) => {
    const m = /^run (\d+)$/.exec(line.trim());
    if (!m) return;
    const n = Number(m[1]);
    const reused0 = counts.reused;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await run(n);
    const cpu = process.cpuUsage(cpu0);
    const seconds = (performance.now() - t0) / 1000;
    await print({ requests: n, seconds, rate: n / seconds, cpuMicros: (cpu.user + cpu.system) / n, reused: counts.reused - reused0, retried: retried() });
  });
  process.stdin.on('end', () => process.exit(0));
  const registered = arm.register !== undefined ? (await import('socktune/register')).stats() : undefined;
  // Whether undici's and fetch's requests went through an interceptor (the retry's).
  await print({ ready: true, warmRate, registered: registered !== undefined, composed: isComposed?.(), hooked: hooked?.() });
}

// ---------------------------------------------------------------- parent

/** A child process answering one JSON line per command; the first line is its greeting. */
function startChild(args, env) {
  const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const queue = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (l) => (waiters.length ? waiters.shift().resolve(l) : queue.push(l)));
  child.on('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${args.join(' ')} exited (${signal ?? code}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
  });
  const next = () =>
    new Promise((ok, fail) => {
      if (queue.length) return ok(JSON.parse(queue.shift()));
      const timer = setTimeout(() => fail(new Error(`${args.join(' ')}: no answer in ${CHILD_MS} ms`)), CHILD_MS);
      waiters.push({ resolve: (l) => (clearTimeout(timer), ok(JSON.parse(l))), reject: (e) => (clearTimeout(timer), fail(e)) });
    });
  const ask = (cmd) => {
    child.stdin.write(`${cmd}\n`);
    return next();
  };
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.stdin.end();
  };
  return { child, next, ask, stop };
}

function childEnv(extra) {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('SOCKTUNE_') || key === 'NODE_OPTIONS') delete env[key];
  return Object.assign(env, extra);
}

/**
 * Runs the section. Returns `{ rows, json }`: rows for scripts/bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and every measured number as JSON.
 */
export async function retryBench(options = {}) {
  const o = { ...DEFAULTS, arms: Object.keys(ARMS), quiet: false, ...options };
  const log = (m) => o.quiet || process.stderr.write(`${m}\n`);
  for (const a of o.arms) if (ARMS[a] === undefined) throw new RangeError(`unknown arm '${a}'; arms: ${Object.keys(ARMS).join(', ')}`);
  const children = [];
  const batches = [];
  const ready = {};
  try {
    const server = startChild([self, '--server'], childEnv({}));
    children.push(server);
    const { port } = await server.next();
    const clients = {};
    // Started and warmed up one after another, so no warm-up runs beside another.
    for (const name of o.arms) {
      const arm = ARMS[name];
      const env = childEnv(arm.register !== undefined ? { SOCKTUNE_POLICY: arm.register } : {});
      const flags = arm.register !== undefined ? ['--import', 'socktune/register'] : [];
      const c = startChild([...flags, self, '--client', '--arm', name, '--port', String(port), '--in-flight', String(o.inFlight)], env);
      children.push(c);
      ready[name] = await c.next();
      clients[name] = c;
    }
    // Units of the order: each pair (without, with) as ABBA or BAAB (alternating), which cancels a
    // drift of the machine within the unit, and every arm without a pair on its own; the units
    // rotate round by round. A unit's batches have the same size: batchMs at its slowest arm's
    // warm rate.
    const units = [];
    for (const [, off, on] of PAIRS) if (o.arms.includes(off) && o.arms.includes(on)) units.push([off, on]);
    for (const name of o.arms) if (!units.some((u) => u.includes(name))) units.push([name]);
    const size = new Map(
      units.map((u) => {
        const rate = Math.min(...u.map((name) => ready[name].warmRate));
        return [u, Math.min(BATCH_REQUESTS.max, Math.max(BATCH_REQUESTS.min, Math.round((rate * o.batchMs) / 1000)))];
      }),
    );
    log(
      `retry: ${o.rounds} rounds × ${o.arms.length} arms, batches of about ${o.batchMs} ms (${units.map((u) => `${u.join('/')} ${size.get(u)}`).join(', ')} requests), ${o.inFlight} in flight ...`,
    );
    for (let round = 0; round < o.rounds; round++) {
      const k = round % units.length;
      const rotated = [...units.slice(k), ...units.slice(0, k)];
      for (const [i, u] of rotated.entries()) {
        const [a, b] = (round + i) % 2 ? [...u].reverse() : u;
        for (const name of b === undefined ? [a] : [a, b, b, a]) {
          const before = await server.ask('stats');
          const r = await clients[name].ask(`run ${size.get(u)}`);
          const after = await server.ask('stats');
          const batch = { round, arm: name, ...r, connections: after.connections - before.connections, served: after.requests - before.requests };
          batches.push(batch);
          log(
            `retry: round ${round + 1}, ${name}: ${Math.round(batch.rate)} req/s, ${batch.cpuMicros.toFixed(1)} µs CPU/req, ${batch.connections} new connections`,
          );
        }
      }
    }
  } catch (err) {
    const json = { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
    return { rows: retryRows(json), json };
  } finally {
    for (const c of children) c.stop();
  }
  return summarize(batches, ready, o);
}

/** The value at fraction `q` of sorted `xs`, linear between neighbours. */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (at - lo);
}

function spread(xs) {
  return { median: median(xs), p25: quantile(xs, 0.25), p75: quantile(xs, 0.75), min: Math.min(...xs), max: Math.max(...xs) };
}

function summarize(batches, ready, o) {
  const rounds = [...new Set(batches.map((b) => b.round))];
  // An arm's figures of one round: all its batches of the round taken together.
  const perRound = (name, round) => {
    const mine = batches.filter((b) => b.arm === name && b.round === round);
    const requests = mine.reduce((t, b) => t + b.requests, 0);
    return {
      rate: requests / mine.reduce((t, b) => t + b.seconds, 0),
      cpuMicros: mine.reduce((t, b) => t + b.cpuMicros * b.requests, 0) / requests,
    };
  };
  const arms = {};
  for (const name of o.arms) {
    const mine = batches.filter((b) => b.arm === name);
    const byRound = rounds.map((r) => perRound(name, r));
    arms[name] = {
      label: ARMS[name].label,
      requestsPerSecond: spread(byRound.map((x) => x.rate)),
      cpuMicrosPerRequest: spread(byRound.map((x) => x.cpuMicros)),
      warmRate: ready[name].warmRate,
      reusedShare: mine.reduce((t, b) => t + b.reused, 0) / mine.reduce((t, b) => t + b.requests, 0),
      newConnections: mine.reduce((t, b) => t + b.connections, 0),
      served: mine.reduce((t, b) => t + b.served, 0),
      requests: mine.reduce((t, b) => t + b.requests, 0),
      retried: Math.max(...mine.map((b) => b.retried)),
      registered: ready[name].registered,
      ...(ready[name].composed !== undefined ? { interceptor: ready[name].composed } : {}),
      ...(ready[name].hooked !== undefined ? { socketsHooked: ready[name].hooked } : {}),
    };
  }
  // Paired by round: both arms of a pair ran back to back, ABBA.
  const paired = (off, on, key) => spread(rounds.map((r) => perRound(on, r)[key] / perRound(off, r)[key]));
  const pairs = PAIRS.filter(([, off, on]) => arms[off] && arms[on]).map(([name, off, on]) => {
    const rate = paired(off, on, 'rate');
    return { name, off, on, rate, cpu: paired(off, on, 'cpuMicros'), goal: GOALS.ratio, met: rate.median >= GOALS.ratio };
  });
  const json = {
    available: true,
    method: {
      server: 'http.Server in a child process, res.end("ok"), keepAliveTimeout 60 s, 127.0.0.1',
      load: `keep-alive GET /, ${o.inFlight} in flight per client (one process per arm, warmed up with ${WARMUP} requests), batches of about ${o.batchMs} ms`,
      order: `${o.rounds} rounds; each pair ABBA or BAAB (alternating), other arms once; one batch at a time; the order of pairs rotated each round`,
      statistic:
        'per arm: median (p25–p75) over rounds of requests/s and client CPU (user + system) per request; per pair: median (p25–p75, min–max) of per-round ratios with-retry / without',
    },
    arms,
    pairs,
    batches,
    goals: GOALS,
  };
  return { rows: retryRows(json), json };
}

/** Rows for a bench table: [benchmark, result, ratio, goal, met]. */
export function retryRows(d) {
  if (!d.available) return [['retry: with retry / without, requests/s', `not run: ${d.error}`, '', `≥ ${d.goals.ratio}×`, 'n/a']];
  const rps = (a) => `${Math.round(a.requestsPerSecond.median).toLocaleString('en')} req/s`;
  const cpu = (a) => `${a.cpuMicrosPerRequest.median.toFixed(1)} µs CPU/req`;
  const range = (s) => `${s.p25.toFixed(3)}–${s.p75.toFixed(3)}, all ${s.min.toFixed(2)}–${s.max.toFixed(2)}`;
  const rows = [];
  const paired = new Set(d.pairs.flatMap((p) => [p.off, p.on]));
  for (const [name, a] of Object.entries(d.arms)) {
    if (paired.has(name)) continue;
    rows.push([`retry: ${a.label}`, rps(a), cpu(a), '', '']);
  }
  for (const p of d.pairs) {
    const off = d.arms[p.off];
    const on = d.arms[p.on];
    rows.push([`retry: ${off.label}`, rps(off), cpu(off), '', '']);
    rows.push([
      `retry: ${on.label}`,
      rps(on),
      `${p.rate.median.toFixed(3)}× (${range(p.rate)}); CPU/req ${p.cpu.median.toFixed(3)}×; ${cpu(on)}`,
      `≥ ${p.goal}×`,
      p.met ? 'yes' : 'no',
    ]);
  }
  return rows;
}

/** Lines under the table: method, and what shows the retry was armed. */
export function retryNotes(d) {
  if (!d.available) return [`retry: not run (${d.error})`];
  const m = d.method;
  const lines = [`retry: ${m.server}; ${m.load}; ${m.order}; ${m.statistic}`];
  for (const [name, a] of Object.entries(d.arms)) {
    const reused = ARMS[name].client === 'http' ? `${(a.reusedShare * 100).toFixed(2)}% on a reused socket, ` : '';
    const interceptor = a.interceptor === undefined ? '' : `, ${a.interceptor ? 'an interceptor' : 'no interceptor'} in front of the dispatcher`;
    const hooked = a.socketsHooked === undefined ? '' : `, pooled sockets' emit ${a.socketsHooked ? "wrapped (the retry's)" : "Node's own"}`;
    lines.push(
      `  ${name}: ${a.requests} requests (${a.served} served), ${reused}${a.newConnections} new connections, retried ${a.retried}${interceptor}${hooked}; req/s by round ${Math.round(a.requestsPerSecond.min)}–${Math.round(a.requestsPerSecond.max)}`,
    );
  }
  return lines;
}

if (process.argv[1] === self) {
  const argv = process.argv.slice(2);
  if (argv.includes('--server')) await serverChild();
  else if (argv.includes('--client')) await clientChild(argv);
  else {
    const arms = flag(argv, 'arms');
    const { rows, json } = await retryBench({
      rounds: intFlag('rounds', DEFAULTS.rounds, argv),
      batchMs: intFlag('batch-ms', DEFAULTS.batchMs, argv),
      inFlight: intFlag('in-flight', DEFAULTS.inFlight, argv),
      ...(arms !== undefined ? { arms: arms.split(',') } : {}),
      quiet: argv.includes('--json'),
    });
    if (argv.includes('--json')) console.log(JSON.stringify(json, null, 2));
    else printRows(rows, retryNotes(json));
    process.exitCode = json.available ? 0 : 1;
  }
}
