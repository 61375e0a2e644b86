// sysctlAudit() and the /proc readers under it, against the real kernel: the readers agree with
// uname, sysctl, ss and nstat; settings crafted in namespaces of the test's own, with real
// TIME_WAIT sockets in them, give the findings, severities and evidence they should.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { kernelVersion, netCounters, readSysctl, sockstat } from '../src/diagnose/proc.js';
import { sysctlAudit, type Finding, type SysctlAudit } from '../src/diagnose/audit.js';
import { connectionStates } from '../src/diagnose/states.js';
import { canUse } from './helpers/env.js';
import { Netns, nstat, ssCount } from './helpers/netns.js';

const auditFixture = fileURLToPath(new URL('./fixtures/audit.mjs', import.meta.url));
const statesFixture = fileURLToPath(new URL('./fixtures/states.mjs', import.meta.url));

const settings = [
  'net.ipv4.tcp_tw_reuse',
  'net.ipv4.tcp_tw_recycle',
  'net.ipv4.tcp_timestamps',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_max_tw_buckets',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.tcp_max_syn_backlog',
  'net.core.somaxconn',
  'net.ipv4.tcp_max_orphans',
];

const bySetting = (a: SysctlAudit): Record<string, Finding> => Object.fromEntries(a.findings.map((f) => [f.setting, f]));

/** `sysctl -n`, the witness: its text with runs of blanks as one space, as findings hold it. */
function sysctlN(name: string, ns?: Netns): string | undefined {
  try {
    const args = ['-n', name];
    const out = ns
      ? execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', ...args], { encoding: 'utf8', stdio: 'pipe' })
      : execFileSync('sysctl', args, { encoding: 'utf8', stdio: 'pipe' });
    return out.trim().split(/\s+/).join(' ');
  } catch {
    return undefined; // "cannot stat /proc/sys/...": no such setting
  }
}

describe('kernelVersion', () => {
  it.each([
    ['6.18.44-fc-v669', 6, 18, 44],
    ['5.15.0-1034-azure', 5, 15, 0],
    ['4.18.0-553.el8_10.x86_64', 4, 18, 0],
    ['6.1-rc3', 6, 1, 0],
    ['3.10.0-1160.el7.x86_64', 3, 10, 0],
  ])('parses %s', (release, major, minor, patch) => {
    expect(kernelVersion(release)).toEqual({ major, minor, patch, release });
  });

  it('reads the running kernel, as uname -r names it', () => {
    const release = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
    expect(kernelVersion()).toMatchObject({ release });
    expect(`${kernelVersion().major}.${kernelVersion().minor}`).toBe(release.split('.').slice(0, 2).join('.'));
  });

  it.each([
    [42, 'ERR_INVALID_ARG_TYPE', TypeError],
    ['Darwin', 'ERR_INVALID_ARG_VALUE', TypeError],
    ['', 'ERR_INVALID_ARG_VALUE', TypeError],
  ])('rejects %j with %s', (bad, code, type) => {
    expect(() => kernelVersion(bad as string)).toThrow(type);
    expect(() => kernelVersion(bad as string)).toThrow(expect.objectContaining({ code }));
  });
});

