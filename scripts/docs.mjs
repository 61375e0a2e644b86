// The API reference, generated from the TSDoc of the public entry points (`socktune`,
// `socktune/register`) by TypeDoc as Markdown into docs/api/.
//
//   npm run docs          regenerate docs/api/
//   npm run docs:check    regenerate into a temp dir and fail if docs/api/ differs (stale reference)
//
// TypeDoc drives the TypeScript 5/6 compiler API; TypeScript 7 (the project's compiler) has no
// JavaScript API, so TypeDoc, its Markdown plugin and TypeScript 5.9 live in a package of their
// own, scripts/docs/ (with its lockfile), installed on first use with `npm ci`. docs/api/ is
// committed so the README's links work where the README is read (GitHub, the repository) without
// a build; pages carry no source line numbers or commit, so they change only when the API does.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const tools = join(root, 'scripts', 'docs');
const out = join(root, 'docs', 'api');
const check = process.argv.includes('--check');

if (!existsSync(join(tools, 'node_modules', 'typedoc'))) {
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: tools, stdio: 'inherit' });
}

function generate(dir) {
  // TypeDoc exits non-zero on errors (a broken {@link}, an export it cannot resolve).
  execFileSync(
    process.execPath,
    [join(tools, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--options', join(tools, 'typedoc.json'), '--out', dir, '--logLevel', 'Warn'],
    { cwd: tools, stdio: 'inherit' },
  );
}

function files(dir) {
  const found = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else found.push(relative(dir, path));
    }
  };
  if (existsSync(dir)) walk(dir);
  return found.sort();
}

if (!check) {
  rmSync(out, { recursive: true, force: true });
  generate(out);
  console.log(`docs: ${files(out).length} pages in ${relative(root, out)}/`);
} else {
  const fresh = mkdtempSync(join(tmpdir(), 'socktune-docs-'));
  try {
    generate(fresh);
    const a = files(out);
    const b = files(fresh);
    const differ = [
      ...b.filter((f) => !a.includes(f)).map((f) => `missing: docs/api/${f}`),
      ...a.filter((f) => !b.includes(f)).map((f) => `no longer generated: docs/api/${f}`),
      ...a.filter((f) => b.includes(f) && readFileSync(join(out, f), 'utf8') !== readFileSync(join(fresh, f), 'utf8')).map((f) => `differs: docs/api/${f}`),
    ];
    if (differ.length > 0) {
      console.error(`docs/api/ is not what the source generates (run npm run docs):\n  ${differ.join('\n  ')}`);
      process.exitCode = 1;
    } else {
      console.log(`docs: docs/api/ matches the source (${a.length} pages)`);
    }
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
}
