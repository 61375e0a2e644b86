// What a built addon is, read from its headers: format, CPU, the libraries it needs, the Node-API
// entry points it exports, and (Mach-O) its minimum macOS and code signature. Lets the prebuild
// script prove that a binary it cannot load here is at least the right kind of file.
//
//   node scripts/binary-info.mjs FILE...      prints one JSON object per file
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './lib.mjs';

const ENTRY = 'napi_register_module_v1';

/** @returns {{ format: string, cpu: string, needs: string[], exports: string[], minOs?: string, signed?: boolean }} */
export function binaryInfo(file) {
  const buf = readFileSync(file);
  if (buf.readUInt32BE(0) === 0x7f454c46) return elf(file, buf);
  if (buf.readUInt16LE(0) === 0x5a4d) return pe(file, buf);
  if (buf.readUInt32LE(0) === 0xfeedfacf) return macho(buf);
  throw new Error(`${file}: neither ELF, PE nor 64-bit Mach-O`);
}

function elf(file, buf) {
  const cpu = { 62: 'x64', 183: 'arm64' }[buf.readUInt16LE(0x12)] ?? `e_machine ${buf.readUInt16LE(0x12)}`;
  // Host binutils read the dynamic section of any ELF, whatever its CPU.
  const dyn = run('readelf', ['--dynamic', '--dyn-syms', '--wide', file]);
  if (dyn.status !== 0) throw new Error(`readelf ${file}: ${dyn.stderr.trim()}`);
  const needs = [...dyn.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const exports = dyn.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((c) => c.length >= 8 && c[4] === 'GLOBAL' && c[6] !== 'UND' && /^(napi_|node_api_)/.test(c[7]))
    .map((c) => c[7].replace(/@.*$/, ''));
  return { format: 'ELF', cpu, needs, exports };
}

function pe(file, buf) {
  const at = buf.readUInt32LE(0x3c);
  if (buf.readUInt32LE(at) !== 0x4550) throw new Error(`${file}: MZ header without a PE signature`);
  const machine = buf.readUInt16LE(at + 4);
  const dll = (buf.readUInt16LE(at + 22) & 0x2000) !== 0;
  const cpu = { 0x8664: 'x64', 0xaa64: 'arm64' }[machine] ?? `machine 0x${machine.toString(16)}`;
  const dump = run('x86_64-w64-mingw32-objdump', ['-p', file]);
  if (dump.status !== 0) throw new Error(`objdump -p ${file}: ${dump.stderr.trim()}`);
  const needs = [...dump.stdout.matchAll(/DLL Name: (\S+)/g)].map((m) => m[1]);
  const delayed = delayImports(buf, at);
  const exports = [...dump.stdout.matchAll(/^\s+\[\s*\d+\]\s+((?:napi|node_api)_\w+)/gm)].map((m) => m[1]);
  return { format: dll ? 'PE DLL' : 'PE', cpu, needs, delayed, exports };
}

/** The DLL names of a PE32+ file's delay-import table (data directory 13), which objdump does not list. */
function delayImports(buf, at) {
  const optional = at + 24;
  if (buf.readUInt16LE(optional) !== 0x20b) return [];
  const dir = optional + 112 + 13 * 8;
  const rva = buf.readUInt32LE(dir);
  const sections = buf.readUInt16LE(at + 6);
  const table = optional + buf.readUInt16LE(at + 20);
  const offset = (r) => {
    for (let i = 0; i < sections; i++) {
      const sh = table + i * 40;
      const va = buf.readUInt32LE(sh + 12);
      const size = Math.max(buf.readUInt32LE(sh + 8), buf.readUInt32LE(sh + 16));
      if (r >= va && r < va + size) return r - va + buf.readUInt32LE(sh + 20);
    }
    return -1;
  };
  const names = [];
  if (rva === 0) {
    // GNU ld leaves the directory empty for dlltool's delay-import stubs: their descriptors
    // (attributes 1: RVAs, then the RVA of the DLL's name) are found by scanning.
    for (let d = 0; d + 32 <= buf.length; d += 4) {
      if (buf.readUInt32LE(d) !== 1) continue;
      const o = offset(buf.readUInt32LE(d + 4));
      if (o < 0) continue;
      const end = buf.indexOf(0, o);
      const name = end > o && end - o < 64 ? buf.subarray(o, end).toString('latin1') : '';
      if (/^[\w.-]+\.(exe|dll)$/i.test(name) && !names.includes(name)) names.push(name);
    }
    return names;
  }
  for (let d = offset(rva); d >= 0 && d + 32 <= buf.length; d += 32) {
    const name = buf.readUInt32LE(d + 4);
    if (name === 0) break;
    const o = offset(name);
    if (o < 0) break;
    names.push(buf.subarray(o, buf.indexOf(0, o)).toString('latin1'));
  }
  return names;
}

const LC_LOAD_DYLIB = 0xc;
const LC_CODE_SIGNATURE = 0x1d;
const LC_BUILD_VERSION = 0x32;
const LC_VERSION_MIN_MACOSX = 0x24;
const LC_DYLD_INFO_ONLY = 0x22; // | LC_REQ_DYLD, masked off below
const LC_DYLD_EXPORTS_TRIE = 0x33;
const LC_ID_DYLIB = 0xd;

/** The names a Mach-O export trie holds (every exported symbol). */
function trieExports(buf, start, size) {
  const out = [];
  const uleb = (at) => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = buf[at.i++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return value;
    }
  };
  const visit = (offset, prefix, depth) => {
    if (depth > 512 || offset >= size) return;
    const at = { i: start + offset };
    const terminal = uleb(at);
    if (terminal > 0) out.push(prefix);
    at.i += terminal;
    const children = buf[at.i++];
    for (let c = 0; c < children; c++) {
      const end = buf.indexOf(0, at.i);
      const edge = buf.subarray(at.i, end).toString('latin1');
      at.i = end + 1;
      visit(uleb(at), prefix + edge, depth + 1);
    }
  };
  visit(0, '', 0);
  return out;
}

