// What other projects' suites found socktune changing that it must not (Node core's net, http, tls
// and http2 tests and ws's suite, run under socktune/register):
// - socktune/register loads no node:http, node:https, node:tls or node:dgram into a process: a
//   process that loads them later (or never) starts as it would without socktune (Node's HTTP
//   parser pool, TLS's engine are set up by the application's own first use);
// - a policy adds no 'timeout' listener to a socket (Node's tests count them);
// - under rstOnClose, a server's idle keep-alive connection closed at keepAliveTimeout is an
//   ordinary close (FIN: the client reads its end), while a request that timed out is reset;
// - a socket destroy()ed while its peer has not acknowledged everything, whose peer then sends,
//   does not crash the process (Node must not be handed bytes for a destroyed stream).
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { presets, tune, tuneServer } from '../src/index.js';
import { cleanEnv, consumerProject, runToEnd } from './helpers/register.js';
import { canUse } from './helpers/env.js';
import { closeAll, listen, track } from './helpers/sockets.js';

afterEach(closeAll);

describe('socktune/register loads no module the application did not', () => {
  const script = (body: string) => ['--input-type=module', '-e', body];
  const loaded = 'process.moduleLoadList.filter((m) => /^NativeModule (http|https|http2|tls|dgram|_http_\\w+|_tls_\\w+)$/.test(m))';

  it('a process that opens a TCP connection under register has loaded no http, https, http2, tls or dgram; the connection has the policy', async () => {
    const body = `
      import net from 'node:net';
      const server = net.createServer((s) => s.end()).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const socket = net.connect(server.address().port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      const { stats } = await import('socktune/register');
      console.log(JSON.stringify({ loaded: ${loaded}, tuned: stats().tuned }));
      socket.destroy(); server.close();`;
    const plain = await runToEnd(script(body.replace("const { stats } = await import('socktune/register');", 'const stats = () => ({ tuned: 0 });')), {});
    const registered = await runToEnd(['--import', 'socktune/register', ...script(body)], { SOCKTUNE_POLICY: 'gracefulHeartbeat' });
    expect(plain.code, plain.stderr).toBe(0);
    expect(registered.code, registered.stderr).toBe(0);
    // Node itself loads some of them at start-up (dgram, on Node 20): exactly those, no more.
    expect(JSON.parse(registered.stdout)).toEqual({ loaded: JSON.parse(plain.stdout).loaded, tuned: 2 });
  });
});

// OpenTelemetry is followed with no code (SOCKTUNE_OTEL=auto): until an application sets a global
// MeterProvider, socktune only reads the API's registry of globals, so a process that never sets
// one loads nothing of @opentelemetry (installed here) and no node:http. strace is the witness
// (every file the process opens or looks at); SOCKTUNE_OTEL=1, which loads the API at start, is
// the control that shows the witness sees it.
describe.runIf(canUse('strace'))('socktune/register with @opentelemetry/api installed and no provider set', () => {
  it('opens no file of @opentelemetry and loads no http while it looks for a provider (1.5 s); SOCKTUNE_OTEL=1 does', async () => {
    const body = `
      import net from 'node:net';
      const server = net.createServer((s) => s.end()).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const socket = net.connect(server.address().port, '127.0.0.1').resume();
      await new Promise((r) => socket.once('close', r));
      await new Promise((r) => setTimeout(r, 1500));
      console.log(JSON.stringify(process.moduleLoadList.filter((m) => /^NativeModule (http|https|_http_\\w+)$/.test(m))));
      server.close();`;
    const run = (otel: string) => {
      const trace = join(tmpdir(), `socktune-46-otel-${process.pid}-${otel}.strace`);
      const r = spawnSync(
        'strace',
        [
          '-f',
          '-qq',
          '-e',
          'trace=openat,open,statx,newfstatat,stat,readlink',
          '-o',
          trace,
          process.execPath,
          '--import',
          'socktune/register',
          '--input-type=module',
          '-e',
          body,
        ],
        {
          cwd: consumerProject(),
          env: cleanEnv({ SOCKTUNE_POLICY: 'gracefulHeartbeat', SOCKTUNE_OTEL: otel }),
          encoding: 'utf8',
          timeout: 30_000,
        },
      );
      const files = readFileSync(trace, 'utf8')
        .split('\n')
        .filter((l) => l.includes('@opentelemetry'));
      rmSync(trace, { force: true });
      return { code: r.status, stderr: r.stderr, http: r.stdout.trim(), otelFiles: files.length };
    };
    const auto = run('auto');
    expect(auto.code, auto.stderr).toBe(0);
    expect({ http: auto.http, otelFiles: auto.otelFiles }).toEqual({ http: '[]', otelFiles: 0 });
    const named = run('1');
    expect(named.code, named.stderr).toBe(0);
    expect(named.otelFiles).toBeGreaterThan(0);
  });
});

