// connectionStates() and `socktune stat --json` count exactly what `ss` sees, state by state, for
// sockets made in known states inside a namespace of the test's own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { once } from 'node:events';
import { connectionReport, connectionStates, listConnections } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { Netns, ssCounts } from './helpers/netns.js';
import { closeAll, pair, track } from './helpers/sockets.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));

describe.runIf(canUse('ip', 'ss'))('namespace view matches ss exactly', () => {
  const ns = new Netns('states');
  let made: Record<string, number>;

  beforeAll(async () => {
    ns.create();
    const { ready } = await ns.start(fixture, ['3', '20', '40', '15']);
    made = JSON.parse(ready);
  }, 60_000);
  afterAll(() => ns.destroy());

  it('socktune stat --json, state by state', async () => {
    const ours = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json']));
    const theirs = ssCounts(await ns.exec('ss', ['-Htan']));
    expect(ours.scope).toBe('namespace');
    expect(ours.source).toBe('netlink');
    expect(ours.states).toMatchObject({
      LISTEN: made.listeners,
      ESTABLISHED: made.established,
      TIME_WAIT: made.timeWait,
      CLOSE_WAIT: made.closeWait,
      FIN_WAIT2: made.finWait2,
    });
    for (const [state, n] of Object.entries(ours.states)) expect([state, n]).toEqual([state, theirs[state] ?? 0]);
    expect(ours.total).toBe(Object.values(theirs).reduce((a, b) => a + b, 0));
    expect(ours.top.TIME_WAIT.peers).toEqual([{ key: '127.0.0.1', count: made.timeWait }]);
    expect(ours.top.CLOSE_WAIT.peers).toEqual([
      { key: '127.0.0.1', count: made.closeWait, owners: [{ pid: expect.any(Number), command: expect.any(String), sockets: made.closeWait }] },
    ]);
    // The command is the kernel's name of the fixture (/proc/PID/comm): 'node', or 'MainThread' from Node 24.
    const [owner] = ours.top.CLOSE_WAIT.peers[0].owners;
    expect(owner.command).toBe(readFileSync(`/proc/${owner.pid}/comm`, 'utf8').trim());
  });

  it('the /proc/net/tcp fallback counts the same', async () => {
    const viaNetlink = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json', '--top', '0']));
    const viaProc = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json', '--top', '0', '--source', 'proc']));
    expect(viaProc.source).toBe('proc');
    expect(viaProc.states).toEqual(viaNetlink.states);
  });

  it('filters by state and port as ss does', async () => {
    const tw = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json', '--state', 'time-wait', '--top', '0']));
    expect(tw.total).toBe(made.timeWait);
    const listen = (await ns.exec('ss', ['-Htln'])).trim().split('\n');
    const port = Number(listen[0].split(/\s+/)[3].split(':').pop());
    const one = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json', '--port', String(port), '--top', '0']));
    const theirs = ssCounts(await ns.exec('ss', ['-Htan', `( sport = :${port} or dport = :${port} )`]));
    for (const [state, n] of Object.entries(one.states)) expect([state, n]).toEqual([state, theirs[state] ?? 0]);
    const to = JSON.parse(await ns.exec(process.execPath, [cli, 'stat', '--json', '--remote-address', '127.0.0.1', '--top', '0']));
    const ssTo = ssCounts(await ns.exec('ss', ['-Htan', 'dst', '127.0.0.1']));
    for (const [state, n] of Object.entries(to.states)) expect([state, n]).toEqual([state, ssTo[state] ?? 0]);
  });
});