function macho(buf) {
  const cputype = buf.readUInt32LE(4);
  const cpu = { 0x01000007: 'x64', 0x0100000c: 'arm64' }[cputype] ?? `cputype 0x${cputype.toString(16)}`;
  const filetype = buf.readUInt32LE(12);
  const ncmds = buf.readUInt32LE(16);
  const needs = [];
  let minOs;
  let signed = false;
  let trie;
  let installName;
  let off = 32;
  const version = (v) => `${v >>> 16}.${(v >>> 8) & 0xff}`;
  for (let i = 0; i < ncmds; i++) {
    const cmd = buf.readUInt32LE(off) & 0x7fffffff;
    const size = buf.readUInt32LE(off + 4);
    if (cmd === LC_LOAD_DYLIB) {
      const name = buf.subarray(off + buf.readUInt32LE(off + 8), off + size);
      needs.push(name.subarray(0, name.indexOf(0)).toString());
    } else if (cmd === LC_CODE_SIGNATURE) {
      signed = true;
    } else if (cmd === LC_DYLD_INFO_ONLY) {
      trie = [buf.readUInt32LE(off + 40), buf.readUInt32LE(off + 44)];
    } else if (cmd === LC_DYLD_EXPORTS_TRIE) {
      trie = [buf.readUInt32LE(off + 8), buf.readUInt32LE(off + 12)];
    } else if (cmd === LC_ID_DYLIB) {
      const name = buf.subarray(off + buf.readUInt32LE(off + 8), off + size);
      installName = name.subarray(0, name.indexOf(0)).toString();
    } else if (cmd === LC_BUILD_VERSION || cmd === LC_VERSION_MIN_MACOSX) {
      minOs = version(buf.readUInt32LE(off + (cmd === LC_BUILD_VERSION ? 12 : 8)));
    }
    off += size;
  }
  // Every exported symbol, without Mach-O's leading underscore.
  const exports = trie ? trieExports(buf, trie[0], trie[1]).map((n) => n.replace(/^_/, '')) : [];
  return {
    format: filetype === 6 ? 'Mach-O dylib' : filetype === 8 ? 'Mach-O bundle' : `Mach-O type ${filetype}`,
    cpu,
    needs,
    exports,
    installName,
    minOs,
    signed,
  };
}

if (fileURLToPath(import.meta.url) === resolve(process.argv[1] ?? '')) {
  for (const f of process.argv.slice(2)) console.log(JSON.stringify({ file: f, ...binaryInfo(f) }));
}
