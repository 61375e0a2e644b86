// Node below the engines range: every entry point (import and require, socktune and
// socktune/register) stops with one error naming the supported range, which the importer can
// catch; on a supported Node, require('socktune') is the ES module itself (one instance).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeBinary } from './helpers/runtimes.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const engines = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
let project: string;

beforeAll(() => {
  project = mkdtempSync(join(tmpdir(), 'socktune-engines-'));
  mkdirSync(join(project, 'node_modules'));
  symlinkSync(root, join(project, 'node_modules', 'socktune'));
});
afterAll(() => rmSync(project, { recursive: true, force: true }));

function run(node: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      node,
      args,
      { cwd: project, timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '', SOCKTUNE_POLICY: 'gracefulHeartbeat' } },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

const probes = (spec: string) => ({
  import: [
    '--input-type=module',
    '-e',
    `import(${JSON.stringify(spec)}).then(() => console.log(JSON.stringify({ loaded: true })), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`,
  ],
  require: [
    '-e',
    `try { require(${JSON.stringify(spec)}); console.log(JSON.stringify({ loaded: true })) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`,
  ],
});

it("the range in the check is package.json's engines.node", () => {
  const { supportedNode } = createRequire(import.meta.url)('../dist/engines.cjs') as { supportedNode: string };
  expect(supportedNode).toBe(engines);
});

describe.each(['18.20.8', '20.18.3'])('Node %s (below the range)', (version) => {
  for (const spec of ['socktune', 'socktune/register']) {
    for (const how of ['import', 'require'] as const) {
      it(`${how}('${spec}'): ERR_SOCKTUNE_UNSUPPORTED_NODE naming ${engines} and this version, caught by the caller`, async () => {
        const node = nodeBinary(version);
        if (node === undefined) return;
        const r = await run(node, probes(spec)[how]);
        expect(r.code, r.stderr).toBe(0);
        const got = JSON.parse(r.stdout) as { code: string; message: string };
        expect(got.code).toBe('ERR_SOCKTUNE_UNSUPPORTED_NODE');
        expect(got.message).toContain(`socktune supports Node.js ${engines}`);
        expect(got.message).toMatch(new RegExp(`this process runs Node\\.js v${version.replace(/\./g, '\\.')}`));
      }, 600_000);
    }
  }
});

describe(`this Node (${process.version}, in the range)`, () => {
  it("require('socktune') is the ES module: the same functions import gives", async () => {
    const r = await run(process.execPath, [
      '--input-type=module',
      '-e',
      `
      import { createRequire } from 'node:module';
      const required = createRequire(process.cwd() + '/x.js')('socktune');
      const imported = await import('socktune');
      console.log(JSON.stringify({ same: required.configure === imported.configure && required.presets === imported.presets, keys: Object.keys(required).length === Object.keys(imported).length }));`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ same: true, keys: true });
  });

  it('import and require load without a word', async () => {
    for (const how of ['import', 'require'] as const) {
      const r = await run(process.execPath, probes('socktune')[how]);
      expect(JSON.parse(r.stdout), how).toEqual({ loaded: true });
      expect(r.stderr).toBe('');
    }
  });
});
