#!/usr/bin/env node
/**
 * The `socktune` command. A surface only: every decision lives in the library.
 * @module
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import type { SelfCheck } from './diagnose/selfcheck.js';
import type { SysctlAudit } from './diagnose/audit.js';
import { connectionReport, connectionStates, type ConnectionFilter } from './diagnose/states.js';
import { table, paint } from './format.js';
import { watch } from './watch.js';
import type { TcpState } from './options.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function show(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}

const severityColour = { ok: 'green', info: 'dim', warn: 'yellow', critical: 'red' } as const;

function renderAudit(audit: SysctlAudit): string {
  const lines = [
    `sysctl audit: kernel ${audit.kernel.release}, ${audit.timeWait} TIME_WAIT sockets in this namespace`,
    '',
  ];
  const order = { critical: 0, warn: 1, info: 2, ok: 3 } as const;
  const findings = [...audit.findings].sort((a, b) => order[a.severity] - order[b.severity]);
  for (const f of findings) {
    const head = `${paint(f.severity.toUpperCase().padEnd(8), severityColour[f.severity])} ${f.setting} = ${f.value ?? '(absent)'}`;
    lines.push(head);
    if (f.severity !== 'ok') {
      lines.push(`         ${f.meaning}`);
      if (f.fix) lines.push(`         fix: ${f.fix}`);
    }
  }
  const s = audit.summary;
  lines.push('', `summary: ${s.critical} critical, ${s.warn} warn, ${s.info} info, ${s.ok} ok`);
  return lines.join('\n');
}

function renderDoctor(check: SelfCheck): string {
  const rows = check.rows.map((r) => [
    r.name,
    r.supported ? 'yes' : 'no',
    show(r.before),
    show(r.wrote),
    show(r.read),
    r.ok ? paint('ok', 'green') : r.supported ? paint('FAIL', 'red') : paint('n/a', 'yellow'),
    r.error ?? '',
  ]);
  const lines = [
    `socktune ${pkg.version} self-check: Node ${check.node}, ${check.platform}, kernel ${check.kernel}`,
    '',
    table(['option / view', 'supported', 'before', 'wrote', 'read back', 'result', 'note'], rows),
    '',
    check.ok
      ? paint('Every option and view this platform has works on a live loopback connection.', 'green')
      : paint('Something this platform should support did not work: see the rows marked FAIL.', 'red'),
  ];
  return lines.join('\n');
}

const program = new Command()
  .name('socktune')
  .description('TCP lifecycle control and diagnostics for Node.js sockets')
  .version(pkg.version);

program
  .command('doctor')
  .description(
    'audit the TIME_WAIT/CLOSE_WAIT/keepalive sysctls of this namespace and check which socket options work here. ' +
      'Exit 1 when a finding is critical or an option that should work does not (with --strict, warnings too)',
  )
  .option('--json', 'print JSON: the sysctlAudit() shape plus selfCheck and ok')
  .option('--strict', 'exit 1 on warnings too')
  .action(async (opts: { json?: boolean; strict?: boolean }) => {
    // Loaded here so stat and watch start without the self-check's net/tls imports.
    const { sysctlAudit } = await import('./diagnose/audit.js');
    const { selfCheck } = await import('./diagnose/selfcheck.js');
    const audit = sysctlAudit();
    const check = await selfCheck();
    const attention = audit.summary.critical > 0 || (opts.strict === true && audit.summary.warn > 0);
    const ok = check.ok && !attention;
    if (opts.json) {
      process.stdout.write(`${JSON.stringify({ ...audit, selfCheck: check, ok }, null, 2)}\n`);
    } else {
      const verdict = ok
        ? paint(audit.summary.warn > 0 ? 'Nothing critical; the warnings above are worth a look.' : 'Nothing needs attention.', 'green')
        : paint('Something needs attention: see CRITICAL findings or FAIL rows above.', 'red');
      process.stdout.write(`${renderAudit(audit)}\n\n${renderDoctor(check)}\n\n${verdict}\n`);
    }
    process.exitCode = ok ? 0 : 1;
  });

interface FilterFlags {
  process?: boolean;
  port?: string;
  localPort?: string;
  remotePort?: string;
  localAddress?: string;
  remoteAddress?: string;
  family?: string;
  state?: string[];
  source?: string;
}

function integerFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new Error(`--${name} must be a whole number, got '${v}'`);
  return Number(v);
}

/** Turns CLI flags into a ConnectionFilter; state names accept ss's dashes and any case. */
function filterFrom(o: FilterFlags): ConnectionFilter {
  const f: ConnectionFilter = {};
  if (o.process) f.process = true;
  if (o.port !== undefined) f.port = integerFlag('port', o.port);
  if (o.localPort !== undefined) f.localPort = integerFlag('local-port', o.localPort);
  if (o.remotePort !== undefined) f.remotePort = integerFlag('remote-port', o.remotePort);
  if (o.localAddress !== undefined) f.localAddress = o.localAddress;
  if (o.remoteAddress !== undefined) f.remoteAddress = o.remoteAddress;
  if (o.family !== undefined) f.family = integerFlag('family', o.family) as 4 | 6;
  if (o.state?.length) f.states = o.state.map((s) => s.toUpperCase().replace(/-/g, '_').replace(/^ESTAB$/, 'ESTABLISHED')) as TcpState[];
  if (o.source !== undefined) f.source = o.source as ConnectionFilter['source'];
  return f;
}

