/**
 * `socktune watch`: a live terminal view of TCP state counts with the trend of TIME_WAIT and
 * CLOSE_WAIT. A surface only: counts come from connectionStates().
 * @module
 */
import { connectionStates, type ConnectionFilter, type ConnectionStates } from './diagnose/states.js';
import { invalidArgType, outOfRange } from './errors.js';
import { paint, scopeText, table } from './format.js';

/** Options of {@link watch}. */
export interface WatchOptions {
  filter: ConnectionFilter;
  /** Milliseconds between refreshes: an integer from 50 to 2147483647 (the most a timer holds). */
  interval: number;
  /** Stop after this many refreshes, an integer of 1 or more (default: until q or Ctrl-C). */
  count?: number;
  /** Print one JSON line per refresh instead of drawing. */
  json?: boolean;
  input?: NodeJS.ReadStream;
  output?: NodeJS.WriteStream;
}

const sparks = '▁▂▃▄▅▆▇█';
const HISTORY = 60;

/** The counts of the latest refreshes, oldest first, with when each was read. */
export interface WatchHistory {
  /** `performance.now()` when each count was read (milliseconds). */
  at: number[];
  TIME_WAIT: number[];
  CLOSE_WAIT: number[];
}

/**
 * One character per count, on a fixed baseline: 0 is the lowest bar and the largest count shown
 * the highest, so 1,000 → 1,010 stays level instead of jumping from the bottom to the top.
 */
export function sparkline(values: number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => sparks[max === 0 ? 0 : Math.round((Math.max(0, v) / max) * (sparks.length - 1))]).join('');
}

/**
 * The change per second between the last two counts, over the time that really passed between
 * their reads: a refresh comes late when the dump or the terminal is slow, or the event loop busy.
 */
function rate(values: number[], at: number[]): string {
  if (values.length < 2) return '';
  const seconds = (at[at.length - 1] - at[at.length - 2]) / 1000;
  if (!(seconds > 0)) return '';
  const d = (values[values.length - 1] - values[values.length - 2]) / seconds;
  return `${d >= 0 ? '+' : ''}${d.toFixed(1)}/s`;
}

/** Renders one frame: counts with bars, then the TIME_WAIT and CLOSE_WAIT history. */
export function renderFrame(s: ConnectionStates, history: WatchHistory, intervalMs: number, width = 80): string {
  const rows = Object.entries(s.states).filter(([name, n]) => n > 0 || name === 'TIME_WAIT' || name === 'CLOSE_WAIT' || name === 'ESTABLISHED');
  const max = Math.max(1, ...rows.map(([, n]) => n));
  const barWidth = Math.max(10, Math.min(50, width - 30));
  const body = table(
    ['state', 'count', ''],
    rows.map(([name, n]) => {
      const bar = '█'.repeat(Math.round((n / max) * barWidth));
      const colour = name === 'CLOSE_WAIT' && n > 0 ? 'red' : name === 'TIME_WAIT' ? 'yellow' : 'green';
      return [name, String(n), paint(bar, colour)];
    }),
  );
  const trend = (['TIME_WAIT', 'CLOSE_WAIT'] as const).map(
    (k) => `${k.padEnd(10)} ${sparkline(history[k].slice(-Math.min(HISTORY, width - 30)))} ${rate(history[k], history.at)}`,
  );
  return [`socktune watch: ${s.total} TCP sockets of ${scopeText(s)} (${s.source}), every ${intervalMs} ms`, '', body, '', 'trend', ...trend].join('\n');
}

/** Shortest refresh: a dump of a busy namespace takes tens of milliseconds. */
const MIN_INTERVAL = 50;
/** setInterval holds 2^31-1 ms at most; Node turns a longer delay into 1 ms. */
const MAX_INTERVAL = 2_147_483_647;

function checkInteger(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number') throw invalidArgType(name, 'of type number', v);
  if (!Number.isInteger(v) || v < min || v > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, v);
}

/**
 * Runs the live view until q, Ctrl-C, SIGTERM or `count` refreshes. Resolves when it has cleaned
 * up; also when the output's reader goes away (EPIPE: `socktune watch | head -1`).
 */
export function watch(opts: WatchOptions): Promise<void> {
  checkInteger('opts.interval', opts.interval, MIN_INTERVAL, MAX_INTERVAL);
  if (opts.count !== undefined) checkInteger('opts.count', opts.count, 1, Number.MAX_SAFE_INTEGER);
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  const live = !opts.json && Boolean(output.isTTY);
  const history: WatchHistory = { at: [], TIME_WAIT: [], CLOSE_WAIT: [] };
  let frames = 0;
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    let outputBroken = false;
    // Ends the view once: restores the terminal, then settles with `err` when there is one.
    const stop = (err?: unknown) => {
      if (stopped) return;
      stopped = true;
      if (timer) clearInterval(timer);
      output.off('error', onOutputError);
      input.off('data', onKey);
      process.off('SIGINT', quit);
      process.off('SIGTERM', quit);
      if (input.isTTY) input.setRawMode(false);
      input.pause();
      // Leave the alternate screen and show the cursor again.
      if (live && !outputBroken) output.write('\u001b[?25h\u001b[?1049l');
      if (err === undefined) resolve();
      else reject(err);
    };
    const quit = () => stop();
    // The reader went away (`watch | head -1`): nothing left to show, and nothing wrong.
    const onOutputError = (err: NodeJS.ErrnoException) => {
      outputBroken = true;
      stop(err.code === 'EPIPE' ? undefined : err);
    };
    const onKey = (key: Buffer) => {
      const k = key.toString();
      if (k === 'q' || k === 'Q' || k === '\u0003') stop();
    };
    const tick = () => {
      if (stopped) return;
      try {
        const at = performance.now();
        const s = connectionStates(opts.filter);
        history.at.push(at);
        history.TIME_WAIT.push(s.states.TIME_WAIT);
        history.CLOSE_WAIT.push(s.states.CLOSE_WAIT);
        if (history.at.length > HISTORY) {
          history.at.shift();
          history.TIME_WAIT.shift();
          history.CLOSE_WAIT.shift();
        }
        if (opts.json) output.write(`${JSON.stringify({ time: new Date().toISOString(), ...s })}\n`);
        else if (live) {
          const frame = renderFrame(s, history, opts.interval, output.columns ?? 80);
          output.write(`\u001b[H\u001b[2J${frame}\n\n${paint('q or Ctrl-C to quit', 'dim')}\n`);
        } else output.write(`${renderFrame(s, history, opts.interval)}\n\n`);
        if (opts.count !== undefined && ++frames >= opts.count) stop();
      } catch (err) {
        stop(err);
      }
    };
    output.on('error', onOutputError);
    if (live) output.write('\u001b[?1049h\u001b[?25l');
    if (input.isTTY) {
      input.setRawMode(true);
      input.resume();
      input.on('data', onKey);
    }
    process.on('SIGINT', quit);
    process.on('SIGTERM', quit);
    timer = setInterval(tick, opts.interval);
    tick();
  });
}
