/**
 * Where a connection came from: a short text (a stack trace of where it was created) that an
 * integration records once and the guard reports when it closes the connection, so a CLOSE_WAIT
 * leak's origin is one log line away. Kept beside the socket in a WeakMap: nothing on the socket.
 * @module
 */
const origins = new WeakMap<object, string | (() => string)>();

/**
 * Records where `socket` was created (for example a trimmed stack trace), or a function that
 * works it out: called at most once, the first time the origin is asked for, so a connection
 * that closes normally never pays for formatting it.
 */
export function recordOrigin(socket: object, origin: string | (() => string)): void {
  origins.set(socket, origin);
}

/** Where `socket` was created, if an integration recorded it. */
export function originOf(socket: object): string | undefined {
  const origin = origins.get(socket);
  if (typeof origin !== 'function') return origin;
  const text = origin();
  origins.set(socket, text);
  return text;
}
