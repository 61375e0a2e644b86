// The manual (README.md, the guides in docs/, CONTRIBUTING.md) is executable documentation: every
// ```js block runs, as a user who pastes it would run it, does what its comments say, and compiles
// as strict TypeScript (checkJs) against socktune's published declarations.
//
// How a block runs. Each ```js fence carries a name in its info string (```js test=NAME, which
// renderers ignore); CASES below says, per name, what the test puts before the block (`prelude`:
// only what the reader is told is theirs, such as "your server" or "a connected socket") and after
// it (`epilogue`: it checks the block's comments and results, and ends what the block left
// running: a listening server, a pool, a SIGTERM handler, which it triggers). The three are one
// ES module, run by Node in a consumer project whose node_modules/socktune is this package
// (test/helpers/readme.ts), so `import ... from 'socktune'` resolves as it does for users.
// Names the test adds are prefixed `readme$`. A block must exit by itself, with status 0, within
// 20 s: a block that throws, leaves something running or prints other than expected fails.
//
// Hostnames are not rewritten: every block runs inside a network namespace of this test's own
// whose /etc/hosts (/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts) maps the
// README's hosts to loopback addresses where the test serves them on the ports the README uses:
//   example.internal:443  TCP            api.internal:80      HTTP (test/fixtures/readme-servers.mjs)
//   events.internal:443   HTTPS + ws     cache.internal:6379  Debian's redis-server
//   db.internal:5432      Debian's PostgreSQL (user postgres: PGUSER in the block's environment)
// events.internal's certificate (test/fixtures/readme-tls) is trusted by NODE_EXTRA_CA_CERTS.
//
// The example of a kernel refusal (EPERM from TCP_KEEPCNT) runs under strace, which makes the
// kernel refuse exactly the third setsockopt of the block (counted in a dry run, as test/07 does).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { printed, stop } from './helpers/children.js';
import { canUse } from './helpers/env.js';
import { Netns } from './helpers/netns.js';
import { startPostgres } from './helpers/postgres.js';
import { fixtures, repoRoot } from './helpers/register.js';
import { codeBlocks, manual, readmeProject, runModule, type Run } from './helpers/readme.js';

const hosts = {
  example: '127.0.0.2',
  api: '127.0.0.3',
  events: '127.0.0.4',
  cache: '127.0.0.5',
  db: '127.0.0.6',
};

interface Case {
  /** What the example does under this test. */
  does: string;
  prelude?: string;
  epilogue?: string;
  env?: Record<string, string>;
  /** Run under strace; the Nth setsockopt after the prelude fails with EPERM. */
  refuse?: number;
  /** What the block prints, exactly (stdout). */
  prints?: string;
  /** What the prelude gives the block, by name and type, for the type check (`socket: 'net.Socket'`). */
  declares?: Record<string, string>;
}

// "Your server" (a TCP server whose connections read and ignore a reset, or an HTTP server
// answering "ok") on loopback and, for a TCP server, "a connected socket" to it.
const serverAndSocket = (kind: 'net' | 'http') => `
const { default: readme$net } = await import('node:net');
const { default: readme$http } = await import('node:http');
const server = ${kind === 'net' ? "readme$net.createServer((s) => s.on('error', () => {}).resume())" : "readme$http.createServer((req, res) => res.end('ok'))"};
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
${kind === 'net' ? "const socket = readme$net.connect(server.address().port, '127.0.0.1');\nawait new Promise((resolve) => socket.once('connect', resolve));" : ''}
`;
const imports = `
import readme$assert from 'node:assert/strict';
import { once as readme$once } from 'node:events';
import { readOptions as readme$readOptions } from 'socktune';
const readme$until = async (what, test) => {
  for (let i = 0; i < 400; i++) { if (test()) return; await new Promise((r) => setTimeout(r, 25)); }
  throw new Error('not within 10 s: ' + what);
};
`;
const heartbeat = { idle: 30_000, interval: 10_000, count: 3 };