function withFilterFlags(cmd: Command): Command {
  return cmd
    .option('--process', 'only sockets of this process (default: the whole network namespace)')
    .option('--port <port>', 'a port on either side')
    .option('--local-port <port>', 'local port')
    .option('--remote-port <port>', 'remote port')
    .option('--local-address <ip>', 'local address')
    .option('--remote-address <ip>', 'remote address')
    .option('--family <4|6>', 'address family')
    .option('--state <state...>', "states to count (kernel names; ss's TIME-WAIT spelling works too)")
    .option('--source <netlink|proc>', 'where to read (default: netlink, else /proc/net/tcp)');
}

const bar = (n: number, max: number, width = 30) => '#'.repeat(max > 0 ? Math.round((n / max) * width) : 0);

withFilterFlags(program.command('stat'))
  .description('count TCP sockets by state, with the peers and ports holding TIME_WAIT and CLOSE_WAIT')
  .option('--top <n>', 'rows per ranking', '5')
  .option('--json', 'print JSON (the shape of connectionStates(), plus top)')
  .action((opts: FilterFlags & { top: string; json?: boolean }) => {
    const filter = filterFrom(opts);
    const limit = integerFlag('top', opts.top) ?? 5;
    // One dump serves both the counts and the rankings.
    const counts = limit > 0 ? connectionReport(filter, limit) : { ...connectionStates(filter), top: {} };
    const { top } = counts;
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(counts)}\n`);
      return;
    }
    const rows = Object.entries(counts.states).filter(([, n]) => n > 0);
    const max = Math.max(0, ...rows.map(([, n]) => n));
    const out = [
      `TCP sockets in this ${counts.scope === 'process' ? 'process' : 'network namespace'} (${counts.source}): ${counts.total}`,
      '',
      table(['state', 'count', ''], rows.map(([s, n]) => [s, String(n), bar(n, max)])),
    ];
    for (const [state, t] of Object.entries(top)) {
      if (t.peers.length === 0) continue;
      out.push('', `${state} by peer / destination / local port:`);
      const len = Math.max(t.peers.length, t.destinations.length, t.localPorts.length);
      const cell = (e?: { key: string; count: number }) => (e ? `${e.count} ${e.key}` : '');
      out.push(table(['peer', 'destination', 'local port'], Array.from({ length: len }, (_, i) => [cell(t.peers[i]), cell(t.destinations[i]), cell(t.localPorts[i])])));
    }
    process.stdout.write(`${out.join('\n')}\n`);
  });

withFilterFlags(program.command('watch'))
  .description('live view of TCP state counts and the TIME_WAIT/CLOSE_WAIT trend (q or Ctrl-C quits)')
  .option('--interval <ms>', 'milliseconds between refreshes', '1000')
  .option('--count <n>', 'stop after n refreshes')
  .option('--json', 'print one JSON line per refresh')
  .action(async (opts: FilterFlags & { interval: string; count?: string; json?: boolean }) => {
    const interval = integerFlag('interval', opts.interval)!;
    if (interval < 50) throw new Error('--interval must be at least 50 ms');
    await watch({ filter: filterFrom(opts), interval, count: integerFlag('count', opts.count), json: opts.json });
  });

program
  .command('demo')
  .description(
    'reproduce TIME_WAIT port exhaustion, a silently vanished peer and pooled "socket hang up", each without and with socktune, ' +
      'in network namespaces of its own (as root; otherwise loopback only), and print what was measured. Takes about 30 s',
  )
  .option('--json', 'print JSON: every number of the table, with how it was measured')
  .action(async (opts: { json?: boolean }) => {
    // Loaded here: the demo spawns children and needs none of this for the other commands.
    const { runDemo, renderDemo } = await import('./demo/run.js');
    const log = opts.json ? undefined : (line: string) => process.stderr.write(`${line}\n`);
    const report = await runDemo({ log });
    process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderDemo(report)}\n`);
    // A scenario the machine cannot run is reported, not failed; one that broke is a failure.
    process.exitCode = report.ok ? 0 : 1;
  });

await program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`socktune: ${err.message}\n`);
  process.exitCode = 2;
});