describe('readSysctl', () => {
  it.runIf(canUse('sysctl'))('returns what sysctl -n prints, for every setting the audit reads', () => {
    for (const name of [...settings, 'net.ipv4.tcp_tw_reuse_delay', 'net.ipv4.ip_local_reserved_ports']) {
      const ours = readSysctl(name);
      expect([name, ours?.trim().split(/\s+/).join(' ')]).toEqual([name, sysctlN(name)]);
    }
    // Vectors keep the kernel's tab, as /proc/sys prints them.
    expect(readSysctl('net.ipv4.ip_local_port_range')).toMatch(/^\d+\t\d+$/);
  });

  it('is undefined for a setting this kernel does not have', () => {
    expect(readSysctl('net.ipv4.no_such_setting')).toBeUndefined();
    expect(readSysctl('net.ipv4.tcp_fin_timeout.below_a_file')).toBeUndefined();
    if (existsSync('/proc/sys/net/ipv4/tcp_tw_recycle')) return; // a kernel older than 4.12
    expect(kernelVersion().major * 100 + kernelVersion().minor).toBeGreaterThanOrEqual(412);
    expect(readSysctl('net.ipv4.tcp_tw_recycle')).toBeUndefined();
  });

  it.each([
    [5, 'ERR_INVALID_ARG_TYPE'],
    [null, 'ERR_INVALID_ARG_TYPE'],
    [undefined, 'ERR_INVALID_ARG_TYPE'],
    [new String('net.ipv4.tcp_fin_timeout'), 'ERR_INVALID_ARG_TYPE'],
    ['net.ipv4.tcp_fin_timeout\0', 'ERR_INVALID_ARG_VALUE'],
    ['', 'ERR_INVALID_ARG_VALUE'],
    ['net..ipv4', 'ERR_INVALID_ARG_VALUE'],
    ['../../etc/passwd', 'ERR_INVALID_ARG_VALUE'],
    ['net.//.//.etc.passwd', 'ERR_INVALID_ARG_VALUE'],
    ['net.ipv4', 'ERR_INVALID_ARG_VALUE'],
  ])('rejects %j with %s', (bad, code) => {
    expect(() => readSysctl(bad as string)).toThrow(expect.objectContaining({ code }));
  });
});

