// The socktune/register configuration section of the benchmarks: how long loading a rules file
// (SOCKTUNE_CONFIG) takes before the application starts, at 1,000, 10,000 and 50,000 rules.
//
// Each file holds rules of distinct ports and hosts (none matches everything, so every rule is
// checked against the catch-alls before it) alternating two policies, then a default policy. What
// is timed is loadConfig() from dist/ (read, parse, validate, shadowed-rule check), in this process,
// a few rounds per size; each size is summarised by its median. The ratio between 50,000 and 10,000
// rules shows how the load grows: 5× is linear, 25× quadratic. Goal: 50,000 rules in under 1 s.
//
// Usage: node scripts/bench/config.mjs [--json] [--rounds 5]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './measure.mjs';
import { intFlag, printRows } from './table.mjs';

const self = fileURLToPath(import.meta.url);
export const GOALS = { ms50k: 1000 };
const SIZES = [1000, 10_000, 50_000];
const DEFAULTS = { rounds: 5 };

function rulesFile(dir, n) {
  const rules = Array.from({ length: n }, (_, i) => ({
    name: `r${i}`,
    port: (i % 65_535) + 1,
    host: `h${i}.internal`,
    policy: i % 2 ? 'rstOnClose' : 'gracefulHeartbeat',
  }));
  const path = join(dir, `rules-${n}.json`);
  writeFileSync(path, JSON.stringify({ rules, policy: 'gracefulHeartbeat' }));
  return path;
}

/**
 * Runs the section. Returns `{ rows, json }`: rows for scripts/bench.mjs's table
 * ([benchmark, result, ratio, goal, met]) and every measured number as JSON.
 */
export async function configBench(options = {}) {
  const o = { ...DEFAULTS, quiet: false, ...options };
  const log = (m) => o.quiet || process.stderr.write(`${m}\n`);
  const { loadConfig } = await import('../../dist/register/config.js');
  const dir = mkdtempSync(join(tmpdir(), 'socktune-bench-config-'));
  try {
    const files = Object.fromEntries(SIZES.map((n) => [n, rulesFile(dir, n)]));
    const runs = Object.fromEntries(SIZES.map((n) => [n, []]));
    for (let round = 0; round < o.rounds; round++) {
      for (const n of SIZES) {
        const t0 = process.hrtime.bigint();
        const config = loadConfig({ SOCKTUNE_CONFIG: files[n] });
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (config.rules.length !== n + 1) throw new Error(`loaded ${config.rules.length} rules of ${n + 1}`);
        runs[n].push(ms);
        log(`config: round ${round + 1}, ${n} rules: ${ms.toFixed(1)} ms`);
      }
    }
    const ms = Object.fromEntries(SIZES.map((n) => [n, median(runs[n])]));
    const json = {
      available: true,
      method: {
        load: 'loadConfig({ SOCKTUNE_CONFIG }) from dist/: read, JSON.parse, validation, shadowed-rule check; rules of distinct ports and hosts, two policies alternating, a default policy',
        statistic: `wall time in this process, ${o.rounds} rounds per size, medians`,
      },
      ms,
      growth50kVs10k: ms[50_000] / ms[10_000],
      runs,
      goals: GOALS,
    };
    json.met = ms[50_000] < GOALS.ms50k;
    return { rows: configRows(json), json };
  } catch (err) {
    const json = { available: false, error: String(err?.message ?? err).split('\n')[0], goals: GOALS };
    return { rows: configRows(json), json };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rows for a bench table: [benchmark, result, ratio, goal, met]. */
export function configRows(d) {
  if (!d.available) return [['register: load a 50,000-rule SOCKTUNE_CONFIG', `not run: ${d.error}`, '', `< ${d.goals.ms50k} ms`, 'n/a']];
  const ms = (x) => `${x.toFixed(1)} ms`;
  return [
    ['register: load a 1,000-rule SOCKTUNE_CONFIG', ms(d.ms[1000]), '', '', ''],
    ['register: load a 10,000-rule SOCKTUNE_CONFIG', ms(d.ms[10_000]), '', '', ''],
    [
      'register: load a 50,000-rule SOCKTUNE_CONFIG',
      ms(d.ms[50_000]),
      `${d.growth50kVs10k.toFixed(1)}× 10,000 (linear 5×)`,
      `< ${d.goals.ms50k} ms`,
      d.met ? 'yes' : 'no',
    ],
  ];
}

if (process.argv[1] === self) {
  const argv = process.argv.slice(2);
  const { rows, json } = await configBench({ rounds: intFlag('rounds', DEFAULTS.rounds, argv), quiet: argv.includes('--json') });
  if (argv.includes('--json')) console.log(JSON.stringify(json, null, 2));
  else {
    printRows(rows);
    console.log(`\n${JSON.stringify(json.method ?? { error: json.error })}`);
  }
  process.exitCode = json.available ? 0 : 1;
}
