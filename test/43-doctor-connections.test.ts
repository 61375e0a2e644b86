// `socktune doctor` looks at the connections too, not only the sysctls: CLOSE_WAIT sockets with
// the processes that hold them (an application leak), and TIME_WAIT sockets per destination against
// the local port range; the exit status follows the documented thresholds (connectionThresholds).
// Everything is made in namespaces of the test's own by real processes: servers that never end
// half-closed connections, their clients, and clients that close first to one destination, with
// net.ipv4.ip_local_port_range narrowed to 400 ports so a few hundred TIME_WAIT are a large share.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { runCommand } from './helpers/children.js';
import { canUse } from './helpers/env.js';
import { Netns, ssCount } from './helpers/netns.js';
import { cli } from './helpers/cli.js';

const fixtures = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

interface Finding {
  check: string;
  severity: string;
  destination?: string;
  count: number;
  portShare?: number;
  holders?: Array<{ pid: number; command: string; sockets: number }>;
  evidence: Record<string, unknown>;
  meaning: string;
  fix?: string;
}

/** doctor in `ns`, whatever its exit status: the status, stdout. */
async function doctor(ns: Netns, ...args: string[]): Promise<{ code: number | null; stdout: string }> {
  const { code, stdout } = await runCommand('ip', ['netns', 'exec', ns.name, process.execPath, cli, 'doctor', ...args], { maxBuffer: 16 * 1024 * 1024 });
  return { code, stdout };
}

describe.runIf(canUse('ip', 'ss', 'sysctl'))('doctor with 120 CLOSE_WAIT held by 2 servers and 250 TIME_WAIT to one destination', () => {
  const ns = new Netns('docconn');
  const servers: Array<{ port: number; pid: number }> = [];
  let burst: { port: number; timeWait: number };

  beforeAll(async () => {
    ns.create();
    ns.sysctl('net.ipv4.ip_local_port_range', '40000 40399');
    ns.sysctl('net.ipv4.tcp_tw_reuse', '0'); // loopback ports are reused at 2, the namespace default
    for (const n of [70, 50]) {
      const server = JSON.parse((await ns.start(fixtures('leaky-server.mjs'))).ready) as { port: number; pid: number };
      await ns.start(fixtures('half-close-clients.mjs'), [String(server.port), String(n)]);
      servers.push(server);
    }
    burst = JSON.parse(await ns.exec(process.execPath, [fixtures('timewait-burst.mjs'), '250']));
  }, 60_000);
  afterAll(() => ns.destroy());

  it('--json: a critical CLOSE_WAIT finding naming both processes, a critical TIME_WAIT finding for the destination; exit 1', async () => {
    expect(await ssCount('close-wait', ns)).toBe(120);
    expect(await ssCount('time-wait', `dst 127.0.0.1:${burst.port}`, ns)).toBe(250);
    const { code, stdout } = await doctor(ns, '--json');
    expect(code).toBe(1);
    const report = JSON.parse(stdout);
    expect(report.ok).toBe(false);
    const findings = report.connections.findings as Finding[];
    const cw = findings.find((f) => f.check === 'CLOSE_WAIT')!;
    expect(cw).toMatchObject({ severity: 'critical', count: 120, evidence: { sides: { accepted: 120, opened: 0 } } });
    expect(cw.holders).toEqual([
      { pid: servers[0].pid, command: expect.any(String), sockets: 70 },
      { pid: servers[1].pid, command: expect.any(String), sockets: 50 },
    ]);
    expect(cw.fix).toMatch(/halfCloseTimeout/);
    expect(cw.fix).toMatch(/socktune\/register/);
    const tw = findings.filter((f) => f.check === 'TIME_WAIT');
    expect(tw).toHaveLength(1);
    expect(tw[0]).toMatchObject({
      severity: 'critical',
      destination: `127.0.0.1:${burst.port}`,
      count: 250,
      portShare: 0.625,
      evidence: { portRange: { low: 40000, high: 40399, size: 400 }, tcpTwReuse: 0, reusable: false },
    });
    expect(tw[0].fix).toMatch(/rstOnClose/);
    expect(tw[0].fix).toMatch(/tcp_tw_reuse=1/);
    expect(tw[0].fix).toMatch(/ip_local_port_range="10240 65535"/);
    expect(report.connections.summary).toEqual({ ok: 0, info: 0, warn: 0, critical: 2 });
    expect(report.connections.thresholds).toEqual({ closeWait: { info: 1, warn: 10, critical: 100 }, timeWaitPortShare: { warn: 0.25, critical: 0.5 } });
    // The sysctl findings are as they were: only sysctl names.
    for (const f of report.findings) expect(f.setting).toMatch(/^net\.(ipv4|core)\.[a-z_]+$/);
  });

  it('text: the findings, the holders and the fix, and a verdict that is not "Nothing critical"', async () => {
    const { code, stdout } = await doctor(ns);
    expect(code).toBe(1);
    expect(stdout).toMatch(/^connections: 120 CLOSE_WAIT, 250 TIME_WAIT sockets in this namespace \(netlink\)$/m);
    expect(stdout).toMatch(/^CRITICAL CLOSE_WAIT: 120 sockets$/m);
    expect(stdout).toMatch(
      new RegExp(`^ {9}120 connections in CLOSE_WAIT \\(held by ${servers[0].pid} \\S+: 70, ${servers[1].pid} \\S+: 50\\): the peer closed its side`, 'm'),
    );
    expect(stdout).toMatch(/^ {9}fix: An application leak, not a sysctl/m);
    expect(stdout).toMatch(new RegExp(`^CRITICAL TIME_WAIT to 127\\.0\\.0\\.1:${burst.port}: 250 sockets, 62\\.5% of the local port range$`, 'm'));
    expect(stdout).toMatch(/^connection summary: 2 critical, 0 warn, 0 info, 0 ok$/m);
    expect(stdout).not.toMatch(/Nothing critical/);
    expect(stdout).toMatch(/^Something needs attention: see the CRITICAL findings above\.$/m);
  });
});

