/**
 * The configuration of `socktune/register`, read from the environment: `SOCKTUNE_POLICY` (one
 * policy for every connection), or `SOCKTUNE_CONFIG` (a JSON file of rules by direction, port and
 * host), and `SOCKTUNE_TRACE`. Everything is validated before the application starts; a mistake
 * is an error with code `ERR_SOCKTUNE_CONFIG` naming the variable, file and field, never ignored.
 * @module
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { inspect } from 'node:util';
import { socktuneError } from '../errors.js';
import { didYouMean } from '../errors.js';
import { compose, http2Fields, presets, type Policy, type PolicyOverrides } from '../policy/presets.js';

/** Code of every configuration error of `socktune/register`. */
export const CONFIG_ERROR = 'ERR_SOCKTUNE_CONFIG';

/** Which side started a connection: this process (`'opened'`) or a peer, to a server of this process (`'accepted'`). */
export type Direction = 'opened' | 'accepted';

/** One rule: which connections (every field given must match) get which policy. */
export interface Rule {
  /** The rule's name: its guard's name in `guards`, in the collector's `guard` label and in trace lines. */
  readonly name: string;
  /** Only connections this process opened, or only those it accepted. Unset: both. */
  readonly direction?: Direction;
  /** The peer's port: the destination port of an opened connection. Any of these. */
  readonly port?: readonly number[];
  /** The peer: the host name the application connected to, or the peer's IP address. Any of these. */
  readonly host?: readonly string[];
  /** This side's port: a server's port for accepted connections. Any of these. */
  readonly localPort?: readonly number[];
  /** This side's IP address. Any of these. */
  readonly localAddress?: readonly string[];
  /** The policy, or `false`: connections this rule matches are left untouched. */
  readonly policy: Policy | false;
}

/** The whole configuration: rules in order (the first that matches decides) and tracing. */
export interface RegisterConfig {
  /** Where the configuration came from (`SOCKTUNE_POLICY`, or `SOCKTUNE_CONFIG=<path>`). */
  readonly source: string;
  /** Rules, first match wins; the catch-all default policy is the last rule, named `default`. */
  readonly rules: readonly Rule[];
  /** Whether connections remember where they were created and guard closes of leaked ones are logged. */
  readonly trace: boolean;
  /** The drain on a signal (`SOCKTUNE_SHUTDOWN`, or the file's `shutdown`); unset: none, signals are the application's. */
  readonly shutdown?: ShutdownConfig;
}

/**
 * A drain on a signal: when the process receives `signal`, every server it listens on is drained
 * (see `close()` of socktune/register) with these durations, in milliseconds.
 */
export interface ShutdownConfig {
  /** The signal: `SIGTERM` (what orchestrators send), `SIGINT`, `SIGHUP` or `SIGUSR2`. */
  readonly signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGUSR2';
  /** Keep answering this long first, responses marked `Connection: close` (default 0). */
  readonly delay?: number;
  /** How long requests in flight may take once accepting stopped (default 10 000). */
  readonly timeout?: number;
  /** Over how long idle keep-alive connections are closed (default a quarter of `timeout`, at most 1 000). */
  readonly spread?: number;
  /** The path a load balancer checks: answered 503 from the start of the drain. */
  readonly readinessPath?: string;
}

const signals = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR2'];
const shutdownKeys = ['signal', 'delay', 'timeout', 'spread', 'readinessPath'];

/** `SOCKTUNE_SHUTDOWN` or the file's `shutdown`: a signal name, or `{ signal, delay, timeout, spread }`. */
function shutdownFrom(where: string, spec: unknown): ShutdownConfig {
  let value = spec;
  if (typeof spec === 'string' && spec.trim().startsWith('{')) value = parseJson(where, spec);
  if (typeof value === 'string') value = { signal: value.trim() };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(where, `must be a signal name (${signals.join(', ')}) or an object { "signal", "delay", "timeout", "spread" }; got ${show(spec)}`);
  }
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!shutdownKeys.includes(key)) fail(where, `has no field ${show(key)}; fields: ${shutdownKeys.join(', ')}${hint(key, shutdownKeys)}`);
  }
  if (typeof o.signal !== 'string' || !signals.includes(o.signal)) {
    fail(`${where} signal`, `must be one of ${signals.join(', ')}; got ${show(o.signal)}${typeof o.signal === 'string' ? hint(o.signal, signals) : ''}`);
  }
  const out: { -readonly [K in keyof ShutdownConfig]: ShutdownConfig[K] } = { signal: o.signal as ShutdownConfig['signal'] };
  for (const key of ['delay', 'timeout', 'spread'] as const) {
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1)
      fail(`${where} ${key}`, `must be whole milliseconds from 0 to 2147483647; got ${show(v)}`);
    out[key] = v;
  }
  if (o.readinessPath !== undefined) {
    if (typeof o.readinessPath !== 'string' || !o.readinessPath.startsWith('/'))
      fail(`${where} readinessPath`, `must be a path starting with '/'; got ${show(o.readinessPath)}`);
    out.readinessPath = o.readinessPath;
  }
  return Object.freeze(out);
}

