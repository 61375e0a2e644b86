/**
 * The tables socktune shares with its native core, on the TypeScript side. Each is defined once in
 * native/tables.h (an X-macro list the core's enums and name arrays are generated from, and which
 * the addon exports as `constants`); these copies give TypeScript its types and the no-addon stub
 * its names, and test/00-tables.test.ts checks them against what the addon exports, entry by entry.
 * @module
 */

/** Socket options in the core's id order (`ST_OPTIONS`): the kernel's names. */
export const optionNames = [
  'SO_KEEPALIVE',
  'TCP_KEEPIDLE',
  'TCP_KEEPINTVL',
  'TCP_KEEPCNT',
  'TCP_USER_TIMEOUT',
  'SO_LINGER',
  'TCP_NODELAY',
  'SO_REUSEADDR',
  'SO_REUSEPORT',
  'SO_RCVBUF',
  'SO_SNDBUF',
  'IP_TOS',
  'IP_BIND_ADDRESS_NO_PORT',
  'IP_LOCAL_PORT_RANGE',
  'TCP_DEFER_ACCEPT',
] as const;

/** Kernel TCP state names (`'ESTABLISHED'`, `'CLOSE_WAIT'`, ...), as `ss` and /proc spell them. */
export type TcpState =
  | 'UNKNOWN'
  | 'ESTABLISHED'
  | 'SYN_SENT'
  | 'SYN_RECV'
  | 'FIN_WAIT1'
  | 'FIN_WAIT2'
  | 'TIME_WAIT'
  | 'CLOSE'
  | 'CLOSE_WAIT'
  | 'LAST_ACK'
  | 'LISTEN'
  | 'CLOSING'
  | 'NEW_SYN_RECV';

/** Kernel TCP states by tcpi_state (`ST_TCP_STATES`, include/net/tcp_states.h), as `ss` and /proc spell them. */
export const tcpStateNames = [
  'UNKNOWN',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
] as const satisfies readonly TcpState[];

// Every TcpState is in the list (the list's entries are TcpStates by `satisfies` above).
const everyStateListed: Exclude<TcpState, (typeof tcpStateNames)[number]> extends never ? true : never = true;
void everyStateListed;

/** TCP_INFO fields in the core's order (`ST_TCP_INFO_FIELDS`), by their JavaScript names. */
export const tcpInfoFieldNames = [
  'state',
  'caState',
  'retransmits',
  'probes',
  'backoff',
  'options',
  'rto',
  'ato',
  'sndMss',
  'rcvMss',
  'unacked',
  'sacked',
  'lost',
  'retrans',
  'lastDataSent',
  'lastDataReceived',
  'lastAckReceived',
  'pmtu',
  'rcvSsthresh',
  'rtt',
  'rttvar',
  'sndSsthresh',
  'sndCwnd',
  'advmss',
  'reordering',
  'rcvRtt',
  'rcvSpace',
  'totalRetrans',
  'pacingRate',
  'bytesAcked',
  'bytesReceived',
  'segsOut',
  'segsIn',
  'notsentBytes',
  'minRtt',
  'deliveryRate',
  'bytesSent',
  'bytesRetrans',
  'sndWnd',
] as const;

/** TCP_INFO fields the kernel counts in microseconds, which socktune reports in milliseconds. */
export const microsecondFields: ReadonlySet<string> = new Set(['rto', 'ato', 'rtt', 'rttvar', 'rcvRtt', 'minRtt']);

/**
 * The scratch buffer's layout the addon exports: each slot of `ST_SLOTS` by name, then the sizes
 * and byte offsets the binding adds.
 */
export const layoutNames = [
  'count',
  'ids',
  'values',
  'keepShorter',
  'failedOption',
  'failedSyscall',
  'applied',
  'kept',
  'read',
  'queues',
  'state',
  'readMissing',
  'verify',
  'fd',
  'result',
  'diagStates',
  'diagFamily',
  'diagSport',
  'diagDport',
  'diagAnyPort',
  'diagNetlink',
  'diagSrcFamily',
  'diagDstFamily',
  'diagSrc',
  'diagDst',
  'diagCounts',
  'newFamily',
  'bindPort',
  'bindV6Only',
  'bindScope',
  'bindAddr',
  'newFd',
  'optionSlots',
  'bytes',
  'topRowBytes',
  'diagEntryBytes',
  'infoOffset',
  'cookieOffset',
] as const;

/** The scratch buffer's layout: slot indexes, sizes and byte offsets, as the addon exports them. */
export type Layout = Record<(typeof layoutNames)[number], number>;
