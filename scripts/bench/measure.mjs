// How every benchmark of `npm run bench` is timed: batches calibrated to a minimum length, run
// interleaved batch by batch, summarised by their median. Shared by scripts/bench.mjs and the
// diagnostics section (scripts/bench/diag.mjs), so both sections mean the same thing by "median".

export const BATCHES = 15;
// Calibration aims above the 20 ms floor per batch because code gets faster once the JIT settles.
export const MIN_BATCH_MS = 20;
export const TARGET_BATCH_MS = 30;

/**
 * Finds an iteration count whose batch takes at least TARGET_BATCH_MS, confirmed by a run at that
 * count (a cold first run is slow and would otherwise shrink the count). `start` is the first count
 * tried: 16 for nanosecond operations, 1 for operations that take milliseconds each.
 */
export function calibrate(run, start = 16) {
  let n = start;
  for (;;) {
    const batchNs = run(n) * n;
    if (batchNs >= TARGET_BATCH_MS * 1e6) return n;
    n = Math.max(n * 2, Math.ceil((n * TARGET_BATCH_MS * 1.1e6) / batchNs));
  }
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs every benchmark in `runs` (`run(n)` returns ns per op) for BATCHES batches, interleaved batch
 * by batch so that all of them see the same machine state (frequency, other load), and reports the
 * median ns per op of each.
 */
export function measure(runs, { start = 16 } = {}) {
  const entries = Object.entries(runs).map(([name, run]) => ({ name, run, n: calibrate(run, start), samples: [] }));
  for (let b = 0; b < BATCHES; b++) for (const e of entries) e.samples.push(e.run(e.n));
  return Object.fromEntries(
    entries.map(({ name, n, samples }) => {
      const ns = median(samples);
      return [name, { ns, min: Math.min(...samples), max: Math.max(...samples), iterations: n, batchMs: (ns * n) / 1e6 }];
    }),
  );
}

/** Times `n` calls of `body(i)` and returns ns per call. */
export function timed(n, body) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) body(i);
  return Number(process.hrtime.bigint() - t0) / n;
}
