// A connection nobody reads (paused) is watched by the kernel's events, not by a TCP_INFO read per
// scan: each paused socket joins a second epoll set (edge-triggered, EPOLLRDHUP) once, and the
// guard's scan asks the kernel only about the ones whose peer's FIN or RST came. strace is the
// witness: the scans of quiet paused connections make no getsockopt; the control, the same scan
// after the peers' FIN or RST, asks the kernel exactly for those. And the guard still closes what it
// must: paused connections the peer half-closed, at the deadline; those the peer reset, at once.
import { afterAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { Guard, presets } from '../src/index.js';
import { canUse } from './helpers/env.js';
import { strace } from './helpers/strace.js';
import { closeAll, track } from './helpers/sockets.js';

const N = 200;
const tcpInfo = (calls: string[]) => calls.filter((c) => /getsockopt\(\d+, SOL_TCP, TCP_INFO/.test(c)).length;

describe.runIf(canUse('strace'))('the guard scan of paused connections (strace)', () => {
  it('quiet paused connections cost the scan no system call; after FIN or RST, the kernel is asked for exactly those', async () => {
    const t = await strace('guard-watch.mjs', [String(N)]);
    const { stats } = JSON.parse(t.stdout);
    // The first scan: every paused socket is read once as it joins the set.
    expect(tcpInfo(t.sections.get('first')!)).toBe(N);
    // Three scans while the peers send data (no FIN, no RST): nothing asked.
    expect(tcpInfo(t.sections.get('quiet')!)).toBe(0);
    // The control: the peers half-closed N/2 and reset N/4; the scan asks about those 3N/4 only.
    expect(tcpInfo(t.sections.get('fin')!)).toBe((3 * N) / 4);
    expect(stats.states.CLOSE_WAIT).toBe(N / 2);
    expect(stats.closed.reset).toBe(N / 4);
  }, 60_000);
});

describe('paused connections are still closed on the kernel events', () => {
  afterAll(closeAll);

  it('a paused connection the peer half-closed is closed at halfCloseTimeout; one the peer reset, at the next scan', async () => {
    const guard = new Guard(presets.gracefulHeartbeat({ halfCloseTimeout: 300, scanInterval: 80 }));
    const server = track(
      net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => {
        s.on('error', () => {});
        guard.track(s);
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const clients: net.Socket[] = [];
    for (let i = 0; i < 40; i++) {
      const c = track(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
      c.on('error', () => {});
      await once(c, 'connect');
      clients.push(c);
    }
    while (guard.size < 40) await new Promise((r) => setTimeout(r, 10));
    // Let every paused socket join the watch set and go quiet.
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    for (const c of clients.slice(0, 20)) c.end();
    for (const c of clients.slice(20, 30)) c.resetAndDestroy();
    while ((guard.stats().closed['half-closed'] < 20 || guard.stats().closed.reset < 10) && performance.now() - started < 5000)
      await new Promise((r) => setTimeout(r, 20));
    const took = performance.now() - started;
    expect(guard.stats().closed).toMatchObject({ 'half-closed': 20, reset: 10 });
    expect(guard.size).toBe(10);
    // The deadline plus a scan period, plus a named slack for a loaded machine.
    expect(took).toBeLessThan(300 + 80 + 1000);
  });
});
