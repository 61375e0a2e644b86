// Scenario 8: the addon loads and works in 4 worker threads at once (per-environment state).
import { afterEach, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { configure, readOptions } from '../src/index.js';
import { closeAll, pair } from './helpers/sockets.js';

afterEach(closeAll);

describe('worker threads', () => {
  it('4 workers and the main thread configure their own sockets at the same time', async () => {
    const rounds = 50;
    const workers = [1, 2, 3, 4].map((n) => new Worker(new URL('./fixtures/worker.mjs', import.meta.url), { workerData: { base: n * 100, rounds } }));
    const results = workers.map((w) => once(w, 'message'));
    const exited = workers.map((w) => once(w, 'exit'));
    const { client } = await pair();
    for (let i = 0; i < rounds; i++) {
      configure(client, { userTimeout: 9000 + i });
      expect(readOptions(client).userTimeout).toBe(9000 + i);
    }
    for (const [r] of await Promise.all(results)) expect(r).toEqual(Array(rounds).fill(true));
    const exits = await Promise.all(exited);
    expect(exits.map(([code]) => code)).toEqual([0, 0, 0, 0]);
  });

  it('a worker can be terminated while the addon is loaded, and another started after it', async () => {
    for (let i = 0; i < 3; i++) {
      const w = new Worker(new URL('./fixtures/worker.mjs', import.meta.url), { workerData: { base: 500 + i, rounds: 2 } });
      const [r] = await once(w, 'message');
      expect(r).toEqual([true, true]);
      await w.terminate();
    }
  });
});
