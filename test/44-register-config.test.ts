// socktune/register's configuration, as a user meets it: the one stderr line a process started
// with a bad configuration prints before it stops (exit code 9). Near misses name what was meant;
// the line reads as one sentence; a path that is not a rules file (a FIFO, a directory, /dev/zero,
// a huge file) is refused at once instead of blocking or reading forever; a JSON syntax error is
// placed by line and column and never quotes the file; SOCKTUNE_TRACE is exactly 1 or 0; and a
// file of 50,000 rules loads, with a rule shadowed at its very end still found.
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { once } from 'node:events';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanEnv, consumerProject, runToEnd, startApp } from './helpers/register.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

const tmp = mkdtempSync(join(tmpdir(), 'socktune-config-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const file = (name: string, content: string) => {
  const path = join(tmp, name);
  writeFileSync(path, content);
  return path;
};

const prefix = 'socktune/register: bad configuration, not starting: ';

/** Starts an application under socktune/register with `env`; its one stderr line without the prefix and code, and its status. */
async function refused(env: Record<string, string>, timeout?: number): Promise<{ code: number | null; line: string; ran: boolean }> {
  const r = await runToEnd(['--import', 'socktune/register', '-e', 'console.log("application ran")'], env, timeout);
  const lines = r.stderr.split('\n').filter(Boolean);
  expect(lines).toHaveLength(1);
  expect(lines[0].startsWith(prefix)).toBe(true);
  expect(lines[0].endsWith(' (ERR_SOCKTUNE_CONFIG)')).toBe(true);
  return { code: r.code, line: lines[0].slice(prefix.length, -' (ERR_SOCKTUNE_CONFIG)'.length), ran: r.stdout.includes('application ran') };
}

describe('near misses name what was meant', () => {
  it.each([
    // The policy's own name (policy.name, kebab-case), case and separators, a prefix.
    ['graceful-heartbeat', 'gracefulHeartbeat'],
    ['gracefulheartbeat', 'gracefulHeartbeat'],
    ['GRACEFUL_HEARTBEAT', 'gracefulHeartbeat'],
    ['graceful', 'gracefulHeartbeat'],
    ['rst-on-close', 'rstOnClose'],
    ['rstonclose', 'rstOnClose'],
    ['gracefulHeartbeat+rst-on-close', 'rstOnClose'],
  ])('SOCKTUNE_POLICY=%s: did you mean %s', async (given, meant) => {
    const wrong = given.includes('+') ? given.split('+')[1] : given;
    const r = await refused({ SOCKTUNE_POLICY: given });
    expect(r).toMatchObject({ code: 9, ran: false });
    expect(r.line).toBe(`SOCKTUNE_POLICY: unknown preset '${wrong}'; presets: gracefulHeartbeat, rstOnClose; did you mean '${meant}'?`);
  });

  it('a name like no preset gets the list only', async () => {
    expect((await refused({ SOCKTUNE_POLICY: 'banana' })).line).toBe("SOCKTUNE_POLICY: unknown preset 'banana'; presets: gracefulHeartbeat, rstOnClose");
  });

  it.each([
    [
      'a policy field',
      { preset: 'gracefulHeartbeat', halfcloseTimeout: 5000 },
      "rules[0].policy: has no field 'halfcloseTimeout'; fields: preset, ",
      "; did you mean 'halfCloseTimeout'?",
    ],
    [
      'a policy field in kebab-case',
      { preset: 'rstOnClose', 'drain-timeout': 100 },
      "rules[0].policy: has no field 'drain-timeout'; fields: preset, ",
      "; did you mean 'drainTimeout'?",
    ],
    [
      'a keepalive field',
      { preset: 'gracefulHeartbeat', keepAlive: { idel: 5000 } },
      "rules[0].policy.keepAlive: has no field 'idel'; fields: idle, interval, count",
      "; did you mean 'idle'?",
    ],
  ])('in a rules file, %s', async (_what, policy, start, end) => {
    const path = file(`field-${start.length}-${end.length}.json`, JSON.stringify({ rules: [{ port: 5432, policy }] }));
    const r = await refused({ SOCKTUNE_CONFIG: path });
    expect(r.code).toBe(9);
    expect(r.line.startsWith(`SOCKTUNE_CONFIG (${path}) ${start}`)).toBe(true);
    expect(r.line.endsWith(end)).toBe(true);
  });

  it('a rule field and a file field', async () => {
    const rule = file('rule-field.json', '{"rules":[{"locaPort":8080,"policy":"rstOnClose"}]}');
    expect((await refused({ SOCKTUNE_CONFIG: rule })).line).toBe(
      `SOCKTUNE_CONFIG (${rule}) rules[0]: has no field 'locaPort'; rule fields: name, direction, port, host, localPort, localAddress, policy; did you mean 'localPort'?`,
    );
    const top = file('file-field.json', '{"rule":[],"policy":"rstOnClose"}');
    expect((await refused({ SOCKTUNE_CONFIG: top })).line).toBe(
      `SOCKTUNE_CONFIG (${top}): has no field 'rule'; fields: policy, rules, trace, shutdown; did you mean 'rules'?`,
    );
  });
});

describe('the line reads as one sentence', () => {
  it('neither variable set: the module is named once', async () => {
    const r = await refused({});
    expect(r).toMatchObject({ code: 9, ran: false });
    expect(r.line).toBe(
      'neither SOCKTUNE_POLICY (e.g. gracefulHeartbeat) nor SOCKTUNE_CONFIG (a rules file) is set; set one, or stop loading socktune/register',
    );
  });
});

describe('SOCKTUNE_CONFIG that is not a rules file is refused at once', () => {
  it.each([
    [
      'a FIFO no one writes to',
      () => {
        const fifo = join(tmp, 'fifo');
        execFileSync('mkfifo', [fifo]);
        return fifo;
      },
      'is a FIFO, not a regular file: give the path of a JSON rules file',
    ],
    ['a directory', () => tmp, 'is a directory, not a regular file: give the path of a JSON rules file'],
    ['/dev/zero (it never ends)', () => '/dev/zero', 'is a character device, not a regular file: give the path of a JSON rules file'],
    [
      'a file over 16 MiB',
      () => {
        const big = file('big.json', '');
        truncateSync(big, 16 * 1024 * 1024 + 1);
        return big;
      },
      'is larger than 16 MiB (16777216 bytes), the most a rules file may hold',
    ],
  ])('%s', async (_what, make, message) => {
    const path = make();
    // Before: the FIFO blocked in open() and /dev/zero was read until memory ran out; the timeout
    // ends such a process, and then there is no configuration line at all.
    const r = await refused({ SOCKTUNE_CONFIG: path }, 20_000);
    expect(r).toMatchObject({ code: 9, ran: false });
    expect(r.line).toBe(`SOCKTUNE_CONFIG (${path}): ${message}`);
  });

  it('a file of exactly 16 MiB is read (and judged as JSON)', async () => {
    const edge = file('edge.json', '');
    const rules = '{"rules":[{"policy":"rstOnClose"}]}';
    writeFileSync(edge, rules + ' '.repeat(16 * 1024 * 1024 - rules.length));
    const r = await runToEnd(['--import', 'socktune/register', '-e', 'console.log("application ran")'], { SOCKTUNE_CONFIG: edge });
    expect(r).toEqual({ code: 0, stdout: 'application ran\n', stderr: '' });
  });
});

describe('a JSON syntax error is placed, never quoted', () => {
  // A file whose first bytes are a secret: V8's own message would print them.
  const secret = 'root:$6$s3cr3tSalt$H4shH4shH4sh:19000:0:99999:7:::';

  it.each([
    ['a file that is not JSON at all', `${secret}\n`, 'expected a value (an object, array, string, number, true, false or null) at line 1, column 1'],
    [
      'a missing value on line 3',
      `{\n  "rules": [\n    {"port": 1, "policy": }\n  ]\n}\n`,
      'expected a value (an object, array, string, number, true, false or null) at line 3, column 27',
    ],
    [
      'a trailing comma',
      '{"rules":[{"policy":"rstOnClose"},]}',
      'expected a value (an object, array, string, number, true, false or null) at line 1, column 35',
    ],
    ['an unquoted name', `{"rules": [], ${secret}: 1}`, 'expected a property name in double quotes at line 1, column 15'],
    ['a string that never ends', `{"policy": "${secret}`, 'the text ends where it expects a closing quote at line 1, column 63'],
  ])('%s', async (_what, content, where) => {
    const path = file(`syntax-${content.length}.json`, content);
    const r = await refused({ SOCKTUNE_CONFIG: path });
    expect(r.code).toBe(9);
    expect(r.line).toBe(`SOCKTUNE_CONFIG (${path}): is not valid JSON: ${where}`);
    expect(r.line).not.toContain('s3cr3t');
    expect(r.line).not.toContain('root:');
  });

  it('SOCKTUNE_POLICY as JSON too', async () => {
    expect((await refused({ SOCKTUNE_POLICY: '{"preset": gracefulHeartbeat}' })).line).toBe(
      'SOCKTUNE_POLICY: is not valid JSON: expected a value (an object, array, string, number, true, false or null) at line 1, column 12',
    );
  });
});

describe('SOCKTUNE_TRACE is 1 or 0, nothing else', () => {
  it.each(['true', 'TRUE', ' 1 ', 'false', '01', 'yes', ''])('%j is refused', async (value) => {
    const r = await refused({ SOCKTUNE_POLICY: 'rstOnClose', SOCKTUNE_TRACE: value });
    expect(r).toMatchObject({ code: 9, ran: false });
    expect(r.line).toBe(`SOCKTUNE_TRACE: must be 1 or 0, exactly (1 on, 0 off); got '${value}'`);
  });

  it.each(['1', '0'])('%j is accepted', async (value) => {
    const r = await runToEnd(['--import', 'socktune/register', '-e', 'console.log("application ran")'], {
      SOCKTUNE_POLICY: 'rstOnClose',
      SOCKTUNE_TRACE: value,
    });
    expect(r).toEqual({ code: 0, stdout: 'application ran\n', stderr: '' });
  });
});

describe('50,000 rules', () => {
  // The load time is measured by `node scripts/bench/config.mjs`; a test never asserts speed.
  const N = 50_000;
  const rules = () =>
    Array.from({ length: N }, (_, i) => ({
      name: `r${i}`,
      port: (i % 65_535) + 1,
      host: `h${i}.internal`,
      policy: i % 2 ? 'rstOnClose' : 'gracefulHeartbeat',
    }));

  it('load, with the default policy after them', async () => {
    const path = file('many.json', JSON.stringify({ rules: rules(), policy: 'gracefulHeartbeat' }));
    const r = await runToEnd(
      [
        '--import',
        'socktune/register',
        '--input-type=module',
        '-e',
        'const { config } = await import("socktune/register"); console.log(config.rules.length, config.rules.at(-2).name, config.rules.at(-1).name)',
      ],
      { SOCKTUNE_CONFIG: path },
    );
    expect(r).toEqual({ code: 0, stdout: `${N + 1} r${N - 1} default\n`, stderr: '' });
  });

  it('a rule at position 49,999 shadowed by a catch-all just before it is found', async () => {
    const all = rules();
    all[N - 2] = { name: `r${N - 2}`, direction: 'opened', policy: 'rstOnClose' } as unknown as (typeof all)[number];
    all[N - 1] = { ...all[N - 1], direction: 'opened' } as (typeof all)[number];
    const path = file('shadowed.json', JSON.stringify({ rules: all }));
    const r = await refused({ SOCKTUNE_CONFIG: path });
    expect(r.code).toBe(9);
    expect(r.line).toBe(`SOCKTUNE_CONFIG (${path}): rules[${N - 1}] can never apply: rule 'r${N - 2}' before it matches every connection it could`);
  });
});

describe('SOCKTUNE_SHUTDOWN: a drain on a signal, or a clear refusal', () => {
  it.each([
    [{ SOCKTUNE_SHUTDOWN: 'SIGTREM' }, /^SOCKTUNE_SHUTDOWN signal: must be one of SIGTERM, SIGINT, SIGHUP, SIGUSR2; got 'SIGTREM'; did you mean 'SIGTERM'\?$/],
    [
      { SOCKTUNE_SHUTDOWN: '{"signal":"SIGTERM","delai":100}' },
      /^SOCKTUNE_SHUTDOWN: has no field 'delai'; fields: signal, delay, timeout, spread, readinessPath; did you mean 'delay'\?$/,
    ],
    [{ SOCKTUNE_SHUTDOWN: '{"signal":"SIGTERM","timeout":1.5}' }, /^SOCKTUNE_SHUTDOWN timeout: must be whole milliseconds from 0 to 2147483647; got 1.5$/],
    [
      { SOCKTUNE_SHUTDOWN: '{"signal":"SIGTERM","readinessPath":"healthz"}' },
      /^SOCKTUNE_SHUTDOWN readinessPath: must be a path starting with '\/'; got 'healthz'$/,
    ],
  ])('%j is refused', async (env, message) => {
    const r = await refused({ SOCKTUNE_POLICY: 'gracefulHeartbeat', ...env });
    expect(r.code).toBe(9);
    expect(r.ran).toBe(false);
    expect(r.line).toMatch(message);
  });

  it('on SIGTERM the servers are drained (Connection: close, the readiness path answered 503, then no more accepting) and the process ends by the signal', async () => {
    const app = await startApp(fixture('drain-app.cjs'), {
      env: {
        NODE_OPTIONS: '--require=socktune/register',
        SOCKTUNE_POLICY: 'gracefulHeartbeat',
        SOCKTUNE_SHUTDOWN: JSON.stringify({ signal: 'SIGTERM', delay: 300, timeout: 2000, readinessPath: '/health' }),
      },
    });
    const port = app.ready.port as number;
    const agent = new http.Agent({ keepAlive: true });
    try {
      const get = (path: string) =>
        new Promise<string>((resolve) => {
          http
            .get({ host: '127.0.0.1', port, path, agent }, (res) => {
              res.resume();
              res.on('end', () => resolve(`${res.statusCode} ${res.headers.connection}`));
            })
            .on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
        });
      expect(await get('/')).toBe('200 keep-alive');
      const slow = get('/slow');
      await sleep(50);
      const exited = once(app.child, 'exit');
      app.child.kill('SIGTERM');
      await sleep(50);
      // During the delay: answered, each response closing its connection; the readiness check 503.
      expect(await get('/')).toBe('200 close');
      expect(await get('/health')).toBe('503 close');
      expect(await slow).toBe('200 close');
      await sleep(400);
      // After the delay: no longer accepting.
      expect(await get('/')).toBe('ECONNREFUSED');
      // The drain ended with the last connection; the signal then ended the process, as it would have.
      const [code, signal] = (await exited) as [number | null, string | null];
      expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
      expect(app.stderr()).toBe('');
    } finally {
      agent.destroy();
      app.child.kill('SIGKILL');
    }
  });
});

// What the register guide says of NODE_OPTIONS: the package name resolves from the working
// directory, the absolute path of the installed entry point from anywhere.
describe('NODE_OPTIONS from another working directory', () => {
  const run = (nodeOptions: string) =>
    spawnSync(process.execPath, ['-e', 'console.log(require("node:module").builtinModules.length > 0 ? "application ran" : "")'], {
      cwd: '/',
      env: { ...cleanEnv({ SOCKTUNE_POLICY: 'gracefulHeartbeat' }), NODE_OPTIONS: nodeOptions },
      encoding: 'utf8',
      timeout: 30_000,
    });

  it('the package name is not found from /; the absolute paths of both entry points are, and register starts', () => {
    const byName = run('--import=socktune/register');
    expect(byName.status).not.toBe(0);
    expect(byName.stderr).toContain('ERR_MODULE_NOT_FOUND');
    const installed = join(consumerProject(), 'node_modules', 'socktune', 'dist', 'register');
    for (const options of [`--import=${join(installed, 'index.js')}`, `--require=${join(installed, 'require.cjs')}`]) {
      const probe = `import { stats } from '${pathToFileURL(join(installed, 'index.js')).href}'; process.on('exit', () => console.log(JSON.stringify(stats().active)));`;
      const r = run(`${options} --import=data:text/javascript,${encodeURIComponent(probe)}`);
      expect(r.stderr, options).toBe('');
      expect(r.stdout, options).toBe('application ran\ntrue\n');
    }
  });
});
