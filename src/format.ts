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
    cells
      .map((c, i) => c + ' '.repeat(widths[i] - width(c)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** What a count covers, in words: `this network namespace`, `network namespace NAME`, `process PID (node) in ...`. */
export function scopeText(s: { scope: string; pid?: number; netns?: string }, command?: string): string {
  const ns = s.netns === undefined ? 'this network namespace' : `network namespace ${s.netns}`;
  if (s.scope === 'process') return `process ${s.pid}${command ? ` (${command})` : ''} in ${ns}`;
  return ns;
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
