// The Windows smoke test of an installed socktune, run by node.exe or a renamed copy of it (under
// wine on Linux): the win32 prebuild loads, the options Windows has (keepalive idle, interval and
// count, SO_KEEPALIVE, TCP_MAXRT as the user timeout, SO_LINGER, TCP_NODELAY, the buffers) are set
// and read back on a client, an accepted socket and a server, the others, the kernel views and the
// stages (connect()'s prebind, listen()) answer ERR_SOCKTUNE_UNSUPPORTED by name, and a spoofed
// handle is refused. Writes PASS/FAIL lines to the
// file named by --out (wine gives node.exe no usable stdout pipe); exits 1 on any failure.
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
  resolved === join(pkgDir, 'prebuilds', 'win32-x64', 'socktune.node'),
  resolved.slice(pkgDir.length + 1),
);

const socktune = await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href);
const { addon, constants } = await import(pathToFileURL(join(pkgDir, 'dist', 'binding.js')).href);
check('socktune loaded the win32 addon', addon.path === resolved, addon.path ?? addon.error?.message);
check('the addon says it is the win32 core', constants.platform.name === 'win32', constants.platform.name);
// Windows 10 1709+ has the keepalive timings and TCP_MAXRT; wine (8.0) implements SO_KEEPALIVE,
// SO_LINGER, TCP_NODELAY, SO_RCVBUF and SO_SNDBUF and answers WSAENOPROTOOPT to the keepalive
// timings and TCP_MAXRT, which socktune's probe then reports unsupported by name. IP_TOS (which
// Windows takes and ignores) and the stages' options are unsupported everywhere on Windows.
// --wine says which host this is.
const wine = process.argv.includes('--wine');
const { optionNames } = await import(pathToFileURL(join(pkgDir, 'dist', 'tables.js')).href);
const timings = ['TCP_KEEPIDLE', 'TCP_KEEPINTVL', 'TCP_KEEPCNT', 'TCP_USER_TIMEOUT'];
const have = ['SO_KEEPALIVE', 'SO_LINGER', 'TCP_NODELAY', 'SO_RCVBUF', 'SO_SNDBUF', ...(wine ? [] : timings)];
check(
  `the addon names all ${optionNames.length} options of the table, supported here: ${have.join(' ')}`,
  constants.options.length === optionNames.length && constants.options.every((o, i) => o.name === optionNames[i] && o.supported === have.includes(o.name)),
  constants.options.map((o) => `${o.name || '?'}:${o.supported}`).join(' '),
);

function expectCode(name, code, fn) {
  try {
    fn();
    check(`${name} throws ${code}`, false, 'returned');
  } catch (err) {
    check(`${name} throws ${code}`, err?.code === code, `${err?.code}: ${err?.message}`);
  }
}
function expectValue(name, want, fn) {
  try {
    const got = fn();
    check(name, JSON.stringify(got) === JSON.stringify(want), JSON.stringify(got));
  } catch (err) {
    check(name, false, `${err?.code}: ${err?.message}`);
  }
}