describe('sockstat and netCounters on this machine', () => {
  it.each([[5], ['x'], [{}], [undefined, 1]])('refuse arguments %j (they take none) with ERR_INVALID_ARG_VALUE', (...args) => {
    expect(() => (sockstat as (...a: unknown[]) => unknown)(...args)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => (netCounters as (...a: unknown[]) => unknown)(...args)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('sockstat() holds every line of /proc/net/sockstat{,6}, numbers for every field', () => {
    const s = sockstat();
    const lines = ['/proc/net/sockstat', '/proc/net/sockstat6'].filter(existsSync).flatMap((f) => readFileSync(f, 'latin1').trim().split('\n'));
    expect(Object.keys(s).sort()).toEqual(lines.map((l) => l.split(':')[0]).sort());
    expect(Object.keys(s.TCP).sort()).toEqual(['alloc', 'inuse', 'mem', 'orphan', 'tw']);
    for (const fields of Object.values(s)) for (const n of Object.values(fields!)) expect(Number.isInteger(n)).toBe(true);
  });

  it('netCounters() pairs header and value lines: Tcp MaxConn is -1, RtoMin 200 ms', () => {
    const c = netCounters();
    expect(c.Tcp.MaxConn).toBe(-1);
    expect(c.Tcp.RtoMin).toBe(200);
    expect(c.Tcp.RtoMax).toBe(120_000);
    for (const name of ['TW', 'TCPTimeWaitOverflow', 'TCPAbortOnData', 'TCPAbortOnClose', 'TCPKeepAlive', 'ListenOverflows', 'ListenDrops']) {
      expect(Number.isInteger(c.TcpExt[name])).toBe(true);
    }
    expect(Object.keys(c)).toEqual(expect.arrayContaining(['TcpExt', 'IpExt', 'Ip', 'Icmp', 'Tcp', 'Udp']));
  });
});

describe('sysctlAudit in this process', () => {
  it('reports every setting with the value sysctl -n prints, and a summary that adds up', () => {
    const a = sysctlAudit();
    expect(a.kernel).toEqual(kernelVersion());
    expect(a.findings.map((f) => f.setting)).toEqual(settings.filter((s) => s !== 'net.ipv4.tcp_max_orphans' || readSysctl(s) !== undefined));
    for (const f of a.findings) {
      expect(['ok', 'info', 'warn', 'critical']).toContain(f.severity);
      if (canUse('sysctl')) expect([f.setting, f.value]).toEqual([f.setting, sysctlN(f.setting)]);
      expect(f.meaning.length).toBeGreaterThan(20);
      if (f.fix) expect(f.fix).toMatch(/^sysctl -w net\.[\w.]+=("[\d ]+"|\d+) && echo 'net\.[\w.]+ = [\d ]+' > \/etc\/sysctl\.d\/90-net\.[\w.]+\.conf$/);
    }
    const counts = { ok: 0, info: 0, warn: 0, critical: 0 };
    for (const f of a.findings) counts[f.severity]++;
    expect(a.summary).toEqual(counts);
    expect(a.worst).toBe(['critical', 'warn', 'info', 'ok'].find((s) => counts[s as keyof typeof counts] > 0));
    expect(['netlink', 'proc']).toContain(a.timeWaitSource);
  });

  it('judges the port range by the TIME_WAIT count the caller passes', () => {
    const range = readSysctl('net.ipv4.ip_local_port_range')!.split('\t').map(Number);
    const size = range[1] - range[0] + 1;
    const now = connectionStates();
    const a = sysctlAudit({ states: { ...now, states: { ...now.states, TIME_WAIT: size } } });
    expect(a.timeWait).toBe(size);
    expect(a.timeWaitSource).toBe('caller');
    expect(bySetting(a)['net.ipv4.ip_local_port_range']).toMatchObject({
      severity: 'warn',
      evidence: { size, timeWait: size, timeWaitShare: 1, connectsPerSecondPerDestination: Math.floor(size / 60) },
    });
  });

  it.each([
    [null, 'ERR_INVALID_ARG_TYPE'],
    ['x', 'ERR_INVALID_ARG_TYPE'],
    [{ state: {} }, 'ERR_INVALID_ARG_VALUE'],
    [{ states: 5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: { states: { TIME_WAIT: -1 } } }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: { states: { TIME_WAIT: '3' } } }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: { states: { TIME_WAIT: NaN } } }, 'ERR_INVALID_ARG_TYPE'],
    [{ states: { states: { TIME_WAIT: 2.5 } } }, 'ERR_INVALID_ARG_TYPE'],
    [[], 'ERR_INVALID_ARG_TYPE'],
    [5, 'ERR_INVALID_ARG_TYPE'],
    [{ states: { scope: 'process', states: { TIME_WAIT: 0 } } }, 'ERR_INVALID_ARG_VALUE'],
  ])('rejects options %j with %s', (bad, code) => {
    expect(() => sysctlAudit(bad as never)).toThrow(expect.objectContaining({ code }));
  });
});

describe.runIf(canUse('ip', 'ss', 'nstat', 'sysctl'))("in a namespace of the test's own, with real TIME_WAIT sockets", () => {
  const ns = new Netns('audit');
  let first: { sockstat: ReturnType<typeof sockstat>; counters: ReturnType<typeof netCounters> };
  let firstSs: number;
  let firstNstat: Record<string, number>;
  let audit: SysctlAudit;
  let auditSs: number;

  beforeAll(async () => {
    ns.create();
    ns.sysctl('net.ipv4.ip_local_port_range', '40000 40999');
    ns.sysctl('net.ipv4.tcp_tw_reuse', '0');
    ns.sysctl('net.core.somaxconn', '128');
    // 20 client-first closes with room for 8 TIME_WAIT sockets: 12 "time wait bucket table overflow".
    ns.sysctl('net.ipv4.tcp_max_tw_buckets', '8');
    await ns.start(statesFixture, ['1', '0', '20', '0']);
    first = JSON.parse(await ns.exec(process.execPath, [auditFixture, 'proc']));
    firstSs = await ssCount('time-wait', ns);
    firstNstat = await nstat(ns);
    // Then 600 more, spread over 4 server ports: 608 of the 1000 local ports are in TIME_WAIT.
    ns.sysctl('net.ipv4.tcp_max_tw_buckets', '100000');
    await ns.start(statesFixture, ['4', '0', '600', '0']);
    audit = JSON.parse(await ns.exec(process.execPath, [auditFixture]));
    auditSs = await ssCount('time-wait', ns);
  }, 60_000);
  afterAll(() => ns.destroy());

  it('sockstat TCP tw is the TIME_WAIT count ss sees; the overflow and opens are counted', () => {
    expect(firstSs).toBe(8);
    expect(first.sockstat.TCP.tw).toBe(firstSs);
    expect(first.counters.TcpExt.TCPTimeWaitOverflow).toBe(12);
    expect(first.counters.Tcp.ActiveOpens).toBe(20);
    expect(first.counters.Tcp.PassiveOpens).toBe(20);
    expect(first.sockstat.TCP.inuse).toBe(1); // the one listener
  });

  it('netCounters() holds every netstat and snmp counter nstat prints, with the same value', () => {
    const ours = new Map<string, number>();
    for (const [group, fields] of Object.entries(first.counters)) {
      for (const [name, n] of Object.entries(fields!)) ours.set(group + name, n);
    }
    let compared = 0;
    for (const [name, n] of Object.entries(firstNstat)) {
      if (/^(Ip6|Icmp6|Udp6|UdpLite6)/.test(name)) continue; // /proc/net/snmp6, not read here
      expect([name, ours.get(name)]).toEqual([name, n]);
      compared++;
    }
    expect(compared).toBeGreaterThan(200);
    expect(firstNstat.TcpExtTCPTimeWaitOverflow).toBe(12);
  });

  it('counts TIME_WAIT as ss does and warns about the port range, tcp_tw_reuse=0 and the overflow', () => {
    expect(audit.timeWait).toBe(608);
    expect(auditSs).toBe(608);
    expect(audit.timeWaitSource).toBe('netlink');
    expect(audit.sockstat?.TCP.tw).toBe(608);
    const f = bySetting(audit);
    expect(f['net.ipv4.ip_local_port_range']).toMatchObject({
      severity: 'warn',
      value: '40000 40999',
      evidence: { low: 40000, high: 40999, size: 1000, timeWait: 608, timeWaitShare: 0.608, connectsPerSecondPerDestination: 16 },
      fix: expect.stringContaining('sysctl -w net.ipv4.ip_local_port_range="10240 65535"'),
    });
    expect(f['net.ipv4.ip_local_port_range'].meaning).toMatch(/EADDRNOTAVAIL/);
    expect(f['net.ipv4.tcp_tw_reuse']).toMatchObject({
      severity: 'warn',
      value: '0',
      evidence: { timeWait: 608, portRangeSize: 1000, tcpTimestamps: 1 },
      fix: "sysctl -w net.ipv4.tcp_tw_reuse=1 && echo 'net.ipv4.tcp_tw_reuse = 1' > /etc/sysctl.d/90-net.ipv4.tcp_tw_reuse.conf",
    });
    expect(f['net.ipv4.tcp_max_tw_buckets']).toMatchObject({ severity: 'warn', value: '100000', evidence: { max: 100000, TCPTimeWaitOverflow: 12 } });
    expect(f['net.ipv4.tcp_max_tw_buckets'].meaning).toContain('time wait bucket table overflow');
  });

  it('warns that keepalive at 7200 s outlives every middlebox idle timeout, and flags somaxconn 128', () => {
    const f = bySetting(audit);
    expect(f['net.ipv4.tcp_keepalive_time']).toMatchObject({
      severity: 'warn',
      value: '7200',
      evidence: { seconds: 7200, intervalSeconds: 75, probes: 9, deadPeerAfterSeconds: 7875 },
      fix: expect.stringMatching(/^sysctl -w net\.ipv4\.tcp_keepalive_time=120 /),
    });
    expect((f['net.ipv4.tcp_keepalive_time'].evidence.idleTimeouts as Array<{ keptAlive: boolean }>).every((m) => !m.keptAlive)).toBe(true);
    expect(f['net.ipv4.tcp_keepalive_time'].meaning).toContain('configure(socket');
    expect(f['net.core.somaxconn']).toMatchObject({ severity: 'info', value: '128', evidence: { nodeDefaultBacklog: 511, ListenOverflows: 0 } });
  });

  it("reads the namespace's own settings, and skips the global tcp_max_orphans it cannot see", () => {
    const f = bySetting(audit);
    for (const name of settings) expect([name, f[name]?.value]).toEqual([name, sysctlN(name, ns)]);
    expect(f['net.ipv4.tcp_max_orphans']).toBeUndefined();
    expect(f['net.ipv4.tcp_tw_recycle']).toMatchObject({ severity: 'ok', evidence: { present: false } });
    expect(f['net.ipv4.tcp_fin_timeout'].meaning).toMatch(/not the TIME_WAIT length, fixed at 60 s/);
    expect(audit.summary).toEqual({ ok: 6, info: 2, warn: 4, critical: 0 });
    expect(audit.worst).toBe('warn');
  });
});

describe.runIf(canUse('ip'))('crafted settings, one fresh namespace each', () => {
  const cases: Array<[string, Record<string, string>, Record<string, [Finding['severity'], string?]>]> = [
    [
      'the defaults of a new namespace',
      {},
      {
        'net.ipv4.tcp_tw_reuse': ['ok', '2'],
        'net.ipv4.ip_local_port_range': ['ok', '32768 60999'],
        'net.ipv4.tcp_syncookies': ['ok', '1'],
        'net.ipv4.tcp_keepalive_time': ['warn', '7200'],
        'net.ipv4.tcp_keepalive_intvl': ['info', '75'],
        'net.ipv4.tcp_fin_timeout': ['ok', '60'],
        'net.core.somaxconn': ['ok', '4096'],
        'net.ipv4.tcp_timestamps': ['ok', '1'],
      },
    ],
    [
      'tcp_tw_reuse on without timestamps',
      { 'net.ipv4.tcp_tw_reuse': '1', 'net.ipv4.tcp_timestamps': '0' },
      {
        'net.ipv4.tcp_tw_reuse': ['warn', '1'],
        'net.ipv4.tcp_timestamps': ['warn', '0'],
      },
    ],
    ['tcp_tw_reuse off with little TIME_WAIT', { 'net.ipv4.tcp_tw_reuse': '0' }, { 'net.ipv4.tcp_tw_reuse': ['info', '0'] }],
    [
      'keepalive under every idle timeout, too few probes',
      {
        'net.ipv4.tcp_keepalive_time': '120',
        'net.ipv4.tcp_keepalive_intvl': '10',
        'net.ipv4.tcp_keepalive_probes': '2',
      },
      {
        'net.ipv4.tcp_keepalive_time': ['ok', '120'],
        'net.ipv4.tcp_keepalive_intvl': ['ok', '10'],
        'net.ipv4.tcp_keepalive_probes': ['info', '2'],
      },
    ],
    [
      'syncookies off, long fin_timeout, narrow port range',
      {
        'net.ipv4.tcp_syncookies': '0',
        'net.ipv4.tcp_fin_timeout': '120',
        'net.ipv4.ip_local_port_range': '50000 50999',
      },
      {
        'net.ipv4.tcp_syncookies': ['warn', '0'],
        'net.ipv4.tcp_fin_timeout': ['info', '120'],
        'net.ipv4.ip_local_port_range': ['info', '50000 50999'],
        'net.ipv4.tcp_max_syn_backlog': ['ok'],
      },
    ],
    ['syncookies for every SYN', { 'net.ipv4.tcp_syncookies': '2' }, { 'net.ipv4.tcp_syncookies': ['info', '2'] }],
  ];

  it.each(cases)('%s', async (_name, sysctls, expected) => {
    const ns = new Netns(`audit-c${cases.findIndex((c) => c[0] === _name)}`);
    try {
      ns.create();
      for (const [k, v] of Object.entries(sysctls)) ns.sysctl(k, v);
      const f = bySetting(JSON.parse(await ns.exec(process.execPath, [auditFixture])));
      for (const [setting, [severity, value]] of Object.entries(expected)) {
        expect([setting, f[setting].severity]).toEqual([setting, severity]);
        if (value !== undefined) expect([setting, f[setting].value]).toEqual([setting, value]);
        if (severity === 'warn') expect(f[setting].fix).toMatch(/^sysctl -w /);
      }
    } finally {
      await ns.destroy();
    }
  });
});
