/**
 * The kernel's events on sockets Node is not reading (native/watch.h): a paused connection joins
 * this thread's watch set once, and the peer's FIN or RST on it is reported by one epoll_wait for
 * every watched socket at once, instead of one TCP_INFO read per connection per scan. Linux only;
 * elsewhere `watchable` is false and callers ask the kernel as before.
 * @module
 */
import { constants, native, slots } from './binding.js';
import { call, closingHandle } from './handle.js';
import type net from 'node:net';

const { layout } = constants;

/** Whether this platform has the watch set (and the addon is loaded). */
export const watchable: boolean = (() => {
  try {
    return constants.platform.watch === true;
  } catch {
    return false;
  }
})();

/**
 * Adds `socket` to the watch set under `owner:key` (both uint32). Returns false when it could not
 * be added (no fd left, no watch set on this platform): the caller asks the kernel instead.
 */
export function watchSocket(socket: net.Socket, owner: number, key: number): boolean {
  if (!watchable) return false;
  try {
    call(() => native.watchAdd(owner, key), closingHandle(socket), false);
    return slots[layout.result] === 0;
  } catch {
    return false;
  }
}

const keys = new Uint32Array(128);
const owners = new Map<number, (key: number) => void>();

/** Sends the events of `owner`'s sockets to `onEvent(key)` from now on (`undefined`: no more). */
export function onWatchEvents(owner: number, onEvent: ((key: number) => void) | undefined): void {
  if (onEvent === undefined) owners.delete(owner);
  else owners.set(owner, onEvent);
}

/** Takes the events the kernel has queued for watched sockets and hands each to its owner. One epoll_wait per 64. */
export function drainWatchEvents(): void {
  if (!watchable) return;
  for (;;) {
    const n = native.watchDrain(keys);
    for (let i = 0; i < n; i++) owners.get(keys[2 * i])?.(keys[2 * i + 1]);
    if (n < 64) return;
  }
}