describe('process view', () => {
  afterAll(closeAll);

  it("counts only this process's sockets, by inode", async () => {
    const before = connectionStates({ process: true });
    const { client, peer } = await pair();
    const server2 = track(net.createServer().listen(0, '127.0.0.1'));
    await once(server2, 'listening');
    const after = connectionStates({ process: true });
    expect(after.scope).toBe('process');
    expect(after.states.ESTABLISHED - before.states.ESTABLISHED).toBe(2);
    expect(after.states.LISTEN - before.states.LISTEN).toBe(2);
    const mine = listConnections({ process: true, port: client.localPort! });
    expect(mine.map((c) => c.state).sort()).toEqual(['ESTABLISHED', 'ESTABLISHED']);
    expect(mine.find((c) => c.localPort === client.localPort)?.remotePort).toBe(peer.localPort);
    const viaProc = connectionStates({ process: true, source: 'proc' });
    expect(viaProc.states).toEqual(after.states);
  });

  it('lists IPv6 addresses as inet_ntop writes them', async () => {
    const { client } = await pair('::1');
    const [c] = listConnections({ process: true, localPort: client.localPort!, family: 6 });
    expect(c).toMatchObject({ family: 6, localAddress: '::1', remoteAddress: '::1', state: 'ESTABLISHED' });
    const [p] = listConnections({ process: true, localPort: client.localPort!, family: 6, source: 'proc' });
    expect(p).toMatchObject({ family: 6, localAddress: '::1', remoteAddress: '::1', state: 'ESTABLISHED' });
  });

  it('filters by address in either spelling, through netlink and /proc alike', async () => {
    const { client } = await pair('::1');
    const v4 = await pair('127.0.0.1');
    for (const source of ['netlink', 'proc'] as const) {
      for (const spelling of ['::1', '0:0:0:0:0:0:0:1', '0000::0001']) {
        const found = listConnections({ process: true, source, remoteAddress: spelling, remotePort: client.remotePort! });
        expect(found.map((c) => c.localPort)).toEqual([client.localPort]);
      }
      const byLocal = listConnections({ process: true, source, localAddress: '127.0.0.1', localPort: v4.client.localPort! });
      expect(byLocal).toHaveLength(1);
      // An IPv4 filter never matches IPv6 sockets, and the other way round.
      expect(listConnections({ process: true, source, localAddress: '127.0.0.1', localPort: client.localPort! })).toEqual([]);
      expect(connectionStates({ process: true, source, remoteAddress: '::ffff:127.0.0.1' }).total).toBe(0);
    }
  });

  const hostileFilters: Array<[unknown, string]> = [
    [null, 'ERR_INVALID_ARG_TYPE'],
    ['5', 'ERR_INVALID_ARG_TYPE'],
    [5, 'ERR_INVALID_ARG_TYPE'],
    [[], 'ERR_INVALID_ARG_TYPE'],
    [{ remoteAddress: '10.1' }, 'ERR_INVALID_ARG_VALUE'],
    [{ remoteAddress: '::1::2' }, 'ERR_INVALID_ARG_VALUE'],
    [{ localAddress: '256.1.1.1' }, 'ERR_INVALID_ARG_VALUE'],
    [{ localAddress: 7 }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: ['TIME-WAIT'] }, 'ERR_INVALID_ARG_VALUE'],
    [{ states: [] }, 'ERR_INVALID_ARG_VALUE'],
    [{ states: 'TIME_WAIT' }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: [6] }, 'ERR_INVALID_ARG_VALUE'],
    [{ port: 70000 }, 'ERR_OUT_OF_RANGE'],
    [{ port: 1.5 }, 'ERR_OUT_OF_RANGE'],
    [{ port: NaN }, 'ERR_OUT_OF_RANGE'],
    [{ port: '80' }, 'ERR_INVALID_ARG_TYPE'],
    [{ localPort: -1 }, 'ERR_OUT_OF_RANGE'],
    [{ remotePort: 2 ** 32 + 5 }, 'ERR_OUT_OF_RANGE'],
    [{ family: 5 }, 'ERR_INVALID_ARG_VALUE'],
    [{ family: '4' }, 'ERR_INVALID_ARG_VALUE'],
    [{ process: 'yes' }, 'ERR_INVALID_ARG_TYPE'],
    [{ pid: 0 }, 'ERR_OUT_OF_RANGE'],
    [{ pid: 1.5 }, 'ERR_OUT_OF_RANGE'],
    [{ pid: '1' }, 'ERR_INVALID_ARG_TYPE'],
    [{ pid: 1, process: true }, 'ERR_INVALID_ARG_VALUE'],
    [{ netns: '' }, 'ERR_INVALID_ARG_VALUE'],
    [{ netns: 'a/b' }, 'ERR_INVALID_ARG_VALUE'],
    [{ netns: 5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ source: 'ss' }, 'ERR_INVALID_ARG_VALUE'],
    [{ prt: 1 }, 'ERR_INVALID_ARG_VALUE'],
  ];

  it.each(hostileFilters)('refuses the filter %j with %s in every function, before reading anything', (filter, code) => {
    expect(() => connectionStates(filter as never)).toThrow(expect.objectContaining({ code }));
    expect(() => listConnections(filter as never)).toThrow(expect.objectContaining({ code }));
    expect(() => connectionReport(filter as never)).toThrow(expect.objectContaining({ code }));
  });

  it.each([
    [2.5, 'ERR_OUT_OF_RANGE'],
    [NaN, 'ERR_OUT_OF_RANGE'],
    [-1, 'ERR_OUT_OF_RANGE'],
    [65536, 'ERR_OUT_OF_RANGE'],
    [Infinity, 'ERR_OUT_OF_RANGE'],
    ['5', 'ERR_INVALID_ARG_TYPE'],
    [5n, 'ERR_INVALID_ARG_TYPE'],
    [null, 'ERR_INVALID_ARG_TYPE'],
  ])('connectionReport(filter, %s) is %s, never coerced', (limit, code) => {
    expect(() => connectionReport({}, limit as never)).toThrow(expect.objectContaining({ code }));
  });

  it('reads each filter property once, from the object itself', () => {
    let reads = 0;
    const filter = {
      get port() {
        reads++;
        return reads === 1 ? 1 : 70000;
      },
    };
    expect(() => connectionStates(filter)).not.toThrow();
    expect(reads).toBe(1);
    // An inherited property is not an option: read, it would be refused as a string port.
    expect(() => connectionStates(Object.create({ port: 'not mine' }))).not.toThrow();
  });
});
