/**
 * Who holds the TIME_WAIT and CLOSE_WAIT sockets: the peers and local ports with the most of them,
 * the two questions people answer with `ss | awk | sort | uniq -c`.
 * @module
 */
import type { Connection } from './states.js';

/** One row of a ranking. */
export interface TopEntry {
  /** A peer address, or a local port. */
  key: string;
  count: number;
}

/** Rankings for one state. */
export interface TopOfState {
  /** Remote addresses with the most sockets in the state. */
  peers: TopEntry[];
  /** Remote address:port pairs (the destination a client is churning against). */
  destinations: TopEntry[];
  /** Local ports with the most sockets in the state. */
  localPorts: TopEntry[];
}

/**
 * The `limit` largest counts, most first (ties by key); keys become text only for the rows kept.
 * A bounded insertion keeps it O(n·limit) with no copy of the map: 50,000 destinations in
 * TIME_WAIT are common.
 */
export function rankCounts<K>(counts: Map<K, number>, limit: number, label: (k: K) => string): TopEntry[] {
  const best: Array<[K, number]> = [];
  if (limit < 1) return [];
  const before = (a: [K, number], b: [K, number]) => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);
  for (const entry of counts) {
    if (best.length === limit && !before(entry, best[limit - 1])) continue;
    let i = best.length < limit ? best.length : limit - 1;
    while (i > 0 && before(entry, best[i - 1])) {
      best[i] = best[i - 1];
      i--;
    }
    best[i] = entry;
  }
  return best.map(([key, count]) => ({ key: label(key), count }));
}

const rank = (counts: Map<string, number>, limit: number) => rankCounts(counts, limit, (k) => k);

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/** Ranks peers, destinations and local ports for each of `states` (default TIME_WAIT and CLOSE_WAIT). */
export function topOf(connections: Connection[], limit = 5, states = ['TIME_WAIT', 'CLOSE_WAIT']): Record<string, TopOfState> {
  const out: Record<string, TopOfState> = {};
  for (const state of states) {
    const peers = new Map<string, number>();
    const destinations = new Map<string, number>();
    const ports = new Map<string, number>();
    for (const c of connections) {
      if (c.state !== state) continue;
      bump(peers, c.remoteAddress);
      bump(destinations, c.family === 6 ? `[${c.remoteAddress}]:${c.remotePort}` : `${c.remoteAddress}:${c.remotePort}`);
      bump(ports, String(c.localPort));
    }
    out[state] = { peers: rank(peers, limit), destinations: rank(destinations, limit), localPorts: rank(ports, limit) };
  }
  return out;
}
