/**
 * Terminal output for the CLI: aligned tables, and colour only on a TTY without NO_COLOR.
 * @module
 */

const colours = { red: 31, green: 32, yellow: 33, dim: 2 } as const;

/** Whether to colour stdout: a TTY, and NO_COLOR (https://no-color.org) unset or empty. */
export function useColour(stream: NodeJS.WriteStream = process.stdout): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
}

/** Wraps `text` in an ANSI colour when colour is on. */
export function paint(text: string, colour: keyof typeof colours): string {
  return useColour() ? `\u001b[${colours[colour]}m${text}\u001b[0m` : text;
}

// eslint-disable-next-line no-control-regex
const ansi = /\u001b\[[0-9;]*m/g;
const width = (s: string) => s.replace(ansi, '').length;

/** A left-aligned text table with a header rule. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells.map((c, i) => c + ' '.repeat(widths[i] - width(c))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** What a count covers, in words: `this network namespace`, `network namespace NAME`, `process PID (node) in ...`. */
export function scopeText(s: { scope: string; pid?: number; netns?: string }, command?: string): string {
  const ns = s.netns === undefined ? 'this network namespace' : `network namespace ${s.netns}`;
  if (s.scope === 'process') return `process ${s.pid}${command ? ` (${command})` : ''} in ${ns}`;
  return ns;
}

/** Letters and digits only, lower case: `graceful-heartbeat`, `gracefulHeartbeat` and `GRACEFUL_HEARTBEAT` are one word. */
const squash = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/**
 * The candidate a mistyped `word` most likely meant, for a "did you mean" hint, or undefined.
 * Case, dashes and underscores do not count (`graceful-heartbeat` is `gracefulHeartbeat`); then a
 * word that starts exactly one candidate (`graceful`), then the fewest edits, at most a third of
 * the word's length (2 for short words). `aliases` maps other spellings to a candidate (a preset's
 * policy name to the preset).
 */
export function closest(word: string, candidates: readonly string[], aliases: Readonly<Record<string, string>> = {}): string | undefined {
  const w = squash(word);
  if (w === '') return undefined;
  const spellings: Array<[string, string]> = [
    ...candidates.map((c) => [squash(c), c] as [string, string]),
    ...Object.entries(aliases).map(([alias, c]) => [squash(alias), c] as [string, string]),
  ];
  const exact = spellings.find(([s]) => s === w);
  if (exact) return exact[1];
  const starts = [...new Set(spellings.filter(([s]) => w.length >= 3 && s.startsWith(w)).map(([, c]) => c))];
  if (starts.length === 1) return starts[0];
  let best: [string, number] | undefined;
  for (const [s, c] of spellings) {
    const d = editDistance(w, s);
    if (best === undefined || d < best[1]) best = [c, d];
  }
  return best && best[1] <= Math.max(2, Math.floor(w.length / 3)) ? best[0] : undefined;
}

/** A process holding sockets of a group, as the reports name them. */
interface Holder {
  pid: number;
  command: string;
  sockets: number;
}

/**
 * Who holds a group of sockets, in words: `8598 node: 6, 8601 node: 2`, then how many could not be
 * looked up (another user's processes, whose fds only root may read), or `no process` when none
 * holds them.
 */
export function heldBy(group: { owners?: Holder[]; unreadable?: number }): string {
  const owners = group.owners ?? [];
  const known = owners.map((o) => `${o.pid} ${o.command}: ${o.sockets}`).join(', ');
  const n = group.unreadable ?? 0;
  if (n > 0) {
    const cannot = `unreadable (run as root to see owners)`;
    return known ? `${known}; ${n} more ${cannot}` : `${n} ${cannot}`;
  }
  return known || 'no process (its owner ended, or it was passed on)';
}
