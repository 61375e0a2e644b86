/**
 * The pre-connect stage: options a client socket can take only before bind and connect
 * (IP_BIND_ADDRESS_NO_PORT, IP_LOCAL_PORT_RANGE, the buffers' window scale, SO_REUSEADDR and
 * SO_REUSEPORT), set on a socket socktune makes natively (socket, options) and hands to Node in
 * Node's own connect, before the connect syscall; Node then binds and connects it as it would its
 * own (handle.ts, `interceptConnects`). A socket is put through the stage by {@link prebind}, before
 * it binds or connects (right after `net.connect()` returns, when Node has at most looked up its
 * host), or by a resolver for every connection the process opens (`socktune/register`).
 *
 * A `localAddress` without `localPort` makes Node bind before connecting, which reserves a port for
 * every destination alike: with IP_BIND_ADDRESS_NO_PORT the port is chosen at connect, per
 * destination. The stage holds Node's bind back until the connect, when the socket is made with
 * its options; the bind is then Node's own (libuv's SO_REUSEADDR, IPV6_V6ONLY as asked), and a
 * refused bind fails the socket with Node's `bind` error.
 * @module
 */
import type net from 'node:net';
import type { Policy } from '../policy/presets.js';
import { addressError } from '../errors.js';
import { Stage, applyEncodedTo, createSocket, encodeFor, isSupported, without, type EncodedOptions, type SocketOptions } from '../options.js';
import { STAGE_DESTROYED, bindPending, handleFd, interceptConnects, openSocket, tryingSeveral, type ConnectTarget } from '../handle.js';

/** The options of a socket at the stage, or how they are chosen at its connect (by the destination). */
export type StageChoice = EncodedOptions | ((socket: net.Socket, target: ConnectTarget) => EncodedOptions | undefined);

const staged = new WeakMap<net.Socket, StageChoice>();
let everyOpened: ((socket: net.Socket, target: ConnectTarget) => EncodedOptions | undefined) | undefined;
let installed = false;

function install(): void {
  if (installed) return;
  interceptConnects({ wants, connect: connectAtStage });
  installed = true;
}

function wants(socket: net.Socket): boolean {
  return staged.has(socket) || everyOpened !== undefined;
}

/**
 * Validates `options` for the pre-connect stage (configure's errors, and ERR_SOCKTUNE_STAGE for a
 * listener's option) and encodes them once. `name`: the argument's name in errors.
 */
export function prebindOptions(options: SocketOptions, name = 'prebind'): EncodedOptions {
  return encodeFor(Stage.Connect, options, name);
}

/**
 * Puts `socket` (a `net.Socket` or `tls.TLSSocket` that has not bound or connected yet: just made
 * by `net.connect()`/`tls.connect()`) through the pre-connect stage with `choice`. A socket that
 * already has its fd gets the options set now instead, which for IP_BIND_ADDRESS_NO_PORT is too
 * late (its bind is made).
 */
export function prebind(socket: net.Socket, choice: StageChoice): void {
  install();
  staged.set(socket, choice);
}

/**
 * Puts every connection this process opens from now on through the stage, with what `choose`
 * answers at each connect (`undefined`: nothing); `undefined` stops it. Sockets given their own
 * options by {@link prebind} keep them.
 */
export function prebindEveryConnection(choose: ((socket: net.Socket, target: ConnectTarget) => EncodedOptions | undefined) | undefined): void {
  if (choose !== undefined) install();
  everyOpened = choose;
}

/** Whether `socket` goes through the stage by its own options (not by the process-wide choice). */
export function isPrebound(socket: net.Socket): boolean {
  return staged.has(socket);
}

function connectAtStage(socket: net.Socket, handle: object, target: ConnectTarget): number {
  const choice = staged.get(socket);
  let options = typeof choice === 'function' ? choice(socket, target) : (choice ?? everyOpened?.(socket, target));
  // Without a bind to make, IP_BIND_ADDRESS_NO_PORT has nothing to do; with nothing else to set,
  // Node makes its socket itself.
  if (options !== undefined && target.bind === undefined) options = withoutBind(options);
  try {
    if (options === undefined || options.ids.length === 0) return target.bind === undefined ? 0 : bindHeld(socket, handle, target);
    if (handleFd(handle) >= 0) {
      applyEncodedTo(handle, options);
    } else {
      const fd = createSocket(target.ip, options, undefined);
      const rc = openSocket(handle, fd);
      if (rc !== 0) return rc;
    }
  } catch (err) {
    // Named by the option the kernel refused (`applied` on it), as configure's errors are; in
    // happy eyeballs Node goes on to the next address with the errno instead.
    if (tryingSeveral(socket) && typeof (err as { errno?: unknown }).errno === 'number') return (err as { errno: number }).errno;
    socket.destroy(err as Error);
    return STAGE_DESTROYED;
  }
  return target.bind === undefined ? 0 : bindHeld(socket, handle, target);
}

const unbound = new WeakMap<EncodedOptions, EncodedOptions>();

/** `options` for a socket that binds no address: IP_BIND_ADDRESS_NO_PORT left out (worked out once per options). */
function withoutBind(options: EncodedOptions): EncodedOptions {
  let out = unbound.get(options);
  if (out === undefined) {
    out = without(options, 'IP_BIND_ADDRESS_NO_PORT');
    unbound.set(options, out);
  }
  return out;
}

/** Makes the bind Node asked for and the stage held back; a refusal fails the socket as Node's own would. */
function bindHeld(socket: net.Socket, handle: object, target: ConnectTarget): number {
  const bind = target.bind!;
  const rc = bindPending(handle, bind, target.ip);
  if (rc === 0) return 0;
  socket.destroy(addressError(rc, 'bind', bind.address, bind.port));
  return STAGE_DESTROYED;
}

const byPolicy = new WeakMap<Policy, EncodedOptions>();

/** A policy's options at the stage (`bindAddressNoPort`, `localPortRange`), encoded once per policy. */
export function policyPrebind(policy: Policy): EncodedOptions {
  let encoded = byPolicy.get(policy);
  if (encoded === undefined) {
    const options: SocketOptions = {};
    if (policy.bindAddressNoPort && isSupported('IP_BIND_ADDRESS_NO_PORT')) options.bindAddressNoPort = true;
    if (policy.localPortRange !== false) options.localPortRange = policy.localPortRange;
    encoded = prebindOptions(options, 'policy');
    byPolicy.set(policy, encoded);
  }
  return encoded;
}
