/**
 * The options both exporters take (the Prometheus collector and the OpenTelemetry instruments),
 * checked once, here: own properties, each read once, unknown names refused.
 * @module
 */
import { invalidArgType, invalidArgValue, outOfRange } from '../errors.js';
import { Guard } from '../guard/guard.js';
import type { PoolCounters } from './table.js';

/** Pools by name, each with a numeric `retried` (and `staleDropped`, when it has one), read at every collection. */
export function validPools(name: string, pools: unknown): Record<string, PoolCounters> {
  if (typeof pools !== 'object' || pools === null || Array.isArray(pools)) throw invalidArgType(name, 'an object of pools by name', pools);
  const named: Record<string, unknown> = { ...pools };
  for (const [key, p] of Object.entries(named)) {
    if (typeof p !== 'object' || p === null || typeof (p as PoolCounters).retried !== 'number') {
      throw invalidArgType(`${name}.${key}`, 'a pool with a numeric retried count (createAgent, createDispatcher)', p);
    }
  }
  return named as Record<string, PoolCounters>;
}

/**
 * `options` as an own copy with the shared fields checked (`namespace`, `process`, `audit`,
 * `closes`, `auditMaxAge`, `guards`, `pools`; `guards` and `pools` copied too) and no name outside
 * `known`; the exporter checks its own fields on the copy.
 */
export function exportOptions(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgType('options', 'of type object', options);
  const o: Record<string, unknown> = { ...options };
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) throw invalidArgValue('options', key, `has no option '${key}'; known: ${known.join(', ')}`);
  }
  for (const key of ['namespace', 'process', 'audit', 'closes']) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') throw invalidArgType(`options.${key}`, 'of type boolean', o[key]);
  }
  const { auditMaxAge, guards } = o;
  if (auditMaxAge !== undefined) {
    if (typeof auditMaxAge !== 'number') throw invalidArgType('options.auditMaxAge', 'of type number', auditMaxAge);
    if (!Number.isInteger(auditMaxAge) || auditMaxAge < 0 || auditMaxAge > 2 ** 31 - 1)
      throw outOfRange('options.auditMaxAge', 'an integer >= 0 and <= 2147483647', auditMaxAge);
  }
  if (guards !== undefined) {
    if (typeof guards !== 'object' || guards === null || Array.isArray(guards)) throw invalidArgType('options.guards', 'an object of Guards by name', guards);
    const named: Record<string, unknown> = { ...guards };
    for (const [name, g] of Object.entries(named)) {
      if (!(g instanceof Guard)) throw invalidArgType(`options.guards.${name}`, 'an instance of Guard', g);
    }
    o.guards = named;
  }
  if (o.pools !== undefined) o.pools = validPools('options.pools', o.pools);
  return o;
}
