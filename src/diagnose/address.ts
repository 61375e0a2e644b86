/**
 * IP addresses between text and the kernel's network-order bytes, written the way inet_ntop (and
 * so `ss` and Node) writes them. Kept free of `node:net`, which costs the CLI ~6 ms to load.
 * @module
 */

/** An address given by a user, as the kernel compares it. */
export interface ParsedAddress {
  family: 4 | 6;
  /** 16 bytes, network order; an IPv4 address in the first 4. */
  bytes: Uint8Array;
  /** inet_ntop's spelling, to compare with addresses read from /proc. */
  text: string;
}

const octet = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseV4(text: string, into: Uint8Array, at: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => octet.test(p))) return false;
  parts.forEach((p, i) => (into[at + i] = Number(p)));
  return true;
}

function parseGroups(text: string): number[] | undefined {
  if (text === '') return [];
  const groups = text.split(':');
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  return groups.map((g) => parseInt(g, 16));
}

function parseV6(text: string, bytes: Uint8Array): boolean {
  let v4Tail: Uint8Array | undefined;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.slice(lastColon + 1).includes('.')) {
    v4Tail = new Uint8Array(4);
    if (!parseV4(text.slice(lastColon + 1), v4Tail, 0)) return false;
    // Keep the colon before the tail for ::a.b.c.d (the tail then stands for two groups).
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const head = parseGroups(halves[0]);
  const tail = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (head === undefined || tail === undefined) return false;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return false;
  const groups = [...head, ...Array<number>(fill).fill(0), ...tail];
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  if (v4Tail) bytes.set(v4Tail, 12);
  return true;
}

/**
 * Parses an IPv4 address, or an IPv6 address (with `::`, a dotted IPv4 tail, and a `%zone` that is
 * dropped: the kernel's socket table has no zone), into network-order bytes. `undefined` when it is
 * neither.
 */
export function parseAddress(text: string): ParsedAddress | undefined {
  const bytes = new Uint8Array(16);
  if (parseV4(text, bytes, 0)) return { family: 4, bytes, text: formatAddress(bytes, true) };
  const zone = text.indexOf('%');
  const bare = zone >= 0 ? text.slice(0, zone) : text;
  if (zone === 0 || zone === text.length - 1 || !parseV6(bare, bytes)) return undefined;
  return { family: 6, bytes, text: formatAddress(bytes, false) };
}

/**
 * Writes an address as inet_ntop does: dotted IPv4; IPv6 in lower-case hex with the longest run
 * of two or more zero groups as `::`, and an IPv4-mapped (`::ffff:127.0.0.1`) or IPv4-compatible
 * (`::10.0.0.1`) address with its IPv4 part dotted.
 */
export function formatAddress(bytes: Uint8Array, v4: boolean): string {
  if (v4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i] << 8) | bytes[i + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const dotted = `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  if (best === 0 && bestLen === 6) return `::${dotted}`;
  if (best === 0 && bestLen === 5 && words[5] === 0xffff) return `::ffff:${dotted}`;
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

/** `a.b.c.d:port` or `[v6]:port`, as `ss` writes a peer with its port. */
export function destination(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
