// No request lost at a pooled connection's end. Servers close idle keep-alive connections without
// saying when (no Keep-Alive hint): a busy Node server (keepAliveTimeout 1 s: closes after 2 s on
// Node 20) and nginx (keepalive_timeout 2s). Clients send on each pooled connection after a gap
// drawn around that idle time (2000 ms ± 60 ms for Node, whose busy loop reads late; ± 20 ms for
// nginx, which closes on time), 2000 requests per arm: Node's keep-alive http.Agent
// (as got, axios and http.get use it) plain and under socktune/register, and createAgent; the global
// fetch plain and under socktune/register, and createDispatcher. Each lane of a client talks to an
// origin of its own (127.0.0.x), so its pool has its own connections. The servers run in a
// namespace of this file's own; the clients are real processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { canUse } from '../helpers/env.js';
import { Netns } from '../helpers/netns.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { runToEnd } from '../helpers/register.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const LANES = 200;
const ROUNDS = 10;
const GAP = 2000;

interface Race {
  arm: string;
  requests: number;
  failures: number;
  errors: Record<string, number>;
  reused: number;
  retried: number;
}

const register = { NODE_OPTIONS: '--import=socktune/register', SOCKTUNE_POLICY: 'gracefulHeartbeat' };
const arms = [
  { name: "Node's http.Agent, plain", arm: 'node', env: {}, control: true },
  { name: "Node's http.Agent under socktune/register", arm: 'node', env: register, control: false },
  { name: 'createAgent(gracefulHeartbeat())', arm: 'agent', env: {}, control: false },
  { name: 'the global fetch, plain', arm: 'fetch', env: {}, control: true },
  { name: 'the global fetch under socktune/register', arm: 'fetch', env: register, control: false },
  { name: 'createDispatcher(gracefulHeartbeat()) with undici.fetch', arm: 'dispatcher', env: {}, control: false },
];

async function race(ns: Netns, url: string, spread: number, arm: (typeof arms)[number]): Promise<Race> {
  const r = await runToEnd(
    [fixture('pool-race-client.mjs'), arm.arm, url, String(GAP), String(spread), String(LANES), String(ROUNDS)],
    arm.env,
    120_000,
    ns.name,
  );
  expect(r.code, r.stderr).toBe(0);
  const report = JSON.parse(r.stdout) as Race;
  expect(report.requests).toBe(LANES * ROUNDS);
  return report;
}

/** Requests the controls (no socktune) lost, by server: the race is real only if some were. */
const lost: Record<string, number> = {};

function judge(server: string, arm: (typeof arms)[number], r: Race): void {
  console.log(`${server}, ${arm.name}: ${JSON.stringify(r)}`);
  if (arm.control) lost[server] = (lost[server] ?? 0) + r.failures;
  else expect(r.errors).toEqual({});
}

/** The controls together lost requests (each alone may, on a lucky run, lose none). */
function controlsLost(server: string): void {
  expect(lost[server] ?? 0, `the controls lost no request against ${server}: the race did not happen`).toBeGreaterThan(0);
}

describe.runIf(canUse('ip', 'ss'))('a busy Node server closes idle connections after 2 s, no hint', () => {
  const ns = new Netns('prn');
  let url: string;
  beforeAll(async () => {
    ns.create();
    const { ready } = await ns.start(fixture('busy-idle-server.mjs'), ['1000']);
    url = `http://127.0.0.1:${JSON.parse(ready).port}/`;
  });
  afterAll(() => ns.destroy());

  it.each(arms)('$name', { timeout: 180_000 }, async (arm) => judge('busy Node server', arm, await race(ns, url, 60, arm)));
  it("the controls, Node's agent and the global fetch without socktune, lost requests", () => controlsLost('busy Node server'));
});

describe.runIf(canUse('ip', 'ss', 'nginx'))('nginx closes idle connections after 2 s (keepalive_timeout 2s, no header)', () => {
  const ns = new Netns('prx');
  const port = 8080;
  let nginx: Nginx | undefined;
  beforeAll(async () => {
    ns.create();
    nginx = await startNginx({
      netns: ns.name,
      port,
      main: ['worker_rlimit_nofile 8192;'],
      events: 'worker_connections 4096;',
      http: [
        'keepalive_timeout 2s;',
        'keepalive_requests 100000;',
        'server {',
        `  listen ${port} backlog=4096;`,
        '  location / { default_type text/plain; return 200 "ok"; }',
        '}',
      ],
    });
  });
  afterAll(async () => {
    await nginx?.stop();
    await ns.destroy();
  });

  it.each(arms)('$name', { timeout: 180_000 }, async (arm) => judge('nginx', arm, await race(ns, `http://127.0.0.1:${port}/`, 20, arm)));
  it("the controls, Node's agent and the global fetch without socktune, lost requests", () => controlsLost('nginx'));
});
