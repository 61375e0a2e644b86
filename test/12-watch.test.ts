// `socktune watch` in a real terminal (tmux): it draws counts and the trend, follows new
// TIME_WAIT sockets, and quits cleanly on q and on Ctrl-C, restoring the screen.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { canUse } from './helpers/env.js';
import { Netns, ssCount } from './helpers/netns.js';
import { watch } from '../src/watch.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));
const burst = fileURLToPath(new URL('./fixtures/timewait-burst.mjs', import.meta.url));

function tmux(...args: string[]): string {
  return execFileSync('tmux', args, { encoding: 'utf8' });
}

/** The pane of `session` once it matches `pattern` (polled every 100 ms, for `timeoutMs`). */
function screenUntil(session: string, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  return vi.waitFor(
    () => {
      const screen = tmux('capture-pane', '-p', '-t', session);
      expect(screen).toMatch(pattern);
      return screen;
    },
    { timeout: timeoutMs, interval: 100 },
  );
}

describe.runIf(canUse('tmux', 'ip'))('socktune watch in tmux', () => {
  const ns = new Netns('watch');
  const sessions: string[] = [];
  beforeAll(() => ns.create());
  afterAll(async () => {
    for (const s of sessions) {
      try {
        tmux('kill-session', '-t', s);
      } catch {
        // already ended
      }
    }
    await ns.destroy();
  });

  function open(tag: string, outside?: string): string {
    const session = `st-${tag}-${process.pid}`;
    sessions.push(session);
    const where = outside === undefined ? `ip netns exec ${ns.name} ` : '';
    const cmd = `${where}${process.execPath} ${cli} watch --interval 200 ${outside ?? ''}; echo "EXITED $?"; sleep 30`;
    tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', cmd);
    return session;
  }

  it('draws the counts, follows new TIME_WAIT sockets, and quits on q', async () => {
    const session = open('watch-q');
    const first = await screenUntil(session, /socktune watch: \d+ TCP sockets/);
    expect(first).toMatch(/^TIME_WAIT\s+0/m);
    expect(first).toMatch(/q or Ctrl-C to quit/);
    await ns.start(fixture, ['2', '0', '25', '0']);
    const later = await screenUntil(session, /^TIME_WAIT\s+25\s+█+/m);
    expect(later).toMatch(/^LISTEN\s+2\s+█+/m);
    expect(later).toMatch(/^TIME_WAIT\s+[▁▂▃▄▅▆▇█]+ \+\d/m);
    tmux('send-keys', '-t', session, 'q');
    const after = await screenUntil(session, /EXITED \d+/);
    expect(after).toMatch(/EXITED 0/);
    expect(after).not.toMatch(/socktune watch:/); // the alternate screen is gone
  });

  it('--netns watches another namespace, and --pid one process there, from outside it', async () => {
    const { child } = await ns.start(fixture, ['1', '3', '0', '0']);
    const session = open('watch-ns', `--netns ${ns.name}`);
    const screen = await screenUntil(session, /^ESTABLISHED\s+\d+/m);
    expect(screen).toContain(`TCP sockets of network namespace ${ns.name} (netlink)`);
    tmux('send-keys', '-t', session, 'q');
    expect(await screenUntil(session, /EXITED \d+/)).toMatch(/EXITED 0/);
    const byPid = open('watch-pid', `--pid ${child.pid}`);
    const own = await screenUntil(byPid, /^ESTABLISHED\s+6\s+█+/m);
    expect(own).toContain(`TCP sockets of process ${child.pid} in network namespace /proc/${child.pid}/ns/net (netlink)`);
    expect(own).toMatch(/^LISTEN\s+1\s+█+/m);
    tmux('send-keys', '-t', byPid, 'q');
    expect(await screenUntil(byPid, /EXITED \d+/)).toMatch(/EXITED 0/);
  });

  it('quits on Ctrl-C with status 0', async () => {
    const session = open('watch-c');
    await screenUntil(session, /socktune watch:/);
    tmux('send-keys', '-t', session, 'C-c');
    expect(await screenUntil(session, /EXITED \d+/)).toMatch(/EXITED 0/);
  });
});

