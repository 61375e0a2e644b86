// `socktune demo`: the three failures, each without and with socktune, measured in namespaces the
// demo makes and removes itself. Pins the directions (never the speeds), that a run without root
// says what it could not run instead of inventing numbers, and that nothing is left behind, even
// after Ctrl-C.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { printed, runCommand } from '../helpers/children.js';
import { canUse } from '../helpers/env.js';
import { NOBODY, packageCopy, removeCopies } from '../helpers/unprivileged.js';

const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const runModule = new URL('../../dist/demo/run.js', import.meta.url).href;

/** Network namespaces whose names start with `prefix`. */
function namespacesLike(prefix: string): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(prefix));
}

/** Processes whose argv holds `prefix` as an argument (the demo passes its namespace prefix to every child). */
function processesLike(prefix: string): number[] {
  const marker = `\0${prefix}\0`;
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) out.push(Number(pid));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

describe.runIf(canUse('ip', 'nft'))('socktune demo as root (namespaces)', () => {
  let report: any;
  let pid = 0;

  afterAll(() => {
    // A failed assertion above must not leave the demo's namespaces behind for the next file.
    for (const ns of namespacesLike(`st-demo-${pid}-`)) execFileSync('ip', ['netns', 'del', ns]);
  });

  it('--json: every failure without and with socktune, measured in this run; nothing left behind', async () => {
    const r = await runCommand(process.execPath, [cli, 'demo', '--json'], { timeout: 90_000 });
    pid = r.pid;
    expect(r.code, r.stderr).toBe(0);
    report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ mode: 'namespaces', ok: true });
    expect(report.namespaces.length).toBeGreaterThan(0);
    for (const ns of report.namespaces) expect(ns).toMatch(new RegExp(`^st-demo-${pid}-`));
    expect(namespacesLike(`st-demo-${pid}-`)).toEqual([]);
    expect(processesLike(`st-demo-${pid}`)).toEqual([]);

    // TIME_WAIT and EADDRNOTAVAIL: 1000 local ports, tcp_tw_reuse=0, 2 server ports, 3000 connects.
    const pe = report.portExhaustion;
    expect(pe).toMatchObject({ ran: true, connects: 3000, eaddrnotavailMeasured: true });
    expect(pe.arms.plainClose.sysctl).toEqual({ 'net.ipv4.ip_local_port_range': '40000 40999', 'net.ipv4.tcp_tw_reuse': '0' });
    expect(pe.arms.plainClose.timeWait).toBeGreaterThan(0);
    expect(pe.arms.plainClose.eaddrnotavail).toBeGreaterThan(0);
    expect(pe.arms.rstOnClose).toMatchObject({ timeWait: 0, eaddrnotavail: 0, failed: 0, completed: 3000 });

    // Vanished peer: the heartbeat policy notices within its budget + 1 s of the last packet
    // (keepalive timers are jiffy-based); Node's default does not notice at all.
    const dp = report.deadPeer;
    expect(dp.ran).toBe(true);
    const hb = dp.arms.gracefulHeartbeat;
    expect(hb).toMatchObject({ budgetMs: 5000, noticed: hb.connections, errors: { ETIMEDOUT: hb.connections } });
    expect(hb.sinceLastPacketMs.max).toBeLessThanOrEqual(hb.budgetMs + 1000);
    const ska = dp.arms.setKeepAlive;
    expect(ska).toMatchObject({ budgetMs: 12_000, noticed: ska.connections });
    expect(ska.sinceLastPacketMs.max).toBeLessThanOrEqual(ska.budgetMs + 1000);
    expect(ska.noticedMs.min).toBeGreaterThan(hb.noticedMs.max);
    expect(dp.arms.nodeDefault).toMatchObject({ noticed: 0, noticedMs: null, statesAtCap: { ESTABLISHED: dp.arms.nodeDefault.connections } });
    expect(dp.production).toEqual({ keepAlive: { idle: 30_000, interval: 10_000, count: 3 }, userTimeout: 60_000, budgetMs: 60_000 });

    // The idle-timeout race: the policy agent never fails (Node's agent may or may not lose the race).
    const hu = report.hangUps;
    expect(hu).toMatchObject({ ran: true, idleTimeoutMs: 5000, trials: 200 });
    expect(hu.arms.nodeAgent.trials).toBe(200);
    const agent = hu.arms.socktuneAgent;
    if (agent.available) expect(agent).toMatchObject({ trials: 200, failed: 0, hangUps: 0, setupFailed: 0 });
    else expect(agent.why).toMatch(/^agent not available/);
  }, 100_000);

  it('the table shows the same numbers', async () => {
    expect(report).toBeDefined();
    const { renderDemo } = (await import(runModule)) as { renderDemo: (r: unknown) => string };
    const text = renderDemo(report);
    const pe = report.portExhaustion.arms;
    expect(text).toMatch(new RegExp(`plain close.*no\\s+${pe.plainClose.timeWait} TIME_WAIT left`));
    expect(text).toMatch(/rstOnClose.*yes\s+0 TIME_WAIT left/);
    expect(text).toMatch(new RegExp(`EADDRNOTAVAIL.*no\\s+${pe.plainClose.eaddrnotavail} of 3000`));
    expect(text).toMatch(/Node default.*not within 30 s \(still ESTABLISHED\)/);
    expect(text).toMatch(/gracefulHeartbeat: keepalive 2 s\/1 s\/3, userTimeout 5 s \(demo scale\)\s+yes\s+\d+\.\d s \(ETIMEDOUT\)/);
    expect(text).toMatch(/Production defaults.*30 s\/10 s\/3.*60 s/);
    expect(text).not.toMatch(/not run|failed:/);
  });
});