describe('policies add no listener and reset only what timed out', () => {
  /** An HTTP server under rstOnClose (accepted connections: reset only on a timeout). */
  async function server(keepAliveTimeout: number, handler: http.RequestListener = (_req, res) => res.end('ok')) {
    const s = http.createServer(handler);
    s.keepAliveTimeout = keepAliveTimeout;
    tuneServer(s, presets.rstOnClose());
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    track(s as unknown as net.Server);
    return s;
  }

  /** A raw client: sends one GET, then reports how the connection ended: 'end' (FIN) or the error's code. */
  function rawGet(port: number): Promise<{ ended: string; bytes: number }> {
    return new Promise((resolve) => {
      const c = track(net.connect(port, '127.0.0.1', () => c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')));
      let bytes = 0;
      c.on('data', (d: Buffer) => (bytes += d.length));
      c.on('end', () => resolve({ ended: 'end', bytes }));
      c.on('error', (e: NodeJS.ErrnoException) => resolve({ ended: e.code ?? e.message, bytes }));
    });
  }

  it("an accepted connection under rstOnClose has as many 'timeout' listeners as Node gives it", async () => {
    const plain = http.createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
    await once(plain, 'listening');
    track(plain as unknown as net.Server);
    const tuned = await server(5000);
    const counts = await Promise.all(
      [plain, tuned].map(async (s) => {
        const accepted = once(s, 'connection');
        const client = track(net.connect((s.address() as net.AddressInfo).port, '127.0.0.1'));
        const [socket] = (await accepted) as [net.Socket];
        await once(client, 'connect');
        return ['timeout', 'error', 'end', 'close'].map((e) => socket.listenerCount(e));
      }),
    );
    expect(counts[1]).toEqual(counts[0]);
  });

  it("an idle keep-alive connection closed at the server's keepAliveTimeout ends with FIN: the client reads its end, 10 of 10", async () => {
    const s = await server(100);
    const port = (s.address() as net.AddressInfo).port;
    const results = await Promise.all(Array.from({ length: 10 }, () => rawGet(port)));
    expect(results.map((r) => r.ended)).toEqual(Array(10).fill('end'));
    for (const r of results) expect(r.bytes).toBeGreaterThan(0);
  });

  it('a request that timed out (server.setTimeout, no response) is reset: the client sees ECONNRESET', async () => {
    const s = await server(5000, () => {
      // never answers
    });
    s.setTimeout(100);
    const r = await rawGet((s.address() as net.AddressInfo).port);
    expect(r).toEqual({ ended: 'ECONNRESET', bytes: 0 });
  });
});

describe('destroy() under rstOnClose while the peer has not acknowledged everything', () => {
  it('the peer then sends: no crash; the drain gives up with ERR_SOCKTUNE_DRAIN_TIMEOUT and the socket closes', async () => {
    const srv = await listen('127.0.0.1');
    let peer: net.Socket | undefined;
    srv.on('connection', (s) => {
      peer = s;
      s.pause(); // never reads: the client's bytes stay unacknowledged once the window is full
      s.on('error', () => {});
    });
    const client = track(net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1'));
    await once(client, 'connect');
    tune(client, presets.rstOnClose({ drainTimeout: 500 }));
    const errors: string[] = [];
    client.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 16; i++) client.write(chunk);
    await new Promise((r) => setTimeout(r, 100));
    client.destroy();
    expect(client.destroyed).toBe(true);
    // The peer answers while the client's reset waits for acknowledgements.
    peer!.write('123456789');
    await new Promise((resolve) => client.once('close', resolve));
    expect(errors).toEqual(['ERR_SOCKTUNE_DRAIN_TIMEOUT']);
  });
});

// Nothing that can fail is looked up when socktune is imported: Node's TCP handle class is reached
// on the first socket call, and where it cannot be (Node's permission model refuses
// process.binding), that call says so with a coded error while what needs no socket keeps working.
describe('import never throws; what needs no socket works everywhere', () => {
  const probe = `
    import net from 'node:net';
    const st = await import('socktune');
    const out = { imported: typeof st.configure, states: typeof st.connectionStates().states.ESTABLISHED };
    const server = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const c = net.connect(server.address().port, '127.0.0.1');
    await new Promise((r) => c.once('connect', r));
    try { st.configure(c, { noDelay: true }); out.configure = 'applied'; } catch (e) { out.configure = e.code; }
    c.destroy(); server.close();
    console.log(JSON.stringify(out));`;
  const run = (flags: string[], env: Record<string, string> = {}) => runToEnd([...flags, '--input-type=module', '-e', probe], env);
  // Node 20 names the permission model --experimental-permission; 22.13 adds --permission, and 24
  // knows only that name (the other is a bad option there). Node 26 also guards the network
  // (--allow-net), which the probe's own server needs.
  const flagsKnown = process.allowedNodeEnvironmentFlags;
  const permission = [
    flagsKnown.has('--permission') ? '--permission' : '--experimental-permission',
    '--allow-fs-read=*',
    ...(flagsKnown.has('--allow-net') ? ['--allow-net'] : []),
  ];

  it("under Node's permission model (no process.binding): import works, connection counts work, configure() throws ERR_SOCKTUNE_UNSUPPORTED", async () => {
    for (const flags of [permission, [...permission, '--allow-addons']]) {
      const r = await run(flags);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout), flags.join(' ')).toEqual({
        imported: 'function',
        states: 'number',
        // Node's TCP handles are out of reach first (without --allow-addons the addon is too).
        configure: 'ERR_SOCKTUNE_UNSUPPORTED',
      });
    }
  });

  it('socktune/register under the permission model fails open: one line says why, the application runs', async () => {
    const r = await runToEnd([...permission, '--allow-addons', '--import', 'socktune/register', '-e', 'console.log("application ran")'], {
      SOCKTUNE_POLICY: 'gracefulHeartbeat',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('application ran\n');
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('socktune/register:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^socktune\/register: not active, the process runs without it: socktune cannot reach Node's TCP handles in this process \(process\.binding\('tcp_wrap'\): ERR_ACCESS_DENIED/,
    );
  });

  it("under Node's permission model, `socktune stat --json` counts connections (it needs no fd)", async () => {
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const r = await runToEnd([...permission, cli, 'stat', '--json'], {});
    expect(r.code, r.stderr).toBe(0);
    expect(typeof (JSON.parse(r.stdout) as { states: Record<string, number> }).states.ESTABLISHED).toBe('number');
  });

  it('--pending-deprecation --throw-deprecation: socktune works and the process lives (its process.binding lookup warns nothing)', async () => {
    const r = await run(['--pending-deprecation', '--throw-deprecation']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ imported: 'function', states: 'number', configure: 'applied' });
    expect(r.stderr).not.toContain('DEP0111');
  });
});
