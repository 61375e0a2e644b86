// strace as the external witness of what reached the kernel. A fixture script runs under
// `strace -f`, marks the section of interest with access("/socktune-mark-<name>") calls, and the
// helper returns the socket syscalls between the marks.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = promisify(execFile);
const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface Traced {
  /** Syscall lines between the `begin` and `end` marks. */
  calls: string[];
  /** What the fixture printed (JSON it reports). */
  stdout: string;
  /** setsockopt calls made before the `begin` mark (to aim fault injection inside the section). */
  setsBefore: number;
  /** The calls after each other mark (`mark('name')`) between `begin` and `end`, up to the next mark. */
  sections: Map<string, string[]>;
}

const traced = 'setsockopt,getsockopt,ioctl,access,faccessat,faccessat2';

/** Runs test/fixtures/<fixture> under strace and returns the socket syscalls between the marks. */
export async function strace(fixture: string, args: string[] = [], extra: string[] = []): Promise<Traced> {
  // strace writes to a file of its own, never to the stderr it shares with the traced Node: Node
  // makes that pipe non-blocking, and strace then drops what a slow reader has not taken yet
  // (on a loaded machine, whole stretches of the trace were lost).
  const dir = mkdtempSync(join(tmpdir(), 'socktune-strace-'));
  const out = join(dir, 'trace');
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout } = await run(
      'strace',
      ['-f', '-qq', '-o', out, '-e', `trace=${traced}`, '-e', 'signal=none', ...extra, process.execPath, fixtures + fixture, ...args],
      { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 },
    ));
    stderr = readFileSync(out, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const lines = stderr.split('\n');
  const begin = lines.findIndex((l) => l.includes('/socktune-mark-begin'));
  const end = lines.findIndex((l) => l.includes('/socktune-mark-end'));
  if (begin < 0 || end < begin) throw new Error(`fixture ${fixture} left no marks:\n${stderr.slice(-2000)}`);
  const isCall = (l: string) => /(setsockopt|getsockopt|ioctl)\(/.test(l);
  // With -o, strace -f starts each line with the thread's id (`1234  setsockopt(...)`).
  const clean = (l: string) => l.replace(/^(?:\[pid\s+\d+\]|\d+)\s*/, '');
  const calls = lines
    .slice(begin + 1, end)
    .filter(isCall)
    .map(clean);
  const setsBefore = lines.slice(0, begin).filter((l) => /setsockopt\(/.test(l)).length;
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const l of lines.slice(begin + 1, end)) {
    const named = /\/socktune-mark-([^"]+)"/.exec(l);
    if (named) sections.set(named[1], (current = []));
    else if (current && isCall(l)) current.push(clean(l));
  }
  return { calls, stdout, setsBefore, sections };
}
