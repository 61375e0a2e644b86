// Who closed each connection, 1,000 closes of every case of the matrix (test/helpers/ends.ts), in
// both directions: each attributed as tcpdump saw its first FIN or RST, 100% of them.
import { describe, expect, it } from 'vitest';
import { canUse } from '../helpers/env.js';
import { matrix, runMatrix } from '../helpers/ends.js';

describe.runIf(canUse('ip', 'tcpdump'))('connection ends against tcpdump, 1,000 of each case', () => {
  it('every close attributed as tcpdump saw it', async () => {
    const { results } = await runMatrix('endsk', 63, 1000, 20);
    const summary = results.map((r) => ({ case: `${r.case.direction} ${r.case.mode}`, closes: r.closes, right: r.right, wrong: r.wrong.slice(0, 3) }));
    console.log(JSON.stringify({ connectionEnds: summary.map(({ case: c, closes, right }) => ({ case: c, closes, right })) }));
    expect(summary).toEqual(matrix.map((c) => ({ case: `${c.direction} ${c.mode}`, closes: 1000, right: 1000, wrong: [] })));
  }, 300_000);
});
