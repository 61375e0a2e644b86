// Who closed each connection, for every TCP connection of a process under socktune/register (not
// only those socktune closed): a matrix of closes in both directions, each attributed (who closed
// first, why) and checked against tcpdump's first FIN or RST of that connection. The slow lane runs
// the same matrix 1,000 times per case (test/slow/63).
import { describe, expect, it } from 'vitest';
import { canUse } from './helpers/env.js';
import { matrix, resetMatrix, runMatrix } from './helpers/ends.js';

describe.runIf(canUse('ip', 'tcpdump'))('connection ends against tcpdump', () => {
  it('25 closes of each case, both directions: every one attributed as tcpdump saw it, with lifetime and bytes', async () => {
    const { results, rows } = await runMatrix('ends', 48, 25, 5);
    const summary = results.map((r) => ({ case: `${r.case.direction} ${r.case.mode}`, closes: r.closes, right: r.right, wrong: r.wrong.slice(0, 3) }));
    expect(summary).toEqual(matrix.map((c) => ({ case: `${c.direction} ${c.mode}`, closes: 25, right: 25, wrong: [] })));
    for (const r of rows) {
      expect(r.lifetime).toBeGreaterThanOrEqual(0);
      expect(r.lifetime).toBeLessThan(30_000);
    }
    // The peer's answer ('k') was read before a local destroy or reset: bytes are counted.
    expect(rows.filter((r) => r.direction === 'opened' && r.initiator === 'local-destroy').every((r) => r.bytesRead === 1 && r.bytesWritten === 1)).toBe(true);
  }, 120_000);

  it('under a policy that resets, the end() and destroy() socktune turned into RST are local-rst (socktune said so), the peer-first ones stay FIN', async () => {
    const { results, rows } = await runMatrix('endr', 50, 25, 5, { SOCKTUNE_POLICY: 'gracefulHeartbeat+rstOnClose' }, resetMatrix);
    // end() and destroy() both end in socktune's RST here: one attribution for 50 connections.
    expect(rows).toHaveLength(75);
    expect(results.flatMap((r) => r.wrong.slice(0, 3))).toEqual([]);
    expect(results.map((r) => [r.case.initiator, r.case.cause, r.closes, r.right])).toEqual([
      ['peer-fin', 'peer', 25, 25],
      ['local-rst', 'application', 50, 50],
      ['local-rst', 'application', 0, 0],
    ]);
  }, 120_000);

  it('under SOCKTUNE_TRACE each end carries where the connection was made', async () => {
    const { rows } = await runMatrix('endt', 49, 2, 1, { SOCKTUNE_TRACE: '1' });
    const opened = rows.filter((r) => r.direction === 'opened');
    expect(opened.length).toBe(12);
    for (const r of opened) expect(r.origin).toMatch(/ends-app\.mjs/);
  }, 120_000);
});
