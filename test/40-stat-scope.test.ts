// Which process, which namespace: `socktune stat --pid` counts exactly what `ss -tanp` shows for
// that process (in its own network namespace), `--netns` exactly what `ip netns exec NS ss -tan`
// shows, and the owners named for each CLOSE_WAIT group are the processes `ss -p` names. TIME_WAIT
// sockets have no owner, and the output says so. Addresses print as inet_ntop (and ss) print them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectionReport, listConnections } from '../src/index.js';
import { socktune } from './helpers/cli.js';
import { canUse } from './helpers/env.js';
import { Netns, ssCounts } from './helpers/netns.js';
import { closeAll, track } from './helpers/sockets.js';
import { NOBODY, packageCopy, removeCopies } from './helpers/unprivileged.js';

const fixture = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));
const fixtures = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const run = promisify(execFile);

interface SsLine {
  state: string;
  peer: string;
  pids: number[];
}

/** `ss -Htanp` lines: state, peer address:port, and the pids of `users:((...,pid=N,...))`. */
function ssLines(out: string): SsLine[] {
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const cols = line.trim().split(/\s+/);
      return { state: cols[0], peer: cols[4], pids: [...line.matchAll(/pid=(\d+),/g)].map((m) => Number(m[1])) };
    });
}

const stateName = (ss: string) => Object.keys(ssCounts(ss))[0];

