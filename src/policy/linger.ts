/**
 * The reset path's kernel steps, on a handle the socket may already consider closed (see
 * `closingHandle`): the send queue, SO_LINGER 0 when it has drained, whether the peer closed
 * first. One native call each; used by reset.ts and close.ts only.
 * @module
 */
import { constants, native, slots } from '../binding.js';
import { call } from '../handle.js';
import { applyLingerZero } from '../options.js';

const { layout } = constants;

/**
 * The reset path on a handle (see `closingHandle`): bytes still in the kernel send queue
 * (SIOCOUTQ), without the TCP-type check (socket-level requests).
 * @internal
 */
export function handleSendQueue(handle: object): number {
  call(native.queues, handle, false);
  return slots[layout.queues];
}

/** What {@link handleLingerIfDrained} returns when the peer has closed first (nothing was changed). */
export const PEER_CLOSED = -1;

/**
 * The reset path on a handle: SIOCOUTQ, and SO_LINGER 0 when it is empty (one native call).
 * Returns the bytes still queued: 0 means the next close sends RST; {@link PEER_CLOSED} means the
 * queue is empty but the peer's FIN has arrived (CLOSE_WAIT), so the close stays a FIN.
 * @internal
 */
export function handleLingerIfDrained(handle: object): number {
  call(native.lingerIfDrained, handle, false);
  const left = slots[layout.queues];
  return left === 0 && slots[layout.queues + 1] === 1 ? PEER_CLOSED : left;
}

/**
 * The reset path on a handle: whether the peer's FIN has arrived (kernel state CLOSE_WAIT), read
 * or not by Node. One getsockopt.
 * @internal
 */
export function handlePeerClosed(handle: object): boolean {
  call(native.state, handle, false);
  return constants.tcpStates[slots[layout.state]] === 'CLOSE_WAIT';
}

/**
 * The reset path on a handle: SO_LINGER 0 now, whatever is queued (the next close sends RST and
 * discards it).
 * @internal
 */
export function handleLingerZero(handle: object): void {
  applyLingerZero(handle);
}
