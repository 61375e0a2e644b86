// IP_LOCAL_PORT_RANGE at scale (issue 21's measure): two processes share one source address and a
// 1,000-port range, each with its own 500-port slice, and open 500,000 short connections each to
// 10 destinations (this side closes first, so every one leaves a TIME_WAIT here): 1,000,000 in all
// with no EADDRNOTAVAIL and no port outside its slice. test/56-ports runs the same with 10,000 each.
import { afterEach, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { canUse } from '../helpers/env.js';
import { NsPair } from '../helpers/stage.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const EACH = 500_000;

let pair: NsPair | undefined;
afterEach(async () => {
  await pair?.destroy();
  pair = undefined;
});

describe.runIf(canUse('ip', 'sysctl'))('IP_LOCAL_PORT_RANGE: 1,000,000 short connections from two processes in their own slices', () => {
  it(`two processes, 500-port slices of a 1,000-port range, ${EACH.toLocaleString('en')} connections each to 10 destinations: 0 EADDRNOTAVAIL, no port outside its slice`, async () => {
    pair = new NsPair('pm', 57).create();
    pair.cli.sysctl('net.ipv4.ip_local_port_range', '40000 40999');
    // connect() reuses a port whose TIME_WAIT is over a second old (timestamps on).
    pair.cli.sysctl('net.ipv4.tcp_tw_reuse', '1');
    const { ready } = await pair.srv.start(fixture('port-servers.mjs'), [pair.srvAddr, '10', 'greet']);
    const ports = (JSON.parse(ready) as { ports: number[] }).ports;
    const results = await Promise.all(
      ['40000-40499', '40500-40999'].map(async (slice) => {
        const out = await pair!.cli.exec(
          process.execPath,
          [fixture('port-churn.mjs'), pair!.cliAddr, pair!.srvAddr, JSON.stringify(ports), String(EACH), slice, '32'],
          { timeout: 900_000 },
        );
        return JSON.parse(out) as { done: number; errors: Record<string, number>; outside: number; seconds: number };
      }),
    );
    console.log(
      `port slices: ${results.map((r) => `${r.done} connections in ${r.seconds.toFixed(0)} s, errors ${JSON.stringify(r.errors)}, outside ${r.outside}`).join('; ')}`,
    );
    for (const r of results) expect(r).toMatchObject({ done: EACH, errors: {}, outside: 0 });
  }, 960_000);
});