describe.runIf(canUse('ip', 'ss'))('stat --pid and --netns, against ss -p and ip netns exec ss', () => {
  const ns = new Netns('scope');
  let big: number;
  let small: number;

  beforeAll(async () => {
    ns.create();
    // Two processes in the namespace: --pid must tell their sockets apart.
    big = (await ns.start(fixture, ['3', '10', '20', '6'])).child.pid!;
    small = (await ns.start(fixture, ['1', '4', '0', '2'])).child.pid!;
  }, 60_000);
  afterAll(() => ns.destroy());

  it('--pid counts exactly the lines ss -tanp gives that pid, from outside its namespace', async () => {
    const lines = ssLines(await ns.exec('ss', ['-Htanp']));
    for (const pid of [big, small]) {
      const { code, stdout } = await socktune('stat', '--pid', String(pid), '--json', '--top', '0');
      expect(code).toBe(0);
      const ours = JSON.parse(stdout);
      expect(ours).toMatchObject({ scope: 'process', pid, netns: `/proc/${pid}/ns/net`, source: 'netlink' });
      const theirs: Record<string, number> = {};
      for (const l of lines.filter((x) => x.pids.includes(pid))) {
        const name = stateName(l.state);
        theirs[name] = (theirs[name] ?? 0) + 1;
      }
      expect(Object.values(theirs).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      for (const [state, n] of Object.entries(ours.states)) expect([state, n]).toEqual([state, theirs[state] ?? 0]);
      // The /proc fallback, read in that namespace too, agrees.
      const viaProc = JSON.parse((await socktune('stat', '--pid', String(pid), '--json', '--top', '0', '--source', 'proc')).stdout);
      expect(viaProc.states).toEqual(ours.states);
    }
  });

  it('--netns NAME and --netns PATH count exactly what ip netns exec NS ss -tan counts', async () => {
    const theirs = ssCounts(await ns.exec('ss', ['-Htan']));
    for (const where of [ns.name, `/run/netns/${ns.name}`, `/proc/${big}/ns/net`]) {
      for (const source of ['netlink', 'proc']) {
        const { code, stdout } = await socktune('stat', '--netns', where, '--json', '--top', '0', '--source', source);
        expect(code).toBe(0);
        const ours = JSON.parse(stdout);
        expect(ours).toMatchObject({ scope: 'namespace', netns: where, source });
        for (const [state, n] of Object.entries(ours.states)) expect([where, source, state, n]).toEqual([where, source, state, theirs[state] ?? 0]);
      }
    }
  });

  it('names the owners of each CLOSE_WAIT group as ss -p does; TIME_WAIT has none, and says so', async () => {
    const ours = JSON.parse((await socktune('stat', '--netns', ns.name, '--json', '--top', '100')).stdout);
    const closeWait = ssLines(
      await ns.exec('ss', ['-Htanp', 'state', 'close-wait']).then((o) =>
        o
          .split('\n')
          .map((l) => `CLOSE-WAIT ${l}`)
          .join('\n'),
      ),
    );
    // ss with a state filter prints no state column: the prefix above puts one back.
    expect(ours.top.CLOSE_WAIT.owned).toBe(true);
    expect(ours.top.CLOSE_WAIT.destinations.length).toBeGreaterThan(0);
    for (const entry of ours.top.CLOSE_WAIT.destinations) {
      const owners: Record<number, number> = {};
      for (const l of closeWait.filter((x) => x.peer === entry.key)) for (const pid of l.pids) owners[pid] = (owners[pid] ?? 0) + 1;
      expect([entry.key, Object.fromEntries(entry.owners.map((o: { pid: number; sockets: number }) => [o.pid, o.sockets]))]).toEqual([entry.key, owners]);
      // The command is the kernel's name of the process (/proc/PID/comm), as ss -p prints it: 'node',
      // or 'MainThread' where Node names its main thread (24 and later).
      for (const o of entry.owners) expect(o.command).toBe(readFileSync(`/proc/${o.pid}/comm`, 'utf8').trim());
    }
    expect(ours.top.TIME_WAIT.owned).toBe(false);
    expect(ours.top.TIME_WAIT.peers[0].owners).toBeUndefined();
    const text = (await socktune('stat', '--netns', ns.name)).stdout;
    expect(text).toMatch(/^TIME_WAIT sockets have no owning process: the kernel keeps them after the process closed them\.$/m);
    const command = ours.top.CLOSE_WAIT.destinations[0].owners[0].command;
    expect(text).toMatch(new RegExp(`^destination 127\\.0\\.0\\.1:\\d+\\s+(${big}|${small}) ${command}: \\d+`, 'm'));
  });

  it('a process or namespace that does not exist is exit status 3 with what could not be opened', async () => {
    const gone = await socktune('stat', '--pid', '4194304');
    expect(gone).toMatchObject({ code: 3, stdout: '' });
    expect(gone.stderr).toBe('socktune stat: open /proc/4194304/fd ESRCH: no such process\n');
    const none = await socktune('stat', '--netns', `st-none-${process.pid}`);
    expect(none.code).toBe(3);
    expect(none.stderr).toBe(
      `socktune stat: no network namespace named 'st-none-${process.pid}': /run/netns/st-none-${process.pid} does not exist; \`ip netns list\` names them (open ENOENT: no such file or directory)\n`,
    );
  });
});

describe('addresses as inet_ntop writes them', () => {
  afterAll(closeAll);

  it('an IPv4 peer of an IPv6 socket is ::ffff:127.0.0.1, through netlink, /proc and stat alike', async () => {
    // A dual-stack server: the accepted socket is IPv6 with an IPv4-mapped peer.
    const server = track(net.createServer({ allowHalfOpen: true }, (s) => track(s)));
    server.listen(0, '::');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const client = track(net.connect(port, '127.0.0.1'));
    await once(client, 'connect');
    client.end(); // the server side is left in CLOSE_WAIT: ranked, with its peer
    // And an IPv6 socket this side opened to an IPv4-mapped destination, left in CLOSE_WAIT by a
    // server that ends at once.
    const ender = track(net.createServer((s) => track(s).end()));
    ender.listen(0, '127.0.0.1');
    await once(ender, 'listening');
    const enderPort = (ender.address() as net.AddressInfo).port;
    const mapped = track(net.connect({ port: enderPort, host: '::ffff:127.0.0.1', allowHalfOpen: true }));
    await once(mapped, 'connect');
    await sleep(100);
    for (const source of ['netlink', 'proc'] as const) {
      const [mine] = listConnections({ process: true, source, family: 6, localPort: port, states: ['CLOSE_WAIT'] });
      expect([source, mine.localAddress, mine.remoteAddress]).toEqual([source, '::ffff:127.0.0.1', '::ffff:127.0.0.1']);
      const report = connectionReport({ process: true, source, localPort: port });
      const owner = { pid: process.pid, command: expect.any(String), sockets: 1 };
      expect(report.top.CLOSE_WAIT.peers).toEqual([{ key: '::ffff:127.0.0.1', count: 1, owners: [owner] }]);
      // Accepted by the listener on `port`: ranked by that local port, not by the client's port.
      expect(report.top.CLOSE_WAIT.localPorts).toEqual([{ key: String(port), count: 1, owners: [owner] }]);
      expect(report.top.CLOSE_WAIT.destinations).toEqual([]);
      const opened = connectionReport({ process: true, source, remotePort: enderPort });
      expect(opened.top.CLOSE_WAIT.destinations).toEqual([{ key: `[::ffff:127.0.0.1]:${enderPort}`, count: 1, owners: [owner] }]);
      expect(opened.top.CLOSE_WAIT.localPorts).toEqual([]);
    }
    const text = (await socktune('stat', '--pid', String(process.pid), '--local-port', String(port))).stdout;
    expect(text).toMatch(new RegExp(`^1 ::ffff:127\\.0\\.0\\.1 +1 ${port}$`, 'm'));
    const openedText = (await socktune('stat', '--pid', String(process.pid), '--remote-port', String(enderPort))).stdout;
    expect(openedText).toMatch(new RegExp(`^1 ::ffff:127\\.0\\.0\\.1 +1 \\[::ffff:127\\.0\\.0\\.1\\]:${enderPort}$`, 'm'));
    expect(text + openedText).not.toMatch(/::ffff:7f00:1/);
  });
});

interface Ranked {
  key: string;
  count: number;
  owners?: Array<{ pid: number; command: string; sockets: number }>;
  unreadable?: number;
}

describe.runIf(canUse('ip', 'ss', 'setpriv'))('accepted and opened connections, as a real server and its clients make them', () => {
  // Accepted: a server that never ends half-closed connections (CLOSE_WAIT at its port) and one
  // that closes first (TIME_WAIT at its port). Opened: clients that close first (TIME_WAIT to one
  // destination). Every client's local port and every accepted connection's remote port is ephemeral.
  const ns = new Netns('sides');
  let leaky: { port: number; pid: number };
  let closer: { port: number; timeWait: number };
  let burst: { port: number; timeWait: number };

  beforeAll(async () => {
    ns.create();
    leaky = JSON.parse((await ns.start(fixtures('leaky-server.mjs'))).ready);
    await ns.start(fixtures('half-close-clients.mjs'), [String(leaky.port), '5']);
    closer = JSON.parse((await ns.start(fixtures('server-closes-first.mjs'), ['4'])).ready);
    burst = JSON.parse(await ns.exec(process.execPath, [fixtures('timewait-burst.mjs'), '7']));
  }, 60_000);
  afterAll(async () => {
    await ns.destroy();
    removeCopies();
  });

  it('ranks accepted connections by their local port and opened ones by destination, through netlink and /proc alike', async () => {
    // The witness: ss, by local port.
    const ssCloseWait = (await ns.exec('ss', ['-Htan', 'state', 'close-wait', 'sport', '=', `:${leaky.port}`])).split('\n').filter(Boolean);
    expect(ssCloseWait).toHaveLength(5);
    for (const source of ['netlink', 'proc']) {
      const { code, stdout } = await socktune('stat', '--netns', ns.name, '--json', '--source', source);
      expect(code).toBe(0);
      const top = JSON.parse(stdout).top;
      const cw = top.CLOSE_WAIT;
      expect([source, cw.localPorts.map((e: Ranked) => [e.key, e.count])]).toEqual([source, [[String(leaky.port), 5]]]);
      expect([source, cw.localPorts[0].owners]).toEqual([source, [{ pid: leaky.pid, command: expect.any(String), sockets: 5 }]]);
      expect([source, cw.destinations]).toEqual([source, []]);
      expect([source, cw.sides]).toEqual([source, { accepted: 5, opened: 0 }]);
      expect([source, cw.holders]).toEqual([source, [{ pid: leaky.pid, command: expect.any(String), sockets: 5 }]]);
      const tw = top.TIME_WAIT;
      expect([source, tw.destinations.map((e: Ranked) => [e.key, e.count])]).toEqual([source, [[`127.0.0.1:${burst.port}`, 7]]]);
      expect([source, tw.localPorts.map((e: Ranked) => [e.key, e.count])]).toEqual([source, [[String(closer.port), 4]]]);
    }
    const text = (await socktune('stat', '--netns', ns.name)).stdout;
    expect(text).toMatch(/^CLOSE_WAIT by peer \/ destination \(opened here\) \/ local port \(accepted here\):$/m);
    expect(text).toMatch(new RegExp(`^5 127\\.0\\.0\\.1 +5 ${leaky.port}$`, 'm'));
    expect(text).toMatch(/^CLOSE_WAIT: 5 accepted by a listener here, 0 opened here\.$/m);
    expect(text).toMatch(new RegExp(`^all CLOSE_WAIT +${leaky.pid} \\S+: 5$`, 'm'));
    expect(text).toMatch(new RegExp(`^local port ${leaky.port} +${leaky.pid} \\S+: 5$`, 'm'));
    expect(text).toMatch(new RegExp(`^11 127\\.0\\.0\\.1 +7 127\\.0\\.0\\.1:${burst.port} +4 ${closer.port}$`, 'm'));
    // No ephemeral port is ranked: every destination and local port is one of the three servers'.
    expect(text).not.toMatch(/^destination 127\.0\.0\.1:(?!\d+$)/m);
  });

  it('a state filter that excludes the listeners still tells the sides apart (the listener is read anyway)', async () => {
    const top = JSON.parse((await socktune('stat', '--netns', ns.name, '--json', '--state', 'close-wait')).stdout).top;
    expect(top.CLOSE_WAIT.localPorts.map((e: Ranked) => e.key)).toEqual([String(leaky.port)]);
    expect(top.CLOSE_WAIT.destinations).toEqual([]);
    expect(JSON.parse((await socktune('stat', '--netns', ns.name, '--json', '--state', 'close-wait')).stdout).states.LISTEN).toBe(0);
  });

  it('as an unprivileged user, the holders of root\'s CLOSE_WAIT sockets are unreadable, not "no process"', async () => {
    const { pkg, node } = packageCopy({ addon: true });
    const asNobody = (...args: string[]) => run('ip', ['netns', 'exec', ns.name, 'setpriv', ...NOBODY, node, join(pkg, 'dist', 'cli.js'), 'stat', ...args]);
    const json = JSON.parse((await asNobody('--json', '--state', 'close-wait')).stdout);
    const cw = json.top.CLOSE_WAIT;
    expect(cw.holders).toEqual([]);
    expect(cw.unreadable).toBe(5);
    expect(cw.localPorts).toEqual([{ key: String(leaky.port), count: 5, owners: [], unreadable: 5 }]);
    const text = (await asNobody('--state', 'close-wait')).stdout;
    expect(text).toMatch(/^all CLOSE_WAIT +5 unreadable \(run as root to see owners\)$/m);
    expect(text).toMatch(new RegExp(`^local port ${leaky.port} +5 unreadable \\(run as root to see owners\\)$`, 'm'));
    expect(text).not.toMatch(/no process/);
  });
});
