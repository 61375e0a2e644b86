// The smoke test of an installed socktune (copied into a project that has nothing but socktune
// and its dependencies, run with that project as the working directory): the shipped prebuild is
// what loads, and socket options round-trip through the kernel on a loopback connection.
// Prints PASS/FAIL lines (or writes them to the file after --out); exits 1 on any failure.
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const quiet = process.argv.includes('--quiet');
const outAt = process.argv.indexOf('--out');
const lines = [];
let failures = 0;
function check(name, ok, detail) {
  if (!ok) failures++;
  if (!quiet || !ok) lines.push(`${ok ? 'PASS' : 'FAIL'} ${name}${detail === undefined ? '' : ` (${detail})`}`);
}
function finish() {
  if (outAt > 0) writeFileSync(process.argv[outAt + 1], lines.map((l) => `${l}\n`).join(''));
  else for (const l of lines) console.log(l);
  process.exit(failures ? 1 : 0);
}
// Emulated Nodes start slowly: the bound is for a hang, not for speed.
const timer = setTimeout(() => {
  check('smoke test finished within 120 s', false);
  finish();
}, 120_000);

const require = createRequire(join(process.cwd(), 'package.json'));
const pkgDir = realpathSync(dirname(require.resolve('socktune/package.json')));
const prebuildsDir = join(pkgDir, 'prebuilds') + sep;
const resolved = createRequire(join(pkgDir, 'package.json'))('node-gyp-build').resolve(pkgDir);
check(
  `node-gyp-build resolves the shipped prebuild on ${process.platform}-${process.arch}`,
  resolved.startsWith(prebuildsDir),
  resolved.slice(pkgDir.length + 1),
);

const socktune = await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href);
const { addon } = await import(pathToFileURL(join(pkgDir, 'dist', 'binding.js')).href);
check(
  'socktune loaded an addon from prebuilds/',
  addon.path?.startsWith(prebuildsDir) === true,
  addon.path ? addon.path.slice(pkgDir.length + 1) : addon.error?.message,
);
if (existsSync('/proc/self/maps')) {
  const mapped = [
    ...new Set(
      readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .map((l) => l.slice(l.indexOf('/')))
        .filter((p) => p.endsWith('.node') && p.startsWith(pkgDir + sep)),
    ),
  ];
  check(
    'the addon mapped into the process is that prebuild',
    mapped.length === 1 && mapped[0] === addon.path,
    mapped.map((p) => p.slice(pkgDir.length + 1)).join(', ') || 'no socktune .node mapped',
  );
}

const server = net.createServer((s) => s.on('error', () => {}));
await new Promise((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', res));
const client = net.connect(server.address().port, '127.0.0.1');
try {
  await new Promise((res, rej) => client.once('connect', res).once('error', rej));
  socktune.configure(client, { keepAlive: { idle: 1500, interval: 1000, count: 3 }, userTimeout: 9000, noDelay: true });
  const o = socktune.readOptions(client);
  const ka = o.keepAlive || {};
  check('readOptions keepAlive.idle is 2000 (1500 rounded up to whole seconds)', ka.idle === 2000, `got ${ka.idle}`);
  check('readOptions keepAlive.interval is 1000', ka.interval === 1000, `got ${ka.interval}`);
  check('readOptions keepAlive.count is 3', ka.count === 3, `got ${ka.count}`);
  check('readOptions userTimeout is 9000', o.userTimeout === 9000, `got ${o.userTimeout}`);
  check('readOptions noDelay is true', o.noDelay === true, `got ${o.noDelay}`);
  const state = socktune.tcpInfo(client).state;
  check("tcpInfo(client).state is 'ESTABLISHED'", state === 'ESTABLISHED', `got ${state}`);
} catch (err) {
  check('smoke test ran without throwing', false, err?.stack ?? String(err));
} finally {
  client.destroy();
  server.close();
  clearTimeout(timer);
}
finish();
