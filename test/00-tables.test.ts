// The tables socktune shares with its native core are defined once, in native/tables.h (X-macro
// lists the core's enums, name arrays and exported constants are generated from). This file checks
// the TypeScript side against what the loaded addon exports, entry by entry and in order: option
// names by id, TCP states by kernel number, TCP_INFO fields, the scratch layout, and the no-addon
// stub's tables; and, at compile time, that the TcpInfo type has exactly the table's fields.
import { describe, expect, it } from 'vitest';
import { constants, stub } from '../src/binding.js';
import { layoutNames, optionNames, tcpInfoFieldNames, tcpStateNames } from '../src/tables.js';
import type { TcpInfo } from '../src/index.js';

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// Fails to compile (npm test type-checks the tests) when TcpInfo and the table differ.
const tcpInfoHasTheTablesFields: Same<keyof TcpInfo, (typeof tcpInfoFieldNames)[number]> = true;

describe('one source per table: native/tables.h', () => {
  it('options: the addon exports the names of src/tables.ts, by id', () => {
    expect(constants.options.map((o) => o.name)).toEqual([...optionNames]);
    expect(constants.options.map((o) => o.id)).toEqual(optionNames.map((_, i) => i));
  });

  it('TCP states: the same names by kernel number (ESTABLISHED = 1, CLOSE_WAIT = 8, NEW_SYN_RECV = 12)', () => {
    expect(constants.tcpStates).toEqual([...tcpStateNames]);
    expect([constants.tcpStates[1], constants.tcpStates[8], constants.tcpStates[12]]).toEqual(['ESTABLISHED', 'CLOSE_WAIT', 'NEW_SYN_RECV']);
  });

  it('TCP_INFO fields: the same names in the same order, and the TcpInfo type has exactly them', () => {
    expect(constants.infoFields).toEqual([...tcpInfoFieldNames]);
    expect(tcpInfoHasTheTablesFields).toBe(true);
  });

  it('the scratch layout: every slot name and offset the addon exports is one src/tables.ts names, and no more', () => {
    expect(Object.keys(constants.layout).sort()).toEqual([...layoutNames].sort());
    for (const [name, value] of Object.entries(constants.layout)) expect(Number.isInteger(value), name).toBe(true);
    // Slots never overlap: the option ids, values and read-back each take one slot per option, with
    // room for more (optionSlots), so an option added later moves no other slot.
    const n = constants.layout.optionSlots;
    expect(n).toBeGreaterThanOrEqual(optionNames.length);
    expect(constants.layout.values).toBe(constants.layout.ids + n);
    expect(constants.layout.keepShorter).toBeGreaterThanOrEqual(constants.layout.values + n);
    expect(constants.layout.queues).toBeGreaterThanOrEqual(constants.layout.read + n);
  });

  it('the stub of a process without the addon names the same options, states and layout keys', () => {
    const s = stub(new Error('no addon')).constants;
    expect(s.options.map((o) => o.name)).toEqual([...optionNames]);
    expect(s.tcpStates).toEqual([...tcpStateNames]);
    expect(Object.keys(s.layout).sort()).toEqual([...layoutNames].sort());
    expect(s.status).toEqual(constants.status);
    expect(s.syscalls).toEqual(constants.syscalls);
  });
});