const presetNames = Object.keys(presets) as Array<keyof typeof presets>;
const ruleKeys = ['name', 'direction', 'port', 'host', 'localPort', 'localAddress', 'policy'];
const fileKeys = ['policy', 'rules', 'trace', 'shutdown'];
/** The largest rules file read: far beyond any real one, and a bound on what a wrong path can cost. */
export const CONFIG_MAX_BYTES = 16 * 1024 * 1024;

/** `; did you mean 'x'?`, or nothing when no candidate is close. It ends the message, after the list of known names. */
function hint(word: string, candidates: readonly string[], aliases?: Record<string, string>): string {
  const near = didYouMean(word, candidates, aliases);
  return near === undefined ? '' : `; did you mean ${show(near)}?`;
}

/** Each preset's policy name (`graceful-heartbeat`) to the preset (`gracefulHeartbeat`): what users copy from logs and `policy.name`. */
function presetAliases(): Record<string, string> {
  return Object.fromEntries(presetNames.map((p) => [presets[p]().name, p]));
}

/** Whether the policy layer knows `field` (compose checks a field's name before its value, and skips undefined values). */
function isPolicyField(field: string): boolean {
  try {
    compose({ [field]: undefined } as PolicyOverrides);
    return true;
  } catch {
    return false;
  }
}

/** Policy field names to suggest from: the kernel options of `configure` and the fields the presets hold. */
function policyFields(): string[] {
  const seen = new Set(['keepAlive', 'userTimeout', 'noDelay']);
  for (const p of presetNames) for (const key of Object.keys(presets[p]())) seen.add(key);
  return [...seen].filter(isPolicyField);
}
const keepAliveFields = ['idle', 'interval', 'count'];

function fail(where: string, message: string, cause?: unknown): never {
  const err = socktuneError(CONFIG_ERROR, `${where}: ${message}`);
  if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
  throw err;
}

const show = (value: unknown): string => inspect(value, { depth: 2, breakLength: Infinity });

/** `a+b`: preset names, each known and given once. */
function presetChain(where: string, text: string): Array<keyof typeof presets> {
  const names = text.split('+').map((s) => s.trim());
  const out: Array<keyof typeof presets> = [];
  for (const name of names) {
    if (name === '') fail(where, `${show(text)} has an empty preset name; write presets joined by '+', e.g. gracefulHeartbeat+rstOnClose`);
    if (!(presetNames as string[]).includes(name)) {
      fail(where, `unknown preset ${show(name)}; presets: ${presetNames.join(', ')}${hint(name, presetNames, presetAliases())}`);
    }
    if (out.includes(name as keyof typeof presets)) fail(where, `names preset ${show(name)} twice`);
    out.push(name as keyof typeof presets);
  }
  return out;
}

/**
 * A policy from its description: preset names joined by `+` (later ones override earlier ones
 * where both set a field), or an object `{ "preset": "a+b", ...overrides }` whose fields (the
 * names of `configure` and the lifecycle fields, in milliseconds) override the presets'.
 */
