// The code blocks of the README and the guides, and a place to run them as a user would: an ES module in a consumer
// project whose node_modules/socktune is this package (register.ts's consumerProject) and whose
// node_modules also holds the peers the examples import (ws, undici, prom-client, ioredis, pg),
// linked from this repository's node_modules.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { cleanEnv, consumerProject, repoRoot } from './register.js';

export interface Block {
  /** The fence's language (`js`, `sh`, `json`, ... or '' for a bare fence). */
  lang: string;
  /** The fence's `test=NAME` attribute: the key of the README test's table. */
  name: string | undefined;
  /** The code, with the fence's own indentation removed. */
  code: string;
  /** 1-based line of the opening fence in its file. */
  line: number;
  /** The Markdown file, relative to the repository (`README.md`, `docs/guides/pools.md`). */
  file: string;
}

/** Every fenced code block of a Markdown text (of `file`), in order. */
export function codeBlocks(markdown: string, file = 'README.md'): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)(.*)$/.exec(lines[i]);
    if (!open) continue;
    const [, indent, lang, info] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]); j++) body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j]);
    if (j === lines.length) throw new Error(`${file}:${i + 1}: a code fence that is never closed`);
    blocks.push({ lang, name: /\btest=([\w-]+)/.exec(info)?.[1], code: body.join('\n'), line: i + 1, file });
    i = j;
  }
  return blocks;
}

export const readme = (): string => readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The manual: README.md, CONTRIBUTING.md and every Markdown file of docs/ outside the generated API reference. */
export function manual(): Array<{ file: string; text: string }> {
  const files = ['README.md', 'CONTRIBUTING.md'];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && path !== join('docs', 'api')) walk(path);
      else if (entry.isFile() && entry.name.endsWith('.md')) files.push(relative('.', path));
    }
  };
  walk('docs');
  return files.map((file) => ({ file, text: readFileSync(join(repoRoot, file), 'utf8') }));
}

/** The packages the manual's examples import besides socktune, and the type declarations the type check needs. */
const peers = [
  'ws',
  'undici',
  'prom-client',
  'ioredis',
  'pg',
  '@opentelemetry/api',
  '@opentelemetry/sdk-metrics',
  '@opentelemetry/exporter-prometheus',
  '@types/node',
  '@types/ws',
  '@types/pg',
];

/** The consumer project, with the examples' peer packages linked into its node_modules. */
export function readmeProject(): string {
  const dir = consumerProject();
  for (const name of peers) {
    const link = join(dir, 'node_modules', name);
    mkdirSync(dirname(link), { recursive: true });
    if (!existsSync(link)) symlinkSync(join(repoRoot, 'node_modules', name), link, 'dir');
  }
  return dir;
}

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Writes `source` as `<file>.mjs` in the consumer project and runs it with `command` before node
 * (e.g. `ip netns exec NS`, strace) until it exits; killed after `timeout` ms.
 */
export function runModule(file: string, source: string, opts: { before?: string[]; env?: Record<string, string>; timeout?: number }): Promise<Run> {
  const dir = readmeProject();
  const path = join(dir, `${file}.mjs`);
  writeFileSync(path, source);
  const [command, ...args] = [...(opts.before ?? []), process.execPath, path];
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: dir, env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout ?? 20_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
