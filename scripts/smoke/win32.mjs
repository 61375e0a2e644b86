// The Windows smoke test of an installed socktune, run by node.exe (under wine on Linux): the
// win32 prebuild loads, and every option and view answers ERR_SOCKTUNE_UNSUPPORTED (Node's TCP
// handles expose no socket on Windows) after argument validation, never a TypeError or a
// "closed socket". Writes PASS/FAIL lines to the file named by --out (wine gives node.exe no
// usable stdout pipe); exits 1 on any failure.
import { realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const out = process.argv[process.argv.indexOf('--out') + 1];
const lines = [];
let failures = 0;
function check(name, ok, detail) {
  if (!ok) failures++;
  lines.push(`${ok ? 'PASS' : 'FAIL'} ${name}${detail === undefined ? '' : ` (${detail})`}`);
}
function finish() {
  writeFileSync(out, lines.map((l) => `${l}\n`).join(''));
  process.exit(failures ? 1 : 0);
}
const timer = setTimeout(() => { check('smoke test finished within 120 s', false); finish(); }, 120_000);

const require = createRequire(join(process.cwd(), 'package.json'));
const pkgDir = realpathSync(dirname(require.resolve('socktune/package.json')));
const prebuildsDir = join(pkgDir, 'prebuilds') + sep;
const resolved = createRequire(join(pkgDir, 'package.json'))('node-gyp-build').resolve(pkgDir);
check(`node-gyp-build resolves the shipped prebuild on ${process.platform}-${process.arch}`,
  resolved === join(pkgDir, 'prebuilds', 'win32-x64', 'socktune.node'), resolved.slice(pkgDir.length + 1));

const socktune = await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href);
const { addon, constants } = await import(pathToFileURL(join(pkgDir, 'dist', 'binding.js')).href);
check('socktune loaded the win32 addon', addon.path === resolved, addon.path ?? addon.error?.message);
check("the addon says it is the win32 core", constants.platform.name === 'win32', constants.platform.name);
const { optionNames } = await import(pathToFileURL(join(pkgDir, 'dist', 'tables.js')).href);
check(`the addon names all ${optionNames.length} options of the table, none supported`,
  constants.options.length === optionNames.length && constants.options.every((o, i) => o.name === optionNames[i] && !o.supported),
  constants.options.map((o) => `${o.name || '?'}:${o.supported}`).join(' '));

function expectCode(name, code, fn) {
  try {
    fn();
    check(`${name} throws ${code}`, false, 'returned');
  } catch (err) {
    check(`${name} throws ${code}`, err?.code === code, `${err?.code}: ${err?.message}`);
  }
}

const server = net.createServer((s) => s.on('error', () => {}));
await new Promise((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', res));
const client = net.connect(server.address().port, '127.0.0.1');
try {
  await new Promise((res, rej) => client.once('connect', res).once('error', rej));
  const U = 'ERR_SOCKTUNE_UNSUPPORTED';
  expectCode('configure(socket, { keepAlive: { idle, interval, count } })', U, () => socktune.configure(client, { keepAlive: { idle: 2000, interval: 1000, count: 3 } }));
  expectCode('configure(socket, { keepAlive: true })', U, () => socktune.configure(client, { keepAlive: true }));
  expectCode('configure(socket, { userTimeout })', U, () => socktune.configure(client, { userTimeout: 9000 }));
  expectCode('configure(socket, { linger: 0 })', U, () => socktune.configure(client, { linger: 0 }));
  expectCode('configure(socket, { noDelay })', U, () => socktune.configure(client, { noDelay: true }));
  expectCode('configure(server, { reusePort })', U, () => socktune.configure(server, { reusePort: true }));
  expectCode('configure validates before it refuses: { keepAlive: { idle: 1.5 } }', 'ERR_OUT_OF_RANGE', () => socktune.configure(client, { keepAlive: { idle: 1.5 } }));
  expectCode('readOptions(socket)', U, () => socktune.readOptions(client));
  expectCode('tcpInfo(socket)', U, () => socktune.tcpInfo(client));
  expectCode('sendQueue(socket)', U, () => socktune.sendQueue(client));
  expectCode('presets.gracefulHeartbeat()', U, () => socktune.presets.gracefulHeartbeat());
  expectCode('presets.rstOnClose()', U, () => socktune.presets.rstOnClose());
  expectCode('sysctlAudit()', U, () => socktune.sysctlAudit());
  check('the socket still works after the refusals', !client.destroyed && client.writable);
} catch (err) {
  check('smoke test ran without throwing', false, err?.stack ?? String(err));
} finally {
  client.destroy();
  server.close();
  clearTimeout(timer);
}
finish();