const CASES: Record<string, Case> = {
  use: {
    does: 'connects to example.internal:443, and once connected the kernel holds what its comments say',
    epilogue: `
await readme$once(socket, 'connect');
readme$assert.deepEqual(readOptions(socket).keepAlive, { idle: 30000, interval: 5000, count: 3 });
readme$assert.equal(readOptions(socket).userTimeout, 45000);
readme$assert.equal(tcpInfo(socket).state, 'ESTABLISHED');
readme$assert.deepEqual(sendQueue(socket), { unacked: 0, unsent: 0 });
socket.end();`,
  },
  'configure-refused': {
    does: 'the kernel refuses the third option (EPERM injected by strace): the block prints code, option and applied',
    prelude: serverAndSocket('net'),
    declares: { socket: "import('node:net').Socket" },
    refuse: 3,
    prints: "EPERM TCP_KEEPCNT [ 'TCP_KEEPIDLE', 'TCP_KEEPINTVL' ]\n",
    epilogue: `
readme$assert.deepEqual(readme$readOptions(socket).keepAlive, false);
socket.destroy(); server.close();`,
  },
  policies: {
    does: 'builds the three policies, tunes a connected socket and a server, and reset-closes the socket',
    prelude: serverAndSocket('net'),
    declares: { socket: "import('node:net').Socket", server: "import('node:net').Server" },
    epilogue: `
readme$assert.deepEqual(heartbeat.keepAlive, ${JSON.stringify(heartbeat)});
readme$assert.equal(both.reset, 'always');
readme$assert.deepEqual(quick.keepAlive, { ...${JSON.stringify(heartbeat)}, idle: 10000 });
readme$assert.equal(quick.halfCloseTimeout, 5000);
readme$assert.equal(socket.destroyed, true);
await guard.close({ timeout: 1000 });`,
  },
  'close-channel': {
    does: 'subscribes to socktune:close and ends a socket tuned with rstOnClose: the message says how it closed',
    prelude: serverAndSocket('net'),
    declares: { socket: "import('node:net').Socket" },
    prints: 'close rst 0 undefined\n',
    epilogue: `
readme$assert.equal(closeCodes['half-closed'], 'ERR_SOCKTUNE_HALF_CLOSE_TIMEOUT');
readme$assert.ok(Object.isFrozen(closeCodes));
await readme$once(socket, 'close');
server.close();`,
  },
  diagnostics: {
    does: 'with one CLOSE_WAIT connection of its own (a paused server socket whose peer ended): counts, ranks, audits',
    prelude: `
const { default: readme$net } = await import('node:net');
let readme$peer;
const readme$server = readme$net.createServer({ allowHalfOpen: true }, (s) => (readme$peer = s).pause());
await new Promise((resolve) => readme$server.listen(0, '127.0.0.1', resolve));
const readme$client = readme$net.connect(readme$server.address().port, '127.0.0.1');
await readme$once(readme$client, 'connect');
readme$client.end();
await readme$until('CLOSE_WAIT', () => readme$client.writableFinished);
await new Promise((resolve) => setTimeout(resolve, 50));`,
    epilogue: `
readme$assert.equal(connectionStates().states.CLOSE_WAIT, 1);
readme$assert.equal(connectionStates({ process: true }).states.CLOSE_WAIT, 1);
readme$assert.equal(top.CLOSE_WAIT.peers[0].key, '127.0.0.1');
// The owner's command is /proc/PID/comm: 'node' on Node 20 and 22, the main thread's name 'MainThread' from Node 24.
readme$assert.deepEqual(top.CLOSE_WAIT.peers[0].owners, [{ pid: process.pid, command: (await import('node:fs')).readFileSync('/proc/self/comm', 'utf8').trim(), sockets: 1 }]);
readme$assert.ok(sysctlAudit().findings.some((f) => f.setting === 'net.ipv4.tcp_keepalive_time'));
readme$assert.deepEqual(middleboxIdleTimeouts[0], { name: 'Azure Load Balancer', seconds: 240 });
readme$peer.destroy(); readme$client.destroy(); readme$server.close();`,
  },
  'stage-connect': {
    does: 'connects to api.internal:80 from 127.0.0.1 through the pre-connect stage; the socket binds without reserving a port and carries IP_TOS',
    epilogue: `
await readme$once(socket, 'connect');
readme$assert.deepEqual([socket.localAddress, readme$readOptions(socket).bindAddressNoPort, readme$readOptions(socket).tos], ['127.0.0.1', true, 16]);
await readme$once(socket, 'close');`,
  },
  'stage-pools': {
    does: 'GETs http://api.internal/ through createAgent with localAddress: the pooled socket binds without reserving a port',
    epilogue: `
await readme$until('the agent pools its socket', () => Object.keys(agent.freeSockets).length === 1);
readme$assert.equal(readme$readOptions(Object.values(agent.freeSockets)[0][0]).bindAddressNoPort, true);
agent.destroy(); await dispatcher.destroy();`,
  },
  'stage-listen': {
    does: 'listens on 127.0.0.1:8080 through the listener stage with SO_REUSEPORT and TCP_DEFER_ACCEPT, then closes',
    epilogue: `
await readme$once(server, 'close');`,
  },
  compose: {
    does: 'composes a policy and computes its keepalive budget as the comments say',
    epilogue: `
readme$assert.deepEqual(policy.keepAlive, { idle: 10000, interval: 10000, count: 3 });
readme$assert.equal(keepAliveBudget(policy.keepAlive), 40000);
readme$assert.equal(policy.reset, 'always');
readme$assert.equal(policy.userTimeout, 60000);
readme$assert.equal(presets.gracefulHeartbeat({ keepAlive: { idle: 10_000 } }).userTimeout, 40000);`,
  },
  pools: {
    does: 'GETs http://api.internal/ through createAgent and fetches it through createDispatcher; the agent pools the connection',
    epilogue: `
await readme$until('the agent pools its socket', () => Object.keys(agent.freeSockets).length === 1);
readme$assert.deepEqual(readme$readOptions(Object.values(agent.freeSockets)[0][0]).keepAlive, ${JSON.stringify(heartbeat)});
agent.destroy(); tlsAgent.destroy(); await dispatcher.destroy();`,
  },
  guard: {
    does: 'guards an HTTP server; a keep-alive client makes a request, then SIGTERM runs the shutdown, which closes the idle connection at once, and the process exits',
    prelude: serverAndSocket('http'),
    declares: { server: "import('node:http').Server" },
    prints: 'shut down { ended: 1, forced: 0 }\n',
    epilogue: `
const readme$agent = new readme$http.Agent({ keepAlive: true });
await new Promise((resolve) => readme$http.get('http://127.0.0.1:' + server.address().port + '/', { agent: readme$agent }, (res) => res.resume().on('end', resolve)));
await readme$until('the guard tracks the connection', () => guard.stats().tracked === 1);
readme$assert.equal(typeof guard.stats().seen, 'number');
process.kill(process.pid, 'SIGTERM');`,
  },
  'guard-stats': {
    does: 'guards an HTTP server with an idle timeout; a request is served and the statistics count it',
    prelude: serverAndSocket('http'),
    declares: { server: "import('node:http').Server" },
    epilogue: `
await new Promise((resolve) => readme$http.get('http://127.0.0.1:' + server.address().port + '/', (res) => res.resume().on('end', resolve)));
await readme$until('the guard saw the connection', () => guard.stats().seen === 1);
readme$assert.equal(guard.policy.idleTimeout, 600000);
readme$assert.deepEqual(Object.keys(guard.stats().closed).sort(), ['dead', 'fin-wait', 'half-closed', 'heartbeat', 'idle', 'max-age', 'reset', 'shutdown', 'stale', 'too-many-pings']);
await guard.close({ timeout: 1000 });`,
  },
  'ws-heartbeat': {
    does: 'a ws client connects to the guarded server; its socket is tracked and mapped to its WebSocket',
    prelude: serverAndSocket('http'),
    declares: { server: "import('node:http').Server" },
    epilogue: `
const { WebSocket: readme$WebSocket } = await import('ws');
const readme$ws = new readme$WebSocket('ws://127.0.0.1:' + server.address().port);
await readme$once(readme$ws, 'open');
await readme$until('the guard tracks the WebSocket', () => guard.stats().tracked === 1);
readme$ws.close();
await guard.close({ timeout: 1000 });`,
  },
  register: {
    does: 'under SOCKTUNE_POLICY=gracefulHeartbeat: the guard and stats of socktune/register, then SIGTERM closes everything',
    env: { SOCKTUNE_POLICY: 'gracefulHeartbeat' },
    prelude: serverAndSocket('net'),
    declares: { socket: "import('node:net').Socket", server: "import('node:net').Server" },
    epilogue: `
readme$assert.equal(guardOf(socket), guards.default);
readme$assert.deepEqual(readme$readOptions(socket).keepAlive, ${JSON.stringify(heartbeat)});
readme$assert.equal(stats().opened, 1);
readme$assert.ok(config, 'config is exported');
process.kill(process.pid, 'SIGTERM');`,
  },
  ioredis: {
    does: 'connects to redis-server at cache.internal; the connection holds the policy, with the shorter keepalive ioredis sets after it; QUIT',
    epilogue: `
await readme$once(redis, 'ready');
// ioredis calls setKeepAlive(true, 0) on 'connect' after the recipe's tune(): Node sets a 1 s
// interval and 10 probes, a budget (30 s + 10 × 1 s) shorter than the policy's, which keeps it and
// lowers its user timeout to it.
readme$assert.deepEqual(readme$readOptions(redis.stream).keepAlive, { idle: 30000, interval: 1000, count: 10 });
readme$assert.equal(readme$readOptions(redis.stream).userTimeout, 40000);
await redis.quit();`,
  },
  pg: {
    does: 'connects to PostgreSQL at db.internal (PGUSER=postgres); the pooled client holds the policy',
    env: { PGUSER: 'postgres', PGDATABASE: 'postgres' },
    epilogue: `
const readme$client = await pool.connect();
readme$assert.equal((await readme$client.query('select 1 as one')).rows[0].one, 1);
readme$assert.deepEqual(readme$readOptions(readme$client.connection.stream).keepAlive, ${JSON.stringify(heartbeat)});
readme$client.release();
await pool.end();`,
  },
  'ws-client': {
    does: 'opens wss://events.internal/feed; the upgraded socket holds the policy',
    env: { NODE_EXTRA_CA_CERTS: join(fixtures, 'readme-tls', 'cert.pem') },
    epilogue: `
await readme$once(ws, 'open');
readme$assert.deepEqual(readme$readOptions(ws._socket).keepAlive, ${JSON.stringify(heartbeat)});
ws.close();
await readme$once(ws, 'close');`,
  },
  fetch: {
    does: 'streams http://api.internal/stream through undici with the policy dispatcher',
    epilogue: `
readme$assert.match(await res.text(), /chunk 9\\n$/);
await dispatcher.close();`,
  },
  http2: {
    does: "tunes an HTTP/2 server and a client session to it: a request is answered, both sockets hold the policy, the server's guard tracks its session",
    prelude: `
const { default: readme$http2 } = await import('node:http2');
const server = readme$http2.createServer();
server.on('stream', (stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = 'http://127.0.0.1:' + server.address().port;`,
    declares: { server: "import('node:http2').Http2Server", url: 'string' },
    epilogue: `
readme$assert.equal(session.connecting, true);
const [, readme$socket] = await readme$once(session, 'connect');
const readme$req = session.request({ ':path': '/' });
readme$req.setEncoding('utf8');
let readme$body = '';
for await (const chunk of readme$req) readme$body += chunk;
readme$assert.equal(readme$body, 'ok');
readme$assert.deepEqual(readme$readOptions(readme$socket).keepAlive, ${JSON.stringify(heartbeat)});
readme$assert.equal(readme$readOptions(readme$socket).userTimeout, 60000);
await readme$until('the server tracks its session', () => guard.stats().tracked === 1);
readme$assert.equal(guard.policy.http2.maxAge, 600000);
session.close();
await readme$once(session, 'close');
server.close();`,
  },
  prometheus: {
    does: 'serves the metrics on :9464; a scrape returns the guard and kernel series; the server is closed',
    epilogue: `
if (!server.listening) await readme$once(server, 'listening');
const readme$text = await (await fetch('http://127.0.0.1:9464/')).text();
readme$assert.match(readme$text, /^socktune_guard_connections\\{guard="api",state="tracked"\\} 1$/m);
readme$assert.match(readme$text, /^socktune_tcp_connections\\{scope="namespace",state="LISTEN"\\} \\d+$/m);
server.closeAllConnections(); server.close();`,
  },
  'connection-ends': {
    does: 'under socktune/register: a server ends a connection first; the client side is attributed peer-fin, the server side local-end',
    env: { SOCKTUNE_POLICY: 'gracefulHeartbeat', NODE_OPTIONS: '--import socktune/register' },
    epilogue: `
const { default: readme$net } = await import('node:net');
const readme$ends = [];
closeChannel.subscribe((m) => { if ('end' in m) readme$ends.push(m.end.direction + ' ' + m.end.initiator + ' ' + m.end.cause); });
const readme$server = readme$net.createServer((s) => s.end()).listen(0, '127.0.0.1');
await readme$once(readme$server, 'listening');
const readme$client = readme$net.connect(readme$server.address().port, '127.0.0.1').resume();
await new Promise((resolve) => readme$client.on('close', resolve));
await readme$until('both ends attributed', () => readme$ends.length === 2);
readme$assert.deepEqual(readme$ends.sort(), ['accepted local-end application', 'opened peer-fin peer']);
readme$server.close();`,
  },
  fleet: {
    does: 'under socktune/register: sets a global MeterProvider with the Prometheus exporter on :9464; after a connection ends, a scrape has the connections by state and who closed it',
    env: { SOCKTUNE_POLICY: 'gracefulHeartbeat', NODE_OPTIONS: '--import socktune/register' },
    epilogue: `
const { default: readme$net } = await import('node:net');
const readme$server = readme$net.createServer((s) => s.end()).listen(0, '127.0.0.1');
await readme$once(readme$server, 'listening');
const readme$client = readme$net.connect(readme$server.address().port, '127.0.0.1').resume();
await new Promise((resolve) => readme$client.on('close', resolve));
const readme$quiet = readme$net.createServer(() => {}).listen(0, '127.0.0.1');
await readme$once(readme$quiet, 'listening');
const readme$kept = readme$net.connect(readme$quiet.address().port, '127.0.0.1');
await readme$once(readme$kept, 'connect');
// socktune finds the provider within 100 ms; the scrape is retried until the ended connection is counted.
let readme$text = '';
for (let i = 0; i < 100 && !/^socktune_connection_ends_total\{[^}]*socktune_close_initiator="peer-fin"[^}]*\} [1-9]/m.test(readme$text); i++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  readme$text = await (await fetch('http://127.0.0.1:9464/metrics')).text();
}
readme$assert.match(readme$text, /^socktune_connection_count\{[^}]*network_connection_state="established"[^}]*\} [1-9]/m);
readme$assert.match(readme$text, /^socktune_connection_ends_total\{[^}]*socktune_close_initiator="local-end"[^}]*\} [1-9]/m);
readme$kept.destroy();
readme$server.close();
readme$quiet.close();
await metrics.getMeterProvider().shutdown();`,
  },
  otel: {
    does: "sets a global MeterProvider with the Prometheus exporter on :9464 after importing socktune; a scrape has socktune's connections in OpenTelemetry's spelling",
    epilogue: `
await new Promise((resolve) => setTimeout(resolve, 300));
const readme$text = await (await fetch('http://127.0.0.1:9464/metrics')).text();
readme$assert.match(readme$text, /^socktune_connection_count\\{[^}]*network_connection_state="established"[^}]*\\} \\d+/m);
readme$assert.match(readme$text, /network_transport="tcp"/);
await metrics.getMeterProvider().shutdown();`,
  },
};

