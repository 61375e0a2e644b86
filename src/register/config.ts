/**
 * The configuration of `socktune/register`, read from the environment: `SOCKTUNE_POLICY` (one
 * policy for every connection), or `SOCKTUNE_CONFIG` (a JSON file of rules by direction, port and
 * host), and `SOCKTUNE_TRACE`. Everything is validated before the application starts; a mistake
 * is an error with code `ERR_SOCKTUNE_CONFIG` naming the variable, file and field, never ignored.
 * @module
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { inspect } from 'node:util';
import { socktuneError } from '../errors.js';
import { compose, presets, type Policy, type PolicyOverrides } from '../policy/presets.js';

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
}

const presetNames = Object.keys(presets) as Array<keyof typeof presets>;
const ruleKeys = ['name', 'direction', 'port', 'host', 'localPort', 'localAddress', 'policy'];
const fileKeys = ['policy', 'rules', 'trace'];

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
    if (!(presetNames as string[]).includes(name)) fail(where, `unknown preset ${show(name)}; presets: ${presetNames.join(', ')}`);
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
  let spec: unknown;
  try {
    spec = JSON.parse(trimmed);
  } catch (err) {
    fail(where, `is not valid JSON (${(err as Error).message})`, err);
  }
  return parsePolicy(where, spec);
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

function rule(where: string, value: unknown, index: number): Rule {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(where, `must be an object; got ${show(value)}`);
  const r = value as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    if (!ruleKeys.includes(key)) fail(where, `has no field ${show(key)}; rule fields: ${ruleKeys.join(', ')}`);
  }
  if (r.name !== undefined && (typeof r.name !== 'string' || r.name === '')) fail(`${where}.name`, `must be a non-empty string; got ${show(r.name)}`);
  if (r.direction !== undefined && r.direction !== 'opened' && r.direction !== 'accepted') {
    fail(`${where}.direction`, `must be "opened" or "accepted"; got ${show(r.direction)}`);
  }
  if (!('policy' in r)) fail(where, 'has no "policy" (preset names, an object of policy fields, or false to leave its connections alone)');
  const out: { -readonly [K in keyof Rule]: Rule[K] } = {
    name: (r.name as string | undefined) ?? `rules[${index}]`,
    policy: r.policy === false ? false : parsePolicy(`${where}.policy`, r.policy),
  };
  if (r.direction !== undefined) out.direction = r.direction as Direction;
  if (r.port !== undefined) out.port = list(`${where}.port`, r.port, port);
  if (r.localPort !== undefined) out.localPort = list(`${where}.localPort`, r.localPort, port);
  if (r.host !== undefined) out.host = list(`${where}.host`, r.host, host);
  if (r.localAddress !== undefined) out.localAddress = list(`${where}.localAddress`, r.localAddress, host);
  return Object.freeze(out);
}

/** Whether `r` matches every connection of `direction` (of both directions, when undefined). */
function catchAll(r: Rule, direction?: Direction): boolean {
  return r.port === undefined && r.host === undefined && r.localPort === undefined && r.localAddress === undefined &&
    (r.direction === undefined || r.direction === direction);
}

function fromFile(path: string, traceEnv: boolean | undefined): RegisterConfig {
  const file = resolve(path);
  const where = `SOCKTUNE_CONFIG (${file})`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return fail(where, `cannot be read: ${(err as Error).message}`, err);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return fail(where, `is not valid JSON (${(err as Error).message})`, err);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) fail(where, `must hold a JSON object { "rules": [...], "policy": ..., "trace": ... }`);
  const d = data as Record<string, unknown>;
  for (const key of Object.keys(d)) {
    if (!fileKeys.includes(key)) fail(where, `has no field ${show(key)}; fields: ${fileKeys.join(', ')}`);
  }
  if (d.trace !== undefined && typeof d.trace !== 'boolean') fail(`${where} trace`, `must be true or false; got ${show(d.trace)}`);
  if (d.rules !== undefined && !Array.isArray(d.rules)) fail(`${where} rules`, `must be a list of rules; got ${show(d.rules)}`);
  const rules = ((d.rules as unknown[] | undefined) ?? []).map((r, i) => rule(`${where} rules[${i}]`, r, i));
  if (d.policy !== undefined) {
    if (d.policy === false) fail(`${where} policy`, 'false is the default already (connections no rule matches are left alone); remove it');
    rules.push(Object.freeze({ name: 'default', policy: parsePolicy(`${where} policy`, d.policy) }));
  }
  if (rules.length === 0) fail(where, 'has neither "rules" nor a default "policy": it would change nothing');
  const names = new Set<string>();
  rules.forEach((r, i) => {
    if (names.has(r.name)) fail(`${where} rules[${i}].name`, `${show(r.name)} is used twice (names label each rule's guard)`);
    names.add(r.name);
    // A rule after one that matches everything it could match never applies: a mistake, not a choice.
    const shadow = rules.slice(0, i).find((earlier) => catchAll(earlier, r.direction));
    if (shadow !== undefined) {
      const what = r.name === 'default' ? 'the default "policy"' : `rules[${i}]`;
      fail(where, `${what} can never apply: rule ${show(shadow.name)} before it matches every connection it could`);
    }
  });
  return Object.freeze({ source: `SOCKTUNE_CONFIG=${file}`, rules: Object.freeze(rules), trace: traceEnv ?? (d.trace as boolean | undefined) ?? false });
}

function traceFromEnv(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return fail('SOCKTUNE_TRACE', `must be 1 or 0 (true or false); got ${show(value)}`);
}

/**
 * Reads the configuration from `env` (default `process.env`). Throws `ERR_SOCKTUNE_CONFIG` for
 * anything wrong or missing: an unknown preset or field, a value out of range, unreadable or
 * invalid JSON, both or neither of `SOCKTUNE_POLICY` and `SOCKTUNE_CONFIG`.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): RegisterConfig {
  const trace = traceFromEnv(env.SOCKTUNE_TRACE);
  const policy = env.SOCKTUNE_POLICY;
  const file = env.SOCKTUNE_CONFIG;
  if (policy !== undefined && file !== undefined) {
    fail('SOCKTUNE_POLICY and SOCKTUNE_CONFIG', 'are both set; use one (a config file sets its default policy in its "policy" field)');
  }
  if (file !== undefined) {
    if (file.trim() === '') fail('SOCKTUNE_CONFIG', 'is empty; set it to the path of a JSON rules file');
    return fromFile(file, trace);
  }
  if (policy === undefined) {
    fail('socktune/register', 'is loaded but neither SOCKTUNE_POLICY (e.g. gracefulHeartbeat) nor SOCKTUNE_CONFIG (a rules file) is set');
  }
  const rules = Object.freeze([Object.freeze({ name: 'default', policy: policyFromEnv(policy) })]);
  return Object.freeze({ source: 'SOCKTUNE_POLICY', rules, trace: trace ?? false });
}