describe.runIf(canUse('ip', 'ss', 'sysctl'))('the thresholds below critical', () => {
  const ns = new Netns('docwarn');
  let burst: { port: number };

  beforeAll(async () => {
    ns.create();
    ns.sysctl('net.ipv4.ip_local_port_range', '40000 40399');
    ns.sysctl('net.ipv4.tcp_tw_reuse', '0');
    const server = JSON.parse((await ns.start(fixtures('leaky-server.mjs'))).ready) as { port: number };
    await ns.start(fixtures('half-close-clients.mjs'), [String(server.port), '12']);
    burst = JSON.parse(await ns.exec(process.execPath, [fixtures('timewait-burst.mjs'), '120']));
  }, 60_000);
  afterAll(() => ns.destroy());

  it('12 CLOSE_WAIT and 30% of the range: warn, exit 0; --strict exits 1', async () => {
    const { code, stdout } = await doctor(ns, '--json');
    expect(code).toBe(0);
    const findings = JSON.parse(stdout).connections.findings as Finding[];
    expect(findings.map((f) => [f.check, f.severity, f.count, f.portShare])).toEqual([
      ['CLOSE_WAIT', 'warn', 12, undefined],
      ['TIME_WAIT', 'warn', 120, 0.3],
    ]);
    expect((await doctor(ns, '--strict')).code).toBe(1);
    expect((await doctor(ns)).stdout).toMatch(/^Nothing critical; the warnings above are worth a look\.$/m);
  });

  it('with tcp_tw_reuse=2 (loopback) the same TIME_WAIT share is info: connect() reuses those ports', async () => {
    ns.sysctl('net.ipv4.tcp_tw_reuse', '2');
    try {
      const findings = JSON.parse((await doctor(ns, '--json')).stdout).connections.findings as Finding[];
      const tw = findings.find((f) => f.check === 'TIME_WAIT')!;
      expect(tw).toMatchObject({
        severity: 'info',
        destination: `127.0.0.1:${burst.port}`,
        count: 120,
        evidence: { tcpTwReuse: 2, loopback: true, reusable: true },
      });
      expect(tw.meaning).toMatch(/tcp_tw_reuse=2 \(loopback\) lets connect\(\) reuse them/);
    } finally {
      ns.sysctl('net.ipv4.tcp_tw_reuse', '0');
    }
  });
});

describe.runIf(canUse('ip', 'sysctl'))('a namespace with no connections', () => {
  const ns = new Netns('docnone');
  beforeAll(() => ns.create());
  afterAll(() => ns.destroy());

  it('one ok finding each, and doctor exits 0', async () => {
    const { code, stdout } = await doctor(ns, '--json');
    expect(code).toBe(0);
    const c = JSON.parse(stdout).connections;
    expect(c.findings.map((f: Finding) => [f.check, f.severity, f.count])).toEqual([
      ['CLOSE_WAIT', 'ok', 0],
      ['TIME_WAIT', 'ok', 0],
    ]);
    expect(c.summary).toEqual({ ok: 2, info: 0, warn: 0, critical: 0 });
  });
});