describe.runIf(canUse('ip', 'setpriv'))('socktune demo without root', () => {
  const ns = `st-demo-${process.pid}-user`;
  afterAll(() => {
    if (namespacesLike(ns).length) execFileSync('ip', ['netns', 'del', ns]);
    removeCopies();
  });

  it('runs what loopback allows and says what it could not run, with no number it did not measure', async () => {
    // A namespace of the test's own, so the TIME_WAIT it leaves is nobody else's; the demo inside runs as nobody.
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // A copy nobody can read: the checkout may be in a directory only root can.
    const { pkg, node } = packageCopy({ addon: true });
    const asNobody = ['netns', 'exec', ns, 'setpriv', ...NOBODY, node, join(pkg, 'dist', 'cli.js'), 'demo', '--json'];
    const r = await runCommand('ip', asNobody, { timeout: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ mode: 'loopback', ok: true, namespaces: [] });
    expect(report.why).toMatch(/root/);

    const pe = report.portExhaustion;
    expect(pe).toMatchObject({ ran: true, eaddrnotavailMeasured: false });
    expect(pe.eaddrnotavailWhy).toMatch(/ip_local_port_range/);
    expect(pe.arms.plainClose.timeWait).toBeGreaterThan(0);
    expect(pe.arms.rstOnClose).toMatchObject({ timeWait: 0, failed: 0 });

    expect(report.deadPeer).toEqual({ ran: false, why: expect.stringMatching(/root.*nftables/) });
    expect(report.hangUps.ran).toBe(true);

    const { renderDemo } = (await import(runModule)) as { renderDemo: (r: unknown) => string };
    const text = renderDemo(report);
    expect(text).toMatch(/EADDRNOTAVAIL\s+not run: narrowing ip_local_port_range/);
    expect(text).toMatch(/peer vanishes: noticed after\s+not run: .*root/);
  }, 70_000);
});

describe.runIf(canUse('ip', 'nft'))('socktune demo interrupted', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (child?.pid) for (const ns of namespacesLike(`st-demo-${child.pid}-`)) execFileSync('ip', ['netns', 'del', ns]);
  });

  it('Ctrl-C removes its namespaces and ends its children', async () => {
    child = spawn(process.execPath, [cli, 'demo'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const prefix = `st-demo-${child.pid}`;
    const exited = once(child, 'exit');
    // Interrupt in the middle: namespaces made, children running (the idle-timeout race has started).
    await printed(child, 'idle-timeout race', 30_000, 'the demo never reached its third scenario');
    await sleep(500);
    expect(namespacesLike(`${prefix}-`).length).toBeGreaterThan(0);
    expect(processesLike(prefix).length).toBeGreaterThan(0);
    child.kill('SIGINT');
    const [code] = await exited;
    expect(code).toBe(130);
    expect(namespacesLike(`${prefix}-`)).toEqual([]);
    // SIGKILLed children leave /proc a moment after the parent has exited.
    await expect.poll(() => processesLike(prefix), { timeout: 5000 }).toEqual([]);
  }, 40_000);
});
