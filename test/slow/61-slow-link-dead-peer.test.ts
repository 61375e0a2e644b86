// A connection that keeps writing to a peer that vanished is declared dead within its budget, over
// a slow link too. Over a 200 ms round trip (test/helpers/delaylink.ts: this kernel has no netem)
// the kernel's own user timeout runs late behind the retransmission backoff; the guard enforces the
// budget from TCP_INFO (no acknowledgement for the user timeout, retransmissions unanswered).
// Each trial runs both arms side by side against one sink, and one drop of the link serves both.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { canUse } from '../helpers/env.js';
import { DelayLink } from '../helpers/delaylink.js';
import { startApp, type App } from '../helpers/register.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
/** The policy's user timeout: keepalive 2 s + 3 × 1 s. */
const budget = 5000;
/** What the budget may be exceeded by: the guard's scan (a quarter of the user timeout) and a loaded machine. */
const slack = 2000;
const TRIALS = 6;

describe.runIf(canUse('ip', 'python3'))('a writer whose peer vanished, over a 200 ms round trip', () => {
  let link: DelayLink;
  let port: number;
  beforeAll(async () => {
    link = await DelayLink.create({ tag: 'sld', delayMs: 100, subnet: 61 });
    port = JSON.parse((await link.server.ns.start(fixture('sink-server.mjs'), [link.server.addr])).ready).port;
  });
  afterAll(() => link?.destroy());

  it(
    `under the policy the writer fails with ETIMEDOUT within ${budget} ms + ${slack} ms of the vanish, ${TRIALS} of ${TRIALS} times (the kernel options alone, measured beside it)`,
    { timeout: 600_000 },
    async () => {
      const late: Record<string, number[]> = { kernel: [], policy: [] };
      for (let trial = 0; trial < TRIALS; trial++) {
        const apps: Record<string, App> = {};
        for (const mode of ['kernel', 'policy'])
          apps[mode] = await startApp(fixture('stream-writer.mjs'), { ns: link.client.name, args: [link.server.addr, String(port), mode] });
        try {
          // Writing for a while first: the retransmission timer then runs on the link's round trip.
          await new Promise((r) => setTimeout(r, 1500));
          const t0 = Date.now();
          await link.drop();
          const seen = await Promise.all(Object.values(apps).map((a) => a.until((l) => l.event === 'error', budget + 60_000)));
          Object.keys(apps).forEach((mode, i) => {
            console.log(`trial ${trial} ${mode}: ${JSON.stringify(seen[i])} after ${seen[i] ? (seen[i]!.at as number) - t0 : '-'} ms`);
            expect(seen[i]?.code, mode).toBe('ETIMEDOUT');
            late[mode].push((seen[i]!.at as number) - t0);
          });
        } finally {
          await link.pass();
          for (const a of Object.values(apps)) await a.stop();
        }
      }
      console.log('writer to a vanished peer, ms from the vanish to ETIMEDOUT:', JSON.stringify(late));
      for (const t of late.policy) expect(t).toBeLessThanOrEqual(budget + slack);
    },
  );
});
