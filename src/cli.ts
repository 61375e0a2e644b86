#!/usr/bin/env node
/**
 * The `socktune` command. A surface only: every decision lives in the library.
 * @module
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { selfCheck, type SelfCheck } from './diagnose/selfcheck.js';
import { table, paint } from './format.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function show(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
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
  .description('check which socket options and views work on this machine (exit 1 if something that should work does not)')
  .option('--json', 'print JSON instead of a table')
  .action(async (opts: { json?: boolean }) => {
    const check = await selfCheck();
    process.stdout.write(opts.json ? `${JSON.stringify({ selfCheck: check, ok: check.ok }, null, 2)}\n` : `${renderDoctor(check)}\n`);
    process.exitCode = check.ok ? 0 : 1;
  });

await program.parseAsync(process.argv);