let accepted;
const server = net.createServer((s) => {
  accepted ??= s;
  s.on('error', () => {});
});
await new Promise((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', res));
const client = net.connect(server.address().port, '127.0.0.1');
try {
  await new Promise((res, rej) => client.once('connect', res).once('error', rej));
  while (accepted === undefined) await new Promise((r) => setTimeout(r, 10));
  const U = 'ERR_SOCKTUNE_UNSUPPORTED';
  const before = socktune.readOptions(client);
  check('readOptions(socket) before: keepalive off, Nagle on', before.keepAlive === false && before.noDelay === false, JSON.stringify(before));
  if (wine) {
    expectValue('configure(socket, { keepAlive: true, noDelay: true }): readOptions gives them back', { keepAlive: true, noDelay: true }, () => {
      socktune.configure(client, { keepAlive: true, noDelay: true });
      const o = socktune.readOptions(client);
      return { keepAlive: o.keepAlive, noDelay: o.noDelay };
    });
    expectCode('configure(socket, { keepAlive: { idle } }): TCP_KEEPIDLE refused by name', U, () =>
      socktune.configure(client, { keepAlive: { idle: 2000, interval: 1000, count: 3 } }),
    );
    expectCode('configure(socket, { userTimeout }): TCP_USER_TIMEOUT (TCP_MAXRT) refused by name', U, () => socktune.configure(client, { userTimeout: 9000 }));
  } else {
    expectValue(
      'configure(socket, keepAlive 2000/1000/3, userTimeout 9000, noDelay): readOptions gives them back',
      { keepAlive: { idle: 2000, interval: 1000, count: 3 }, userTimeout: 9000, noDelay: true },
      () => {
        socktune.configure(client, { keepAlive: { idle: 2000, interval: 1000, count: 3 }, userTimeout: 9000, noDelay: true });
        const o = socktune.readOptions(client);
        return { keepAlive: o.keepAlive, userTimeout: o.userTimeout, noDelay: o.noDelay };
      },
    );
    expectValue('userTimeout 1500 is held as 2 s (TCP_MAXRT counts seconds; rounded up)', 2000, () => {
      socktune.configure(client, { userTimeout: 1500 });
      return socktune.readOptions(client).userTimeout;
    });
  }
  expectValue('configure(socket, { linger: 0 }): readOptions says 0', 0, () => {
    socktune.configure(client, { linger: 0 });
    return socktune.readOptions(client).linger;
  });
  // Node core's own keepalive (libuv: SO_KEEPALIVE, and the idle time where Windows has it), read
  // back by socktune. Node caches its arguments: a call that repeats them does nothing.
  expectValue("Node's own socket.setKeepAlive(true, 5000), then (false): socktune reads each back", wine ? [true, false] : [5000, false], () => {
    client.setKeepAlive(true, 5000);
    const on = socktune.readOptions(client).keepAlive;
    client.setKeepAlive(false);
    return [wine ? on : on.idle, socktune.readOptions(client).keepAlive];
  });
  if (!wine) {
    expectValue('an accepted socket: configure and read back', { idle: 4000, interval: 2000, count: 5 }, () => {
      socktune.configure(accepted, { keepAlive: { idle: 4000, interval: 2000, count: 5 } });
      return socktune.readOptions(accepted).keepAlive;
    });
  }
  expectValue('an accepted socket: configure { noDelay: false, linger: 0 } and read back', { noDelay: false, linger: 0 }, () => {
    socktune.configure(accepted, { noDelay: false, linger: 0 });
    const o = socktune.readOptions(accepted);
    return { noDelay: o.noDelay, linger: o.linger };
  });
  expectValue('the server (its listening socket): configure noDelay and read back', true, () => {
    socktune.configure(server, { noDelay: true });
    return socktune.readOptions(server).noDelay;
  });
  expectCode('configure(server, { reusePort }) (no SO_REUSEPORT on Windows)', U, () => socktune.configure(server, { reusePort: true }));
  expectCode('configure(server, { reuseAddress }) (SO_REUSEADDR steals ports on Windows)', U, () => socktune.configure(server, { reuseAddress: true }));
  expectCode('configure validates before anything: { keepAlive: { idle: 1.5 } }', 'ERR_OUT_OF_RANGE', () =>
    socktune.configure(client, { keepAlive: { idle: 1.5 } }),
  );
  expectCode('tcpInfo(socket)', U, () => socktune.tcpInfo(client));
  expectCode('sendQueue(socket)', U, () => socktune.sendQueue(client));
  expectCode('presets.gracefulHeartbeat() (its deadlines read TCP_INFO)', U, () => socktune.presets.gracefulHeartbeat());
  expectCode('presets.rstOnClose() (its drain reads the send queue)', U, () => socktune.presets.rstOnClose());
  expectCode('sysctlAudit()', U, () => socktune.sysctlAudit());
  expectValue('configure(socket, { receiveBuffer: 65536 }): Windows holds what was set', 65536, () => {
    socktune.configure(client, { receiveBuffer: 65536 });
    return socktune.readOptions(client).receiveBuffer;
  });
  expectCode('configure(socket, { tos }) (Windows takes IP_TOS and ignores it)', U, () => socktune.configure(client, { tos: 0x10 }));
  // The stages make sockets natively and hand them to Node by descriptor, which Node on Windows
  // does not take: refused by name before anything is opened.
  expectCode('connect({ prebind }) (the pre-connect stage)', U, () =>
    socktune.connect({ host: '127.0.0.1', port: server.address().port, prebind: { noDelay: true } }),
  );
  expectCode('listen(server, options) (the listener stage)', U, () => socktune.listen(net.createServer(), { port: 0, host: '127.0.0.1' }));
  // A second connection to the same server: `accepted` stays the first one's.
  const plain = socktune.connect({ host: '127.0.0.1', port: server.address().port });
  const plainConnected = await new Promise((res) => plain.once('connect', () => res(true)).once('error', (e) => res(e?.code ?? String(e))));
  check('connect() without prebind options is net.connect on Windows (what createAgent uses)', plainConnected === true, plainConnected);
  plain.destroy();
  const spoof = new net.Socket();
  Object.defineProperty(spoof, '_handle', { value: Object.create(Object.getPrototypeOf(client._handle)) });
  Object.defineProperty(spoof, 'connecting', { value: false });
  expectCode("a socket whose _handle is made from Node's prototype", 'ERR_SOCKTUNE_INVALID_HANDLE', () => socktune.configure(spoof, { noDelay: true }));
  client.write('ping');
  const echoed = await new Promise((res) => {
    accepted.once('data', (d) => res(String(d)));
  });
  check('the sockets still carry data after all of it', echoed === 'ping' && !client.destroyed, echoed);
  const closed = client._handle;
  client.destroy();
  await new Promise((r) => setTimeout(r, 50));
  expectCode('a destroyed socket', socktune.codes.SOCKET_CLOSED, () => socktune.readOptions(client));
  check('its handle is closed as far as Node is concerned', client._handle === null && closed !== null);
} catch (err) {
  check('smoke test ran without throwing', false, err?.stack ?? String(err));
} finally {
  client.destroy();
  server.close();
  clearTimeout(timer);
}
finish();