export function parsePolicy(where: string, spec: unknown): Policy {
  let names: Array<keyof typeof presets> = [];
  let overrides: PolicyOverrides | undefined;
  if (typeof spec === 'string') {
    names = presetChain(where, spec);
  } else if (typeof spec === 'object' && spec !== null && !Array.isArray(spec)) {
    const { preset, ...rest } = spec as Record<string, unknown>;
    if (preset !== undefined) {
      if (typeof preset !== 'string') fail(`${where}.preset`, `must be a string of preset names joined by '+'; got ${show(preset)}`);
      names = presetChain(`${where}.preset`, preset);
    }
    for (const key of Object.keys(rest)) {
      if (!isPolicyField(key)) fail(where, `has no field ${show(key)}; fields: preset, ${policyFields().join(', ')}${hint(key, policyFields())}`);
    }
    const ka = rest.keepAlive;
    if (typeof ka === 'object' && ka !== null && !Array.isArray(ka)) {
      for (const key of Object.keys(ka)) {
        if (!keepAliveFields.includes(key))
          fail(`${where}.keepAlive`, `has no field ${show(key)}; fields: ${keepAliveFields.join(', ')}${hint(key, keepAliveFields)}`);
      }
    }
    const h2 = rest.http2;
    if (typeof h2 === 'object' && h2 !== null && !Array.isArray(h2)) {
      for (const key of Object.keys(h2)) {
        if (!http2Fields.includes(key)) fail(`${where}.http2`, `has no field ${show(key)}; fields: ${http2Fields.join(', ')}${hint(key, http2Fields)}`);
      }
    }
    if (Object.keys(rest).length > 0) overrides = rest as PolicyOverrides;
    if (names.length === 0 && overrides === undefined) fail(where, 'is an empty object: give "preset" or policy fields');
  } else {
    fail(where, `must be preset names ("gracefulHeartbeat+rstOnClose") or an object { "preset": ..., fields }; got ${show(spec)}`);
  }
  try {
    if (names.length === 0) return compose(overrides);
    // Keepalive overrides may name some fields only; a policy holds all three, so the others come
    // from the presets (a preset that sets none, rstOnClose, gets the partial one and refuses it).
    const ka = overrides?.keepAlive;
    if (typeof ka === 'object' && ka !== null && !Array.isArray(ka)) {
      const fromPresets = chain(names, undefined).keepAlive;
      if (fromPresets) overrides = { ...overrides, keepAlive: { ...fromPresets, ...ka } };
    }
    return chain(names, overrides);
  } catch (err) {
    return fail(where, (err as Error).message, err);
  }
}

/**
 * a(b(overrides)): each preset composes over the next, so later ones win where both set a field,
 * and a derived default (gracefulHeartbeat's user timeout follows its keepalive) sees every override.
 */
function chain(names: Array<keyof typeof presets>, overrides: PolicyOverrides | undefined): Policy {
  let policy: Policy | PolicyOverrides | undefined = overrides;
  for (const name of [...names].reverse()) policy = presets[name](policy);
  return policy as Policy;
}

/** `SOCKTUNE_POLICY`: preset names, or a JSON object. */
function policyFromEnv(text: string): Policy {
  const where = 'SOCKTUNE_POLICY';
  const trimmed = text.trim();
  if (trimmed === '') fail(where, 'is empty; set a preset (gracefulHeartbeat) or remove socktune/register from the command line');
  if (!trimmed.startsWith('{')) return parsePolicy(where, trimmed);
  return parsePolicy(where, parseJson(where, trimmed));
}

function list<T>(where: string, value: unknown, check: (where: string, v: unknown) => T): readonly T[] {
  if (!Array.isArray(value)) return Object.freeze([check(where, value)]);
  if (value.length === 0) fail(where, 'is an empty list (it would match nothing)');
  return Object.freeze(value.map((v, i) => check(`${where}[${i}]`, v)));
}

function port(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) fail(where, `must be a port number 1..65535; got ${show(v)}`);
  return v;
}

function host(where: string, v: unknown): string {
  if (typeof v !== 'string' || v === '' || /\s/.test(v)) fail(where, `must be a host name or IP address; got ${show(v)}`);
  return v.toLowerCase();
}

/**
 * {@link parsePolicy}, once per distinct description in a file: rules tend to repeat a few
 * policies, and a policy is frozen data that rules can share.
 */
function policyOf(where: string, spec: unknown, seen: Map<string, Policy>): Policy {
  const key = JSON.stringify(spec);
  let policy = seen.get(key);
  if (policy === undefined) seen.set(key, (policy = parsePolicy(where, spec)));
  return policy;
}

