// Runtimes other than Node, run by this suite as child processes: Bun (its glibc build, and its
// musl build run by Debian's musl), and Deno. Under Bun socktune works: options read back, views,
// the fd-safety rules (only a handle Bun made is read, through Bun's own accessor), policies on
// sockets, net servers, agents and undici, and socktune/register through --preload; Bun's HTTP
// server (Bun.serve underneath) has no fd and is refused by name. Under Deno, whose node:net
// handles have no fd accessor, every socket call is a coded refusal and the rest works.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCI } from './helpers/env.js';
import { runtime, runUnder, type Runtime } from './helpers/runtimes.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const probe = fileURLToPath(new URL('./fixtures/runtime-probe.mjs', import.meta.url));
const loader = fileURLToPath(new URL('./fixtures/loader.mjs', import.meta.url));
const prebuilds = ['linux-x64/socktune.glibc.node', 'linux-x64/socktune.musl.node'].every((f) => existsSync(join(root, 'prebuilds', f)));
const x64 = process.platform === 'linux' && process.arch === 'x64';

type Result = { value?: unknown; code?: string; message?: string };
interface Probe {
  runtime: string;
  addon: string;
  results: Record<string, Result>;
}

async function probeUnder(rt: Runtime, env: Record<string, string> = {}): Promise<Probe> {
  const r = await runUnder(rt, [probe, root], { env: { PREBUILDS_ONLY: '', ...env }, timeout: 90_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Probe;
}

const ka = { idle: 3000, interval: 2000, count: 4 };

/** What every Bun build must give: the same as Node, but for Bun's HTTP server. */
function expectBunWorks(p: Probe): void {
  const r = p.results;
  expect(p.runtime).toBe('bun');
  expect(r.configure).toEqual({ value: { keepAlive: ka, userTimeout: 7000, noDelay: true } });
  expect(r.tcpInfo).toEqual({ value: 'ESTABLISHED' });
  expect(r.sendQueue).toEqual({ value: { unacked: 0, unsent: 0 } });
  // A handle Bun did not make is never read, and the socket whose fd a spoof pointed at is untouched.
  for (const spoof of ['prototypeCopy', 'proxy', 'fdGetter', 'plainFd'])
    expect(r[`spoof:${spoof}`], spoof).toMatchObject({ code: 'ERR_SOCKTUNE_INVALID_HANDLE' });
  expect(r['spoof:otherUntouched']).toEqual({ value: true });
  // Bun's Unix-domain sockets share the TCP handle class: told apart by the kernel (or, while connecting, by the path).
  for (const name of ['unix:configureWhileConnecting', 'unix:configure', 'unix:server']) expect(r[name], name).toMatchObject({ code: 'ERR_SOCKTUNE_NOT_TCP' });
  expect(r['tune:survivesSetKeepAlive']).toEqual({ value: ka });
  expect(r['rstOnClose:peerSees']).toEqual({ value: 'ECONNRESET' });
  expect(r['resetClose:report']).toEqual({ value: { method: 'rst', drained: true, bytesAtRisk: 0 } });
  expect(r['tuneServer:net']).toMatchObject({ value: { keepAlive: ka } });
  expect(r['tuneServer:http']).toMatchObject({ code: 'ERR_SOCKTUNE_UNSUPPORTED' });
  expect(r['tuneServer:http'].message).toContain("Bun's HTTP server (node:http over Bun.serve)");
  expect(r.createAgent).toEqual({ value: { body: 'ok', keepAlive: ka } });
  expect(r.undici).toEqual({ value: { body: 'ok', keepAlive: ka } });
  expect(r.tls).toEqual({ value: 6000 });
  expect(r.connectionStates).toEqual({ value: 'number' });
}

describe.runIf(x64)('Bun (its glibc build from npm)', () => {
  it('options, views, fd safety, policies, net servers, agents, undici and TLS work; its HTTP server is refused by name', async () => {
    const bun = runtime('bun');
    if (bun === undefined) return;
    const p = await probeUnder(bun);
    expect(p.addon).toBe(join(root, 'build', 'Release', 'socktune.node'));
    expectBunWorks(p);
  });

  it.runIf(prebuilds || inCI)('the same against the glibc prebuild alone (PREBUILDS_ONLY=1)', async () => {
    const bun = runtime('bun');
    if (bun === undefined) return;
    const p = await probeUnder(bun, { PREBUILDS_ONLY: '1' });
    expect(p.addon).toBe(join(root, 'prebuilds', 'linux-x64', 'socktune.glibc.node'));
    expectBunWorks(p);
  });
});

describe.runIf(x64 && (prebuilds || inCI))("Bun's musl build, run by Debian's musl", () => {
  it('the musl prebuild loads and everything works as under glibc', async () => {
    const musl = runtime('bun-musl');
    if (musl === undefined) return;
    const p = await probeUnder(musl, { PREBUILDS_ONLY: '1' });
    expect(p.addon).toBe(join(root, 'prebuilds', 'linux-x64', 'socktune.musl.node'));
    expectBunWorks(p);
  });
});

describe.runIf(x64)('socktune/register under Bun: --preload', () => {
  let project: string;
  beforeAll(() => {
    project = mkdtempSync(join(tmpdir(), 'socktune-bun-register-'));
    mkdirSync(join(project, 'node_modules'));
    symlinkSync(root, join(project, 'node_modules', 'socktune'));
    writeFileSync(
      join(project, 'app.mjs'),
      `
      import net from 'node:net';
      import http from 'node:http';
      import { once } from 'node:events';
      const { stats } = await import('socktune/register');
      const { readOptions } = await import('socktune');
      let accepted;
      const server = net.createServer((s) => { accepted = s; s.on('error', () => {}); }).listen(0, '127.0.0.1');
      await once(server, 'listening');
      const client = net.connect(server.address().port, '127.0.0.1');
      await once(client, 'connect');
      await new Promise((r) => setTimeout(r, 50));
      const web = http.createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1');
      await once(web, 'listening');
      const agent = new http.Agent({ keepAlive: true });
      const got = await new Promise((resolve) => http.get({ port: web.address().port, host: '127.0.0.1', agent }, (res) => {
        const options = readOptions(res.socket).keepAlive;
        res.resume(); res.on('end', () => resolve(options));
      }));
      console.log(JSON.stringify({ stats: stats(), client: readOptions(client).keepAlive, accepted: readOptions(accepted).keepAlive, agent: got }));
      process.exit(0);`,
    );
  });
  afterAll(() => rmSync(project, { recursive: true, force: true }));

  it("every net connection opened or accepted, and the agents' connections, get the policy", async () => {
    const bun = runtime('bun');
    if (bun === undefined) return;
    const r = await runUnder(bun, ['--preload', 'socktune/register', 'app.mjs'], {
      cwd: project,
      env: { SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_KEEPALIVE: '3000/2000/4' },
    });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { stats: Record<string, unknown>; client: unknown; accepted: unknown; agent: unknown };
    // The client, the agent's connection, the net server's accepted one; Bun's HTTP server's side has no socket to count.
    expect(got.stats).toMatchObject({ active: true, opened: 2, accepted: 1, tuned: 3, refused: 0 });
    // gracefulHeartbeat's own keepalive (30 s idle, then 3 probes 10 s apart).
    const preset = { idle: 30_000, interval: 10_000, count: 3 };
    expect(got.client).toEqual(preset);
    expect(got.accepted).toEqual(preset);
    // As under Node: the agent's keepalive (keepAlive: true, 1 s, set at connect) is the shorter
    // budget, and a policy never lengthens one (design rule 9).
    expect(got.agent).toEqual({ idle: 1000, interval: 1000, count: 10 });
  });
});

describe.runIf(x64)('Deno (from npm)', () => {
  it('import works; every socket call is ERR_SOCKTUNE_UNSUPPORTED naming Deno; what needs no socket works', async () => {
    const deno = runtime('deno');
    if (deno === undefined) return;
    const r = await runUnder(deno, ['run', '-A', loader, root], { env: { PREBUILDS_ONLY: '', DENO_NO_UPDATE_CHECK: '1' } });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { addon: { path?: string }; results: Record<string, Result> };
    for (const name of ['configure', 'readOptions', 'tcpInfo', 'sendQueue', 'tune']) {
      expect(got.results[name], name).toMatchObject({ code: 'ERR_SOCKTUNE_UNSUPPORTED' });
      expect(got.results[name].message).toMatch(/^socktune cannot borrow a socket's file descriptor under Deno/);
    }
    expect(got.results.gracefulHeartbeat).toEqual({ value: 'graceful-heartbeat' });
    expect((got.results.connectionStates.value as { states: Record<string, number> }).states).toMatchObject({ LISTEN: 1, ESTABLISHED: 2 });
  });
});
