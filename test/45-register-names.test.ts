// A rule's name is the user's: `__proto__`, `constructor` and `toString` name a guard like any
// other name, in `guards`, in the collector's `guard` label, and in what close() shuts down.
//
// Fails until src/register/process.ts stores guards as own properties: today
// `guards[rule.name] = guard` with the name `__proto__` sets the object's prototype instead, so that
// guard is missing from Object.keys(guards), from the collector and from close().
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { runToEnd } from './helpers/register.js';

const tmp = mkdtempSync(join(tmpdir(), 'socktune-names-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// prom-client as socktune resolves it (a dev dependency of this package, not of the consumer project).
const promClient = pathToFileURL(createRequire(import.meta.url).resolve('prom-client')).href;

const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];

describe('rule names that are Object.prototype keys', () => {
  it('each names its own guard: guards, createCollector, close()', async () => {
    const path = join(tmp, 'names.json');
    writeFileSync(path, JSON.stringify({ rules: names.map((name, i) => ({ name, port: 1000 + i, policy: 'gracefulHeartbeat' })), policy: 'rstOnClose' }));
    const app = `
      const { guards, close } = await import('socktune/register');
      const { Registry } = await import(${JSON.stringify(promClient)});
      const { createCollector } = await import('socktune');
      const registry = new Registry();
      await createCollector({ registry, namespace: false, process: false, audit: false, closes: false });
      const labels = new Set((await registry.getMetricsAsJSON()).flatMap((m) => m.values.map((v) => v.labels.guard)).filter(Boolean));
      await close({ timeout: 100 });
      console.log(JSON.stringify({
        keys: Object.keys(guards),
        prototype: Object.getPrototypeOf(guards) === Object.prototype,
        own: ${JSON.stringify(names)}.map((n) => Object.hasOwn(guards, n) && typeof guards[n].stats === 'function'),
        labels: [...labels],
      }));`;
    const r = await runToEnd(['--import', 'socktune/register', '--input-type=module', '-e', app], { SOCKTUNE_CONFIG: path });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.keys).toEqual([...names, 'default']);
    expect(out.prototype).toBe(true);
    expect(out.own).toEqual(names.map(() => true));
    expect(out.labels.sort()).toEqual([...names, 'default'].sort());
  });
});