const pages = manual();
const blocks = pages.flatMap((p) => codeBlocks(p.text, p.file));
const js = blocks.filter((b) => b.lang === 'js');
const at = (b: { file: string; line: number }) => `${b.file}:${b.line}`;

describe('the manual', () => {
  it('is the README, CONTRIBUTING.md and the guides; the README stays short (at most 300 lines)', () => {
    expect(pages.map((p) => p.file)).toEqual(
      expect.arrayContaining(['README.md', 'CONTRIBUTING.md', 'docs/guides/pools.md', 'docs/guides/deploys.md', 'docs/platforms.md', 'docs/performance.md']),
    );
    expect(pages.find((p) => p.file === 'README.md')!.text.split('\n').length).toBeLessThanOrEqual(300);
  });

  it('names every js block, and every name is a case of this test', () => {
    expect(js.filter((b) => b.name === undefined).map(at)).toEqual([]);
    const names = js.map((b) => b.name);
    expect(
      names.filter((n, i) => names.indexOf(n) !== i),
      'a name used twice',
    ).toEqual([]);
    expect([...names].sort()).toEqual(Object.keys(CASES).sort());
  });

  it('fences JavaScript only as js (javascript, mjs, ts, bare fences hold none)', () => {
    expect(blocks.filter((b) => /^(javascript|mjs|cjs|ts|typescript|jsx)$/.test(b.lang)).map(at)).toEqual([]);
    for (const b of blocks.filter((b) => b.lang === '')) expect(b.code, at(b)).not.toMatch(/^\s*(import|const|await)\s/m);
  });
});

/** GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces to '-'. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
const headings = (text: string) => new Set([...text.replace(/^\s*```[\s\S]*?^\s*```\s*$/gm, '').matchAll(/^#+ (.*)$/gm)].map((m) => anchor(m[1])));

describe('the manual and the API reference', () => {
  it('links only to files that exist and to headings they have', () => {
    const broken: string[] = [];
    let toApi = 0;
    for (const { file, text } of pages) {
      const prose = text.replace(/^\s*```[\s\S]*?^\s*```\s*$/gm, '');
      for (const [, link] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(link)) continue;
        const [path, hash] = link.split('#');
        const target = path === '' ? file : normalize(join(dirname(file), path));
        if (target.startsWith('docs/api/')) toApi++;
        if (!existsSync(join(repoRoot, target))) broken.push(`${file}: ${link} (no file ${target})`);
        else if (hash !== undefined && target.endsWith('.md') && !headings(readFileSync(join(repoRoot, target), 'utf8')).has(hash))
          broken.push(`${file}: ${link} (no heading #${hash} in ${target})`);
      }
    }
    expect(broken).toEqual([]);
    expect(toApi).toBeGreaterThan(20);
  });

  it('has a reference page for every export of socktune and socktune/register (npm run docs)', async () => {
    const page = (dir: string, name: string) =>
      ['functions', 'variables', 'classes'].some((kind) => existsSync(join(repoRoot, 'docs', 'api', dir, kind, `${name}.md`)));
    const main = Object.keys(await import('../dist/index.js'));
    expect(main.length).toBeGreaterThan(30);
    expect(main.filter((name) => !page('socktune', name))).toEqual([]);
    // Loading socktune/register starts it, so its exports are read from its declarations.
    const register = [
      ...readFileSync(join(repoRoot, 'dist', 'register', 'index.d.ts'), 'utf8').matchAll(/^export declare (?:const|function|class) (\w+)/gm),
    ].map((m) => m[1]);
    expect(register).toContain('guardOf');
    expect(register.filter((name) => !page('socktune/register', name))).toEqual([]);
    expect(main, 'readArgument is internal').not.toContain('readArgument');
  });
});

// Every js block as a user with TypeScript in their editor sees it: an ES module checked under
// `strict` (checkJs) against the declarations socktune publishes (dist/*.d.ts, through the
// package's exports) and those of the peers it imports. What a block takes from its prelude
// (`socket`, `server`) is declared with the type the guide says it is.
describe('every js block of the manual type-checks', () => {
  it('compiles as strict TypeScript (checkJs, module nodenext) with no error', () => {
    const dir = join(readmeProject(), 'typecheck');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    const offsets = new Map<string, { block: (typeof js)[number]; header: number }>();
    for (const block of js) {
      const declares = Object.entries(CASES[block.name!]?.declares ?? {});
      const header = declares.map(([name, type]) => `/** @type {${type}} */ const ${name} = /** @type {any} */ (undefined);`);
      writeFileSync(join(dir, `${block.name}.mjs`), [...header, block.code, 'export {};', ''].join('\n'));
      offsets.set(`${block.name}.mjs`, { block, header: header.length });
    }
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          allowJs: true,
          checkJs: true,
          strict: true,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2023',
          lib: ['es2023'],
          types: ['node'],
          skipLibCheck: true,
        },
        include: ['*.mjs'],
      }),
    );
    const run = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsc'), ['-p', dir, '--pretty', 'false'], { encoding: 'utf8' });
    // Errors placed in the Markdown: "pools.mjs(3,7): error TS..." becomes "docs/guides/pools.md:NN: error TS...".
    const errors = (run.stdout + run.stderr)
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const m = /^(?:.*\/)?([\w-]+\.mjs)\((\d+),\d+\): (.*)$/.exec(line);
        const where = m === null ? undefined : offsets.get(m[1]);
        return where === undefined ? line : `${where.block.file}:${where.block.line + Number(m![2]) - where.header}: ${m![3]}`;
      });
    expect(errors).toEqual([]);
    expect(run.status).toBe(0);
  }, 120_000);
});

describe.runIf(canUse('ip', 'strace', 'redis-server', 'setpriv'))('every js block of the manual runs', () => {
  const ns = new Netns('readme');
  const etc = `/etc/netns/${ns.name}`;
  const dir = mkdtempSync(join(tmpdir(), 'socktune-readme-'));
  const servers: ChildProcess[] = [];

  beforeAll(async () => {
    ns.create();
    mkdirSync(etc, { recursive: true });
    writeFileSync(
      join(etc, 'hosts'),
      ['127.0.0.1 localhost', '::1 localhost', ...Object.entries(hosts).map(([name, ip]) => `${ip} ${name}.internal`)].join('\n') + '\n',
    );
    await ns.start(join(fixtures, 'readme-servers.mjs'), [JSON.stringify(hosts)]);

    const redis = spawn('ip', ['netns', 'exec', ns.name, 'redis-server', '--bind', hosts.cache, '--port', '6379', '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    servers.push(redis);
    const readyRedis = printed(redis, 'Ready to accept connections', 30_000, 'redis-server did not start');
    // PostgreSQL as nobody, in a directory it owns.
    const postgres = startPostgres({ dir, netns: ns.name, address: hosts.db, port: 5432, clients: '127.0.0.0/8', within: 30_000 }).then((pg) =>
      servers.push(pg),
    );
    await Promise.all([readyRedis, postgres]);
  }, 90_000);

  afterAll(async () => {
    // PostgreSQL's immediate shutdown; redis-server ends on it too.
    for (const s of servers) await stop(s, 'SIGQUIT', 10_000);
    await ns.destroy();
    rmSync(etc, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  for (const block of js) {
    const c = CASES[block.name ?? ''];
    if (!c) continue;
    it(`${block.name} (${at(block)}): ${c.does}`, async () => {
      const source = [
        imports,
        c.prelude ?? '',
        "import { existsSync as readme$exists } from 'node:fs';",
        "readme$exists('/socktune-mark-begin');",
        block.code,
        c.epilogue ?? '',
        "console.error('readme: done');",
      ].join('\n');
      const inNs = ['ip', 'netns', 'exec', ns.name];
      let before = inNs;
      if (c.refuse !== undefined) {
        // A dry run counts the setsockopt calls before the mark, as test/07 does.
        const out = join(dir, `${block.name}.dry`);
        const dry = await runModule(`readme-${block.name}-dry`, source.replace(block.code, ''), {
          before: [...inNs, 'strace', '-f', '-qq', '-o', out, '-e', 'trace=setsockopt,access,faccessat,faccessat2', '-e', 'signal=none'],
          env: c.env,
        });
        expect(dry.code, dry.stderr).toBe(0);
        const lines = readFileSync(out, 'utf8').split('\n');
        const begin = lines.findIndex((l) => l.includes('/socktune-mark-begin'));
        expect(begin).toBeGreaterThan(-1);
        const setsBefore = lines.slice(0, begin).filter((l) => /setsockopt\(/.test(l)).length;
        before = [
          ...inNs,
          'strace',
          '-f',
          '-qq',
          '-o',
          '/dev/null',
          '-e',
          'trace=setsockopt',
          '-e',
          'signal=none',
          '-e',
          `inject=setsockopt:error=EPERM:when=${setsBefore + c.refuse}`,
        ];
      }
      const run: Run = await runModule(`readme-${block.name}`, source, { before, env: c.env });
      const why = `${at(block)} (${block.name}) exited ${run.code ?? run.signal}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr.slice(-4000)}`;
      expect(run.code, why).toBe(0);
      expect(run.stderr, why).toContain('readme: done');
      if (c.prints !== undefined) expect(run.stdout, why).toBe(c.prints);
    });
  }
});
