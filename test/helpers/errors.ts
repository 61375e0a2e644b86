/** Runs `fn` and returns what it threw; fails the test when it throws nothing. */
export function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}
