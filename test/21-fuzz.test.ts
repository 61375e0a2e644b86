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
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
        for (const call of calls!) expect(call, c.id).toMatch(new RegExp(`^setsockopt\\(${fd}, `));
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

// What the other layers do with the same input today (found by this fuzzer, reported to their
// owners). These cases are left out of the run below so that it guards everything else; the
// owners remove an entry when they fix it.
const proxies = ['throwing Proxy', 'revoked Proxy', 'Proxy of a live socket with throwing traps'];
const getters = ['throwing Proxy', 'revoked Proxy', 'throwing getters', 'frozen throwing getters', 'Proxy of a live socket with throwing traps'];
const known: Record<string, { owner: string; cases: string[]; thrown: string }> = {
  'connectionStates#0': { owner: 'diagnostics', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'ownKeys' on a proxy that has been revoked" },
  'listConnections#0': { owner: 'diagnostics', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'ownKeys' on a proxy that has been revoked" },
  'connectionReport#0': { owner: 'diagnostics', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'ownKeys' on a proxy that has been revoked" },
  'connectionReport#1': { owner: 'diagnostics', cases: ['Symbol()', 'Object.create(null)', ...proxies], thrown: "TypeError: Cannot convert a Symbol value to a number / Cannot convert object to primitive value; the Proxy's own Error; Cannot perform 'get' on a proxy that has been revoked" },
  'createCollector#0': { owner: 'diagnostics', cases: ['*'], thrown: "non-object options (true, Symbol(), a Map) resolve as if {}; null rejects TypeError: Cannot read properties of null (reading 'prefix'); a second call rejects with prom-client's uncoded 'A metric with the name socktune_tcp_connections has already been registered'; getters' and Proxies' own errors" },
  'sysctlAudit#0': { owner: 'diagnostics', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'middleboxIdleTimeouts#write': { owner: 'diagnostics', cases: [''], thrown: 'the table and its rows are writable (9 entries)' },
  'compose#0': { owner: 'lead (policies)', cases: getters, thrown: "the getter's or Proxy's own Error; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'presets.gracefulHeartbeat#0': { owner: 'lead (policies)', cases: getters, thrown: "the getter's or Proxy's own Error; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'presets.rstOnClose#0': { owner: 'lead (policies)', cases: getters, thrown: "the getter's or Proxy's own Error; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'keepAliveBudget#0': { owner: 'lead (policies)', cases: ['undefined', 'null', 're-entrant getters', ...getters], thrown: "TypeError: Cannot read properties of undefined/null (reading 'idle'); Cannot convert a Symbol value to a number; getters' and Proxies' own Errors; Cannot perform 'get' on a proxy that has been revoked" },
  'resetClose#0': { owner: 'lead (policies)', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked" },
  'resetClose#1': { owner: 'lead (policies)', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'tune#0': { owner: 'lead (policies)', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked" },
  'tune#1': { owner: 'lead (policies)', cases: getters, thrown: "getters' and Proxies' own Errors; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'tuneServer#0': { owner: 'lead (policies)', cases: proxies, thrown: "the Proxy's own Error; TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked" },
  'tuneServer#1': { owner: 'lead (policies)', cases: getters, thrown: "getters' and Proxies' own Errors; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" },
  'presets#write': { owner: 'lead (policies)', cases: [''], thrown: 'presets.gracefulHeartbeat and presets.rstOnClose can be replaced' },
  'closeCodes#write': { owner: 'lead (policies)', cases: [''], thrown: 'all 5 close codes can be rewritten' },
};
for (const name of ['createAgent', 'createHttpsAgent', 'PolicyAgent', 'PolicyHttpsAgent', 'createConnector', 'createDispatcher']) {
  known[`${name}#0`] = { owner: 'pools', cases: getters, thrown: "getters' and Proxies' own Errors; TypeError: Cannot perform 'IsArray' on a proxy that has been revoked" };
  known[`${name}#1`] = { owner: 'pools', cases: getters, thrown: "getters' and Proxies' own Errors; TypeError: Cannot perform 'ownKeys'/'get' on a proxy that has been revoked" };
}

const skipIds = Object.entries(known).flatMap(([at, { cases }]) => cases.map((c) => (at.endsWith('#write') ? at : `${at}:${c}`)));

describe('fuzz: the other layers, without the cases their owners have yet to fix', () => {
  it.each([[[]], [['--polluted']]])('coded errors only and nothing later %j', async (flags) => {
    const dir = mkdtempSync(join(tmpdir(), 'socktune-fuzz-'));
    try {
      const skip = join(dir, 'skip.json');
      writeFileSync(skip, JSON.stringify(skipIds));
      const { stdout } = await run(process.execPath, [fixture, 'others', ...flags, '--skip', skip], { maxBuffer: 64 << 20, timeout: 60_000 });
      const report = JSON.parse(stdout) as Report;
      expect(report.calls).toBeGreaterThan(1000);
      expect(report.skipped).toBeGreaterThan(0);
      expect(report.failures).toEqual([]);
      expect(report.later).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe.todo('fuzz: known failures of other layers (left out above; their owners add them back when fixed)', () => {
  for (const [at, { owner, cases, thrown }] of Object.entries(known)) {
    it.todo(`${owner}: ${at} with ${cases.join(', ') || 'a write'} → ${thrown}`);
  }
});
