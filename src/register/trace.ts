/**
 * `SOCKTUNE_TRACE=1`: where each connection was created, as a short stack of the application's
 * frames (Node's internals and socktune's own frames left out), kept with the connection through
 * the guard's origin hook, and one log line when a guard closes a connection the application
 * leaked (half-closed: CLOSE_WAIT; idle).
 * @module
 */
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { GuardCloseEvent, GuardReason } from '../guard/guard.js';

/** Frames kept per origin: enough to name the caller and its caller through a library. */
const FRAMES = 6;
/**
 * Frames captured. Node's own come first and are dropped: 2 for `net.connect()`, about 8 for an
 * `http.Agent` request; what is left is the application's. Capturing and formatting cost about
 * 0.5 µs a frame each (scripts/bench/register.mjs), so no more than that.
 */
const CAPTURED = 16;

// socktune's own files (dist/), as paths (CommonJS stacks) and as URLs (ES module stacks).
const ownUrl = new URL('../', import.meta.url).href;
const ownPath = fileURLToPath(ownUrl);

function applicationFrame(frame: string): boolean {
  if (frame.includes('(node:') || frame.startsWith('node:')) return false;
  if (frame.includes(ownUrl) || frame.includes(ownPath)) return false;
  return !frame.endsWith('(<anonymous>)') && frame !== '<anonymous>' && !frame.startsWith('async Promise.');
}

/**
 * A one-line origin, `verb at f (file:line:col) < g (file:line:col)` (the innermost application
 * frame first), as a function that formats it when first called: the stack is captured now (V8
 * keeps its frames), and turned into text only for a connection whose origin is asked for.
 * `below` is the function the capture starts under (its frames and those above it are not captured).
 */
export function captureOrigin(verb: string, below: (...args: never[]) => unknown): () => string {
  const holder: { stack?: unknown } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = CAPTURED;
  try {
    Error.captureStackTrace(holder, below);
  } finally {
    Error.stackTraceLimit = limit;
  }
  let text: string | undefined;
  return () => (text ??= formatOrigin(verb, holder));
}

function formatOrigin(verb: string, holder: { stack?: unknown }): string {
  const frames: string[] = [];
  for (const line of String(holder.stack).split('\n')) {
    const t = line.trim();
    if (!t.startsWith('at ')) continue;
    const frame = t.slice(3);
    if (!applicationFrame(frame)) continue;
    frames.push(frame);
    if (frames.length === FRAMES) break;
  }
  return `${verb} at ${frames.length > 0 ? frames.join(' < ') : '(no application frame on the stack)'}`;
}

/** Guard closes that mean the application leaked the connection: logged under trace. */
export const tracedReasons: ReadonlySet<GuardReason> = new Set<GuardReason>(['half-closed', 'idle']);

function endpoint(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return '?';
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Both ends of a connection as the trace line shows them: `local -> peer` for a connection this
 * process opened, `local <- peer` for one it accepted. Read while it is open (Node forgets the
 * local address when the socket is destroyed): on the guard's `'closing'`.
 */
export function endpoints(socket: net.Socket, direction: 'opened' | 'accepted'): string {
  const arrow = direction === 'opened' ? '->' : '<-';
  return `${endpoint(socket.localAddress, socket.localPort)} ${arrow} ${endpoint(socket.remoteAddress, socket.remotePort)}`;
}

/** The log line for a guard close: reason, both ends ({@link endpoints}), the rule, FIN or RST, and the origin. */
export function traceLine(event: GuardCloseEvent, rule: string, ends: string): string {
  const how = event.report?.method ?? 'closing';
  return `socktune: closed ${event.reason} connection ${ends} (rule ${rule}, ${how}); origin: ${event.origin ?? 'not recorded'}\n`;
}
