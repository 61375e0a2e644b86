// Every public export of socktune, called with hostile arguments: getters that throw or call back
// into socktune, Proxies (throwing, revoked), Symbols, BigInts, NaN/Infinity/-0/2**53, frozen and
// sealed objects, spoofed sockets (fake, mimicking and closed `_handle`s), destroyed, Unix-domain
// and UDP sockets, with and without a polluted Object.prototype. Each run is a child process
// (test/fixtures/fuzz.mjs) that reports every outcome and then waits for timers to fire.
// The promise: every error thrown or rejected has a string `code`, nothing throws later (no
// uncaught exception, no unhandled rejection), exported tables cannot be rewritten, and, for the
// socket-options layer, strace shows that no refused call reached the kernel.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { canUse } from './helpers/env.js';
import { strace } from './helpers/strace.js';

const run = promisify(execFile);
const fixture = fileURLToPath(new URL('./fixtures/fuzz.mjs', import.meta.url));

interface Report {
  exports: string[];
  uncovered: string[];
  liveFd: number;
  calls: number;
  skipped: number;
  cases: Array<{ id: string; outcome: string; mark?: string }>;
  failures: Array<{ case: string; thrown: string }>;
  later: string[];
  afterwards?: { noDelay: boolean; count: number };
}

// Exports the fuzzer does not call, with the reason.
const notCalled: Record<string, string> = {
  closeChannel: "a Node diagnostics_channel Channel: socktune publishes on it, it takes no argument of socktune's",
};

describe.runIf(canUse('strace'))('fuzz: the socket-options layer (configure, the views, the tables)', () => {
  it.each([[[]], [['--polluted']]])('coded errors only, nothing later, and no refused call reaches the kernel %j', async (flags) => {
    const { sections, stdout } = await strace('fuzz.mjs', ['options', ...flags]);
    const report = JSON.parse(stdout) as Report;
    expect(report.calls).toBeGreaterThan(700);
    expect(report.failures).toEqual([]);
    expect(report.later).toEqual([]);
    // Every export is exercised by one of the two sections (or named in notCalled).
    expect(report.uncovered.filter((e) => !(e in notCalled))).toEqual([]);
    expect(report.cases.find((c) => c.id === 'limits#write')?.outcome).toBe('frozen');
    expect(report.cases.find((c) => c.id === 'codes#write')?.outcome).toBe('frozen');

    const fd = report.liveFd;
    const accepted: string[] = [];
    for (const c of report.cases.filter((k) => k.mark !== undefined)) {
      const calls = sections.get(c.mark!);
      expect(calls, c.id).toBeDefined();
      if (c.outcome === 'returned') {
        // Only valid input is accepted ({}, { keepAlive: true }, { linger: 0 }, ...): it sets what it
        // names on the live socket, and nothing inherited from a polluted prototype.
        accepted.push(c.id);
        // (IP_TOS asks the socket's family first: IPV6_TCLASS on an IPv6 socket.)
        for (const call of calls!)
          expect(call, c.id).toMatch(new RegExp(`^(setsockopt\\(${fd}, |getsockopt\\(${fd}, SOL_SOCKET, SO_DOMAIN,${c.id.includes('tos') ? '' : 'x^'})`));
        if (!c.id.includes('linger')) expect(calls!.join('\n'), c.id).not.toContain('SO_LINGER');
      } else {
        expect(calls, `${c.id} → ${c.outcome}`).toEqual([]);
      }
    }
    expect(sections.get('done')).toEqual([]);
    expect(accepted.filter((id) => !id.startsWith('configure#1:') && !id.startsWith('supportedOptions#'))).toEqual([]);
    // The live socket still takes valid options afterwards.
    expect(report.afterwards).toMatchObject({ noDelay: true, count: 4 });
  });
});

describe('fuzz: the other layers (diagnostics, policies, integrations, pools, the collector)', () => {
  it.each([[[]], [['--polluted']]])(
    'coded errors only and nothing later %j',
    async (flags) => {
      const { stdout } = await run(process.execPath, [fixture, 'others', ...flags], { maxBuffer: 64 << 20, timeout: 60_000 });
      const report = JSON.parse(stdout) as Report;
      expect(report.calls).toBeGreaterThan(1400);
      expect(report.skipped).toBe(0);
      expect(report.failures).toEqual([]);
      expect(report.later).toEqual([]);
      // The exported tables cannot be rewritten.
      for (const table of ['middleboxIdleTimeouts', 'closeCodes', 'presets']) {
        expect(report.cases.find((c) => c.id === `${table}#write`)?.outcome, table).toBe('frozen');
      }
    },
    90_000,
  );
});
