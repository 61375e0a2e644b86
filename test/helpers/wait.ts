// Waiting in tests, bounded in time. A condition the test asserts is polled by vitest itself, so a
// failure names the value it last saw: `await expect.poll(() => value, { timeout }).toBe(wanted)` in
// a test, `await vi.waitFor(() => expect(value).toBe(wanted), { timeout })` in a hook or a helper
// (expect.poll works only inside a test). A pause is Node's `setTimeout` from node:timers/promises.
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `check` every `every` ms until it holds; whether it did within `within` ms (for waits the test reports on or judges afterwards). */
export async function until(check: () => boolean | Promise<boolean>, within: number, every = 50): Promise<boolean> {
  const start = performance.now();
  for (;;) {
    if (await check()) return true;
    if (performance.now() - start > within) return false;
    await sleep(every);
  }
}
