// The one table format of every benchmark script: [benchmark, result, ratio, goal, met] rows, the
// result column right-aligned, and the small flag parser the standalone scripts share.

/** Prints `rows` under the standard header (`head` replaces it), then a blank line and `notes`. */
export function printRows(rows, notes = [], head = ['benchmark', 'result', 'ratio', 'goal', 'met']) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) =>
    cells
      .map((c, i) => (i === 1 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));
  if (notes.length > 0) console.log('');
  for (const n of notes) console.log(n);
}

/** `--name N` from the command line as a positive integer, or `fallback`. */
export function intFlag(name, fallback, argv = process.argv) {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`--${name} must be a positive integer, got '${argv[i + 1]}'`);
  return v;
}