function rule(where: string, value: unknown, index: number, seen: Map<string, Policy>): Rule {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(where, `must be an object; got ${show(value)}`);
  const r = value as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    if (!ruleKeys.includes(key)) fail(where, `has no field ${show(key)}; rule fields: ${ruleKeys.join(', ')}${hint(key, ruleKeys)}`);
  }
  if (r.name !== undefined && (typeof r.name !== 'string' || r.name === '')) fail(`${where}.name`, `must be a non-empty string; got ${show(r.name)}`);
  if (r.direction !== undefined && r.direction !== 'opened' && r.direction !== 'accepted') {
    fail(`${where}.direction`, `must be "opened" or "accepted"; got ${show(r.direction)}`);
  }
  if (!('policy' in r)) fail(where, 'has no "policy" (preset names, an object of policy fields, or false to leave its connections alone)');
  const out: { -readonly [K in keyof Rule]: Rule[K] } = {
    name: (r.name as string | undefined) ?? `rules[${index}]`,
    policy: r.policy === false ? false : policyOf(`${where}.policy`, r.policy, seen),
  };
  if (r.direction !== undefined) out.direction = r.direction as Direction;
  if (r.port !== undefined) out.port = list(`${where}.port`, r.port, port);
  if (r.localPort !== undefined) out.localPort = list(`${where}.localPort`, r.localPort, port);
  if (r.host !== undefined) out.host = list(`${where}.host`, r.host, host);
  if (r.localAddress !== undefined) out.localAddress = list(`${where}.localAddress`, r.localAddress, host);
  return Object.freeze(out);
}

/** Whether `r` matches every connection of its direction (of both, when it names none). */
function catchAll(r: Rule): boolean {
  return r.port === undefined && r.host === undefined && r.localPort === undefined && r.localAddress === undefined;
}

/** Where the first catch-all rule of each kind is: of both directions, of opened, of accepted connections. */
type FirstCatchAll = Partial<Record<Direction | 'both', number>>;

/**
 * The position of the earliest catch-all that matches every connection a rule of `direction`
 * could: one of both directions, or, for a rule of one direction, one of that direction.
 */
function shadowOf(first: FirstCatchAll, direction: Direction | undefined): number | undefined {
  const same = direction === undefined ? undefined : first[direction];
  if (first.both === undefined || same === undefined) return first.both ?? same;
  return Math.min(first.both, same);
}

/** What a non-regular file is, in words. */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * The rules file's text. Opened without blocking (a FIFO would wait for a writer forever),
 * refused unless it is a regular file (a directory, a FIFO, /dev/zero, which reads forever), and
 * read up to {@link CONFIG_MAX_BYTES}.
 */
function readConfigFile(where: string, file: string): string {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    return fail(where, `cannot be read: ${(err as Error).message}`, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) fail(where, `is ${fileKind(st)}, not a regular file: give the path of a JSON rules file`);
    const tooBig = () => fail(where, `is larger than ${CONFIG_MAX_BYTES / 1024 / 1024} MiB (${CONFIG_MAX_BYTES} bytes), the most a rules file may hold`);
    if (st.size > CONFIG_MAX_BYTES) tooBig();
    // The size may change while it is read: read until the end, but never past the cap.
    const buf = Buffer.allocUnsafe(Math.min(CONFIG_MAX_BYTES + 1, st.size + 4096));
    let length = 0;
    let big = buf;
    for (;;) {
      if (length === big.length) {
        if (big.length > CONFIG_MAX_BYTES) tooBig();
        const grown = Buffer.allocUnsafe(Math.min(CONFIG_MAX_BYTES + 1, big.length * 2));
        big.copy(grown, 0, 0, length);
        big = grown;
      }
      let n: number;
      try {
        n = readSync(fd, big, length, big.length - length, null);
      } catch (err) {
        return fail(where, `cannot be read: ${(err as Error).message}`, err);
      }
      if (n === 0) break;
      length += n;
    }
    if (length > CONFIG_MAX_BYTES) tooBig();
    return big.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/**
 * JSON.parse, with a syntax error reported by line and column only: V8's message quotes the text
 * around the error, and the text may be anything the variable points at (`/etc/shadow`).
 */
function parseJson(where: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    const { offset, expected } = jsonSyntaxError(text);
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const column = offset - before.lastIndexOf('\n');
    // No `cause`: V8's error message holds the text.
    return fail(where, `is not valid JSON: ${expected} at line ${line}, column ${column}`);
  }
}

