/**
 * `socktune doctor`: the sysctl audit, the connection audit and the option self-check, as a report.
 * A surface only: the findings come from sysctlAudit(), connectionAudit() and selfCheck().
 * @module
 */
import { readFileSync } from 'node:fs';
import type { SelfCheck } from './diagnose/selfcheck.js';
import type { Severity, SysctlAudit } from './diagnose/audit.js';
import { sysctlAudit } from './diagnose/audit.js';
import { connectionAudit, type ConnectionAudit } from './diagnose/connaudit.js';
import { selfCheck } from './diagnose/selfcheck.js';
import { paint, table } from './format.js';

function show(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}

const severityColour = { ok: 'green', info: 'dim', warn: 'yellow', critical: 'red' } as const;

/** The audit as text: findings most severe first, with meaning and fix for all but `ok`. */
export function renderAudit(audit: SysctlAudit): string {
  const tw = audit.timeWaitSource === 'none' ? 'TIME_WAIT sockets not counted' : `${audit.timeWait} TIME_WAIT sockets in this namespace`;
  const lines = [`sysctl audit: kernel ${audit.kernel.release}, ${tw}`, ''];
  const findings = [...audit.findings].sort((a, b) => order[a.severity] - order[b.severity]);
  for (const f of findings) {
    const value = f.error ? `(unreadable: ${f.error.code})` : (f.value ?? '(absent)');
    lines.push(`${paint(f.severity.toUpperCase().padEnd(8), severityColour[f.severity])} ${f.setting} = ${value}`);
    if (f.severity !== 'ok') {
      lines.push(`         ${f.meaning}`);
      if (f.fix) lines.push(`         fix: ${f.fix}`);
    }
  }
  const s = audit.summary;
  lines.push('', `summary: ${s.critical} critical, ${s.warn} warn, ${s.info} info, ${s.ok} ok`);
  if (audit.unreadable.length > 0) {
    lines.push('', paint(`could not read (the rest was audited):`, 'yellow'));
    for (const u of audit.unreadable) lines.push(`  ${u.what}: ${u.message}`);
  }
  return lines.join('\n');
}

const order: Record<Severity, number> = { critical: 0, warn: 1, info: 2, ok: 3 };

/**
 * The connection audit as text: each finding with its severity, then for all but `ok` what it
 * means and what to do.
 */
export function renderConnections(audit: ConnectionAudit, counts: { closeWait: number; timeWait: number }): string {
  const lines = [`connections: ${counts.closeWait} CLOSE_WAIT, ${counts.timeWait} TIME_WAIT sockets in this namespace (${audit.source})`, ''];
  const findings = [...audit.findings].sort((a, b) => order[a.severity] - order[b.severity]);
  for (const f of findings) {
    const what =
      f.check === 'CLOSE_WAIT'
        ? `CLOSE_WAIT: ${f.count} socket${f.count === 1 ? '' : 's'}`
        : f.destination === undefined
          ? 'TIME_WAIT: none to a destination of this side'
          : `TIME_WAIT to ${f.destination}: ${f.count} socket${f.count === 1 ? '' : 's'}${f.portShare === undefined ? '' : `, ${(f.portShare * 100).toFixed(1)}% of the local port range`}`;
    lines.push(`${paint(f.severity.toUpperCase().padEnd(8), severityColour[f.severity])} ${what}`);
    if (f.severity !== 'ok') {
      lines.push(`         ${f.meaning}`);
      if (f.fix) lines.push(`         fix: ${f.fix}`);
    }
  }
  const s = audit.summary;
  lines.push('', `connection summary: ${s.critical} critical, ${s.warn} warn, ${s.info} info, ${s.ok} ok`);
  if (audit.unreadable.length > 0) {
    lines.push('', paint('could not read (the rest was audited):', 'yellow'));
    for (const u of audit.unreadable) lines.push(`  ${u.what}: ${u.message}`);
  }
  return lines.join('\n');
}

/** The self-check as a table, with its verdict; without the native addon, one line saying so. */
export function renderSelfCheck(check: SelfCheck, version: string): string {
  if (check.noAddon !== undefined) {
    return [
      `socktune ${version} self-check: Node ${check.node}, ${check.platform}, kernel ${check.kernel}`,
      '',
      paint(`Not run: ${check.noAddon}`, 'red'),
    ].join('\n');
  }
  const rows = check.rows.map((r) => [
    r.name,
    r.supported ? 'yes' : 'no',
    show(r.before),
    show(r.wrote),
    show(r.read),
    r.ok ? paint('ok', 'green') : r.supported ? paint('FAIL', 'red') : paint('n/a', 'yellow'),
    r.error ?? '',
  ]);
  return [
    `socktune ${version} self-check: Node ${check.node}, ${check.platform}, kernel ${check.kernel}`,
    '',
    table(['option / view', 'supported', 'before', 'wrote', 'read back', 'result', 'note'], rows),
    '',
    check.ok
      ? paint('Every option and view this platform has works on a live loopback connection.', 'green')
      : paint('Something this platform should support did not work: see the rows marked FAIL.', 'red'),
  ].join('\n');
}

/** Options of {@link doctor}. */
export interface DoctorOptions {
  json: boolean;
  /** Warnings (an unreadable setting among them) need attention too. */
  strict: boolean;
  write(text: string): Promise<void>;
}

/**
 * Runs the sysctl audit, the connection audit (CLOSE_WAIT and TIME_WAIT per destination, see
 * `connectionThresholds`) and the self-check, writes the report (JSON: the sysctlAudit() shape
 * plus `connections`, `selfCheck` and `ok`), and returns whether nothing needs attention: no
 * critical finding in either audit and every option that should work works (with `strict`, no
 * warning either).
 */
export async function doctor(opts: DoctorOptions): Promise<boolean> {
  const audit = sysctlAudit();
  const connections = connectionAudit();
  const check = await selfCheck();
  const critical = audit.summary.critical + connections.summary.critical;
  const warn = audit.summary.warn + connections.summary.warn;
  const attention = critical > 0 || (opts.strict && warn > 0);
  const ok = check.ok && !attention;
  if (opts.json) {
    await opts.write(`${JSON.stringify({ ...audit, connections, selfCheck: check, ok }, null, 2)}\n`);
    return ok;
  }
  const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  const closeWait = connections.findings.find((f) => f.check === 'CLOSE_WAIT')?.count ?? 0;
  const because = [
    critical > 0 ? 'the CRITICAL findings' : '',
    opts.strict && warn > 0 ? 'the WARN findings' : '',
    check.noAddon !== undefined ? "the self-check (socktune's native addon is not loaded)" : !check.ok ? 'the FAIL rows of the self-check' : '',
  ].filter(Boolean);
  const verdict = ok
    ? paint(warn > 0 ? 'Nothing critical; the warnings above are worth a look.' : 'Nothing needs attention.', 'green')
    : paint(`Something needs attention: see ${because.join(', ')} above.`, 'red');
  const sections = [renderAudit(audit), renderConnections(connections, { closeWait, timeWait: audit.timeWait }), renderSelfCheck(check, version), verdict];
  await opts.write(`${sections.join('\n\n')}\n`);
  return ok;
}