describe.runIf(canUse('ip'))('the trend: a fixed baseline, and the rate over the time that really passed', () => {
  const ns = new Netns('trend');
  beforeAll(() => ns.create());
  afterAll(() => ns.destroy());

  it('100 TIME_WAIT, +1, then +50 between refreshes: level bars, and +50 per the seconds between the two reads', async () => {
    await ns.exec(process.execPath, [burst, '100']);
    expect(await ssCount('time-wait', ns)).toBe(100);
    const frames: Array<{ at: number; text: string }> = [];
    // New TIME_WAIT sockets are made while a frame is written, by a process run synchronously, and
    // the event loop is blocked meanwhile, so the next refresh comes later than its 50 ms interval.
    const add = (n: number) => {
      const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, burst, String(n)], { encoding: 'utf8' });
      expect(r.status).toBe(0);
    };
    const output = {
      isTTY: false,
      write(text: string) {
        frames.push({ at: performance.now(), text });
        if (frames.length === 1) add(1);
        else if (frames.length === 2) {
          add(50);
          // However fast the burst ran, the loop stays blocked 100 ms more: the next read comes
          // at least twice the interval after this one.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
        }
        return true;
      },
      on() {},
      off() {},
    } as unknown as NodeJS.WriteStream;
    await watch({ filter: { netns: ns.name }, interval: 50, count: 3, output });
    expect(frames).toHaveLength(3);
    const trend = (text: string) => /^TIME_WAIT +([▁▂▃▄▅▆▇█]+) ?(\S*)$/m.exec(text)!;
    const count = (text: string) => Number(/^TIME_WAIT +(\d+)/m.exec(text)![1]);
    expect([count(frames[0].text), count(frames[1].text), count(frames[2].text)]).toEqual([100, 101, 151]);
    expect(await ssCount('time-wait', ns)).toBe(151);
    // +1 on 100 is not a jump from the lowest bar to the highest.
    expect(trend(frames[1].text)[1]).toBe('██');
    expect(trend(frames[2].text)[1]).toBe('▆▆█');
    // The rate: 50 sockets over the seconds between the two reads (frames are written right after
    // each read), not over the nominal 50 ms interval, which would say 1000/s.
    const elapsed = (frames[2].at - frames[1].at) / 1000;
    expect(elapsed).toBeGreaterThan(0.1);
    const shown = Number(/^\+(\d+(?:\.\d)?)\/s$/.exec(trend(frames[2].text)[2])![1]);
    expect(shown).toBeGreaterThan((50 / elapsed) * 0.9);
    expect(shown).toBeLessThan((50 / elapsed) * 1.1);
    expect(shown).toBeLessThan(1000 * 0.9);
  });
});

describe('watch() refuses what a timer cannot hold', () => {
  it.each([
    [{ interval: 2 ** 31 }, 'ERR_OUT_OF_RANGE'],
    [{ interval: 49 }, 'ERR_OUT_OF_RANGE'],
    [{ interval: 100.5 }, 'ERR_OUT_OF_RANGE'],
    [{ interval: NaN }, 'ERR_OUT_OF_RANGE'],
    [{ interval: '100' }, 'ERR_INVALID_ARG_TYPE'],
    [{ interval: 100, count: 0 }, 'ERR_OUT_OF_RANGE'],
    [{ interval: 100, count: 1.5 }, 'ERR_OUT_OF_RANGE'],
    [{ interval: 100, count: '1' }, 'ERR_INVALID_ARG_TYPE'],
  ])('%j: %s, and prints nothing', (opts, code) => {
    let written = '';
    const output = { isTTY: false, write: (t: string) => (written += t), on() {}, off() {} } as unknown as NodeJS.WriteStream;
    expect(() => watch({ filter: {}, output, ...(opts as { interval: number }) })).toThrow(expect.objectContaining({ code }));
    expect(written).toBe('');
  });
});
