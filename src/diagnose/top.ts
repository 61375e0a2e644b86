/**
 * Who holds the TIME_WAIT and CLOSE_WAIT sockets: the peers and local ports with the most of them,
 * the two questions people answer with `ss | awk | sort | uniq -c`. With netlink the ranking is
 * built in native code during the dump (native/diag_report.h); this is the same ranking, ties
 * broken the same way, over a list read from /proc.
 *
 * A socket's side decides what its ports mean. A connection accepted by a listener of the
 * namespace (its local port is a listening port) has the server's port as its local port and the
 * client's ephemeral port as the peer's: it is ranked by local port, never as a destination. A
 * connection this side opened is ranked by destination (address and port), never by its ephemeral
 * local port. Peers rank both.
 * @module
 */
import { destination, parseAddress } from './address.js';
import type { Connection } from './states.js';

/** A process holding sockets of a ranked group, as `ss -p` names it. */
export interface SocketOwner {
  pid: number;
  /** The process's command name (/proc/PID/comm; `'?'` when it ended before it was read). */
  command: string;
  /** Sockets of the group this process holds. */
  sockets: number;
}

/** One row of a ranking. */
export interface TopEntry {
  /** A peer address, a destination (`address:port`), or a local port. */
  key: string;
  count: number;
  /** For a state processes hold (CLOSE_WAIT): who holds these sockets, most first. */
  owners?: SocketOwner[];
  /**
   * For a state processes hold: sockets of this group whose holder could not be looked up, because
   * the processes that may hold them are another user's (their /proc/PID/fd is unreadable without
   * root). Absent when every socket's holder was found or none can be held by an unreadable process.
   */
  unreadable?: number;
}

/** Rankings for one state. */
export interface TopOfState {
  /** Remote addresses with the most sockets in the state, of connections of either side. */
  peers: TopEntry[];
  /**
   * Remote address:port pairs of connections this side opened (the destination a client is
   * churning against). Connections accepted by a listener are not here: their remote port is the
   * client's ephemeral port.
   */
  destinations: TopEntry[];
  /**
   * Local ports of connections a listener accepted (a service's port), most first. Connections
   * this side opened are not here: their local port is an ephemeral port of their own.
   */
  localPorts: TopEntry[];
  /**
   * Whether a process holds sockets in this state. False for TIME_WAIT: the kernel keeps those
   * after the process closed them, so they have no owner (`ss -p` shows none).
   */
  owned: boolean;
  /** For a state processes hold: every process holding sockets in it, most first. */
  holders?: SocketOwner[];
  /** For a state processes hold: sockets in it whose holder could not be looked up (see {@link TopEntry.unreadable}). */
  unreadable?: number;
  /** For a state processes hold: sockets in it a listener accepted, and sockets this side opened. */
  sides?: { accepted: number; opened: number };
  /** Why the owners could not be read (/proc unreadable), when they could not. */
  ownersError?: string;
}

/** Counts per key, with the order ties are broken in (the native ranking's: family, address bytes, port). */
class Counts {
  readonly counts = new Map<string, { count: number; order: string }>();
  bump(key: string, order: () => string): void {
    const e = this.counts.get(key);
    if (e) e.count++;
    else this.counts.set(key, { count: 1, order: order() });
  }
  /** The `limit` largest counts, most first. */
  top(limit: number): TopEntry[] {
    return [...this.counts]
      .sort(([, a], [, b]) => b.count - a.count || (a.order < b.order ? -1 : a.order > b.order ? 1 : 0))
      .slice(0, limit)
      .map(([key, { count }]) => ({ key, count }));
  }
}

const hex = (n: number, digits: number) => n.toString(16).padStart(digits, '0');
/** Family, then the 16 address bytes, then the port: the order native/diag_report.h breaks ties in. */
function order(c: Connection, port: number): string {
  const bytes = parseAddress(c.remoteAddress)?.bytes ?? new Uint8Array(16);
  return `${c.family}${Array.from(bytes, (b) => hex(b, 2)).join('')}${hex(port, 4)}`;
}

/**
 * Ranks peers, destinations (of opened connections) and local ports (of accepted connections) for
 * each of `states` (default TIME_WAIT and CLOSE_WAIT); `listening` holds the namespace's listening
 * local ports, which tell the sides apart.
 */
export function topOf(
  connections: Connection[],
  limit = 5,
  states = ['TIME_WAIT', 'CLOSE_WAIT'],
  listening: ReadonlySet<number> = new Set(),
): Record<string, TopOfState> {
  const out: Record<string, TopOfState> = {};
  for (const state of states) {
    const peers = new Counts();
    const destinations = new Counts();
    const ports = new Counts();
    for (const c of connections) {
      if (c.state !== state) continue;
      peers.bump(c.remoteAddress, () => order(c, 0));
      if (listening.has(c.localPort)) ports.bump(String(c.localPort), () => hex(c.localPort, 4));
      else destinations.bump(destination(c.remoteAddress, c.remotePort), () => order(c, c.remotePort));
    }
    out[state] = {
      peers: peers.top(limit),
      destinations: destinations.top(limit),
      localPorts: ports.top(limit),
      owned: state !== 'TIME_WAIT',
    };
  }
  return out;
}
