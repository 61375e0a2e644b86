/**
 * Where a connection came from: a short text (a stack trace of where it was created) that an
 * integration records once and the guard reports when it closes the connection, so a CLOSE_WAIT
 * leak's origin is one log line away. Kept beside the socket in a WeakMap: nothing on the socket.
 * @module
 */
const origins = new WeakMap<object, string>();

/** Records where `socket` was created (for example a trimmed stack trace). */
export function recordOrigin(socket: object, origin: string): void {
  origins.set(socket, origin);
}

/** Where `socket` was created, if an integration recorded it. */
export function originOf(socket: object): string | undefined {
  return origins.get(socket);
}