function fromFile(path: string, traceEnv: boolean | undefined, shutdownEnv: ShutdownConfig | undefined): RegisterConfig {
  const file = resolve(path);
  const where = `SOCKTUNE_CONFIG (${file})`;
  const data = parseJson(where, readConfigFile(where, file));
  if (typeof data !== 'object' || data === null || Array.isArray(data)) fail(where, `must hold a JSON object { "rules": [...], "policy": ..., "trace": ... }`);
  const d = data as Record<string, unknown>;
  for (const key of Object.keys(d)) {
    if (!fileKeys.includes(key)) fail(where, `has no field ${show(key)}; fields: ${fileKeys.join(', ')}${hint(key, fileKeys)}`);
  }
  if (d.trace !== undefined && typeof d.trace !== 'boolean') fail(`${where} trace`, `must be true or false; got ${show(d.trace)}`);
  if (d.rules !== undefined && !Array.isArray(d.rules)) fail(`${where} rules`, `must be a list of rules; got ${show(d.rules)}`);
  const seen = new Map<string, Policy>();
  const rules = ((d.rules as unknown[] | undefined) ?? []).map((r, i) => rule(`${where} rules[${i}]`, r, i, seen));
  if (d.policy !== undefined) {
    if (d.policy === false) fail(`${where} policy`, 'false is the default already (connections no rule matches are left alone); remove it');
    rules.push(Object.freeze({ name: 'default', policy: parsePolicy(`${where} policy`, d.policy) }));
  }
  if (rules.length === 0) fail(where, 'has neither "rules" nor a default "policy": it would change nothing');
  const names = new Set<string>();
  // The first catch-all of each kind so far: a rule after one that matches everything it could
  // match never applies (a mistake, not a choice). One pass: only the first of each kind matters.
  const first: FirstCatchAll = {};
  rules.forEach((r, i) => {
    if (names.has(r.name)) fail(`${where} rules[${i}].name`, `${show(r.name)} is used twice (names label each rule's guard)`);
    names.add(r.name);
    const shadow = shadowOf(first, r.direction);
    if (shadow !== undefined) {
      const what = r.name === 'default' ? 'the default "policy"' : `rules[${i}]`;
      fail(where, `${what} can never apply: rule ${show(rules[shadow].name)} before it matches every connection it could`);
    }
    if (catchAll(r)) first[r.direction ?? 'both'] ??= i;
  });
  const shutdown = shutdownEnv ?? (d.shutdown === undefined ? undefined : shutdownFrom(`${where} shutdown`, d.shutdown));
  return Object.freeze({
    source: `SOCKTUNE_CONFIG=${file}`,
    rules: Object.freeze(rules),
    trace: traceEnv ?? (d.trace as boolean | undefined) ?? false,
    ...(shutdown === undefined ? {} : { shutdown }),
  });
}

function traceFromEnv(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === '1') return true;
  if (value === '0') return false;
  return fail('SOCKTUNE_TRACE', `must be 1 or 0, exactly (1 on, 0 off); got ${show(value)}`);
}

/**
 * Reads the configuration from `env` (default `process.env`). Throws `ERR_SOCKTUNE_CONFIG` for
 * anything wrong or missing: an unknown preset or field (naming the one meant when the name is a
 * near miss), a value out of range, an unreadable file or one that is not a regular file of at most
 * {@link CONFIG_MAX_BYTES}, invalid JSON (placed by line and column, never quoted), a rule that
 * can never apply, both or neither of `SOCKTUNE_POLICY` and `SOCKTUNE_CONFIG`, `SOCKTUNE_TRACE`
 * other than exactly `1` or `0`.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): RegisterConfig {
  const trace = traceFromEnv(env.SOCKTUNE_TRACE);
  const shutdown = env.SOCKTUNE_SHUTDOWN === undefined ? undefined : shutdownFrom('SOCKTUNE_SHUTDOWN', env.SOCKTUNE_SHUTDOWN);
  const policy = env.SOCKTUNE_POLICY;
  const file = env.SOCKTUNE_CONFIG;
  if (policy !== undefined && file !== undefined) {
    fail('SOCKTUNE_POLICY and SOCKTUNE_CONFIG', 'are both set; use one (a config file sets its default policy in its "policy" field)');
  }
  if (file !== undefined) {
    if (file.trim() === '') fail('SOCKTUNE_CONFIG', 'is empty; set it to the path of a JSON rules file');
    return fromFile(file, trace, shutdown);
  }
  if (policy === undefined) {
    // No `where: ` prefix: the line socktune/register writes already names the module, and the message names both variables.
    throw socktuneError(
      CONFIG_ERROR,
      'neither SOCKTUNE_POLICY (e.g. gracefulHeartbeat) nor SOCKTUNE_CONFIG (a rules file) is set; set one, or stop loading socktune/register',
    );
  }
  const rules = Object.freeze([Object.freeze({ name: 'default', policy: policyFromEnv(policy) })]);
  return Object.freeze({ source: 'SOCKTUNE_POLICY', rules, trace: trace ?? false, ...(shutdown === undefined ? {} : { shutdown }) });
}

const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';
const isHex = (c: string | undefined) => c !== undefined && /^[0-9a-fA-F]$/.test(c);

/**
 * Where JSON.parse failed, and what the grammar wanted there, found by a scan of RFC 8259's grammar
 * (V8's own messages quote the text, and differ between Node versions). Iterative: a deeply
 * nested file cannot overflow the stack.
 */
function jsonSyntaxError(text: string): { offset: number; expected: string } {
  const n = text.length;
  let i = 0;
  const at = (expected: string) => ({ offset: i, expected: i >= n ? `the text ends where it expects ${expected}` : `expected ${expected}` });
  const skipSpace = () => {
    while (i < n && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  /** A string from its opening quote; what it wanted when it is not one. */
  const string = (): string | undefined => {
    i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return undefined;
      }
      if (c < 0x20) return 'a closing quote (a control character cannot be in a string; write it as \\n, \\t or \\uXXXX)';
      if (c === 0x5c) {
        i++;
        if (text[i] === 'u') {
          for (let k = 1; k <= 4; k++) {
            if (!isHex(text[i + k])) {
              i += k;
              return 'four hexadecimal digits after \\u';
            }
          }
          i += 5;
          continue;
        }
        if (i < n && '"\\/bfnrt'.includes(text[i])) {
          i++;
          continue;
        }
        return 'an escape (\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)';
      }
      i++;
    }
    return 'a closing quote';
  };
  const number = (): string | undefined => {
    if (text[i] === '-') i++;
    if (text[i] === '0') i++;
    else if (isDigit(text[i])) while (isDigit(text[i])) i++;
    else return 'a digit';
    if (text[i] === '.') {
      i++;
      if (!isDigit(text[i])) return 'a digit after the decimal point';
      while (isDigit(text[i])) i++;
    }
    if (text[i] === 'e' || text[i] === 'E') {
      i++;
      if (text[i] === '+' || text[i] === '-') i++;
      if (!isDigit(text[i])) return 'a digit in the exponent';
      while (isDigit(text[i])) i++;
    }
    return undefined;
  };
  const stack: string[] = [];
  let want: 'value' | 'key' | 'after' = 'value';
  let opened = false; // right after '{' or '[': the container may close at once
  for (;;) {
    skipSpace();
    const c = text[i];
    const top = stack[stack.length - 1];
    if (want === 'after') {
      if (top === undefined) return i >= n ? { offset: n, expected: 'nothing (the scan found no error)' } : at('the end of the text after the value');
      if (c === ',') {
        i++;
        want = top === '{' ? 'key' : 'value';
      } else if (c === (top === '{' ? '}' : ']')) {
        i++;
        stack.pop();
      } else {
        return at(top === '{' ? "',' or '}'" : "',' or ']'");
      }
      continue;
    }
    if (opened && c === (top === '{' ? '}' : ']')) {
      i++;
      stack.pop();
      opened = false;
      want = 'after';
      continue;
    }
    opened = false;
    if (want === 'key') {
      if (c !== '"') return at('a property name in double quotes');
      const e = string();
      if (e !== undefined) return at(e);
      skipSpace();
      if (text[i] !== ':') return at("':' after the property name");
      i++;
      want = 'value';
      continue;
    }
    if (c === '{' || c === '[') {
      stack.push(c);
      i++;
      want = c === '{' ? 'key' : 'value';
      opened = true;
      continue;
    }
    want = 'after';
    if (c === '"') {
      const e = string();
      if (e !== undefined) return at(e);
    } else if (c === '-' || isDigit(c)) {
      const e = number();
      if (e !== undefined) return at(e);
    } else {
      const literal = ['true', 'false', 'null'].find((l) => l[0] === c);
      if (literal === undefined) return at('a value (an object, array, string, number, true, false or null)');
      for (let k = 0; k < literal.length; k++, i++) if (text[i] !== literal[k]) return at(`'${literal}'`);
    }
  }
}
