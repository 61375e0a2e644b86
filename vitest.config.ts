import { defineConfig } from 'vitest/config';

const ci = process.env.CI === 'true' || process.env.CI === '1';
// The fast lane (SOCKTUNE_TESTS=fast) leaves out test/slow/: the long scenarios (minute-long dead-peer
// controls, thousands of racing requests, deploys under load, real servers per recipe). CI runs them
// once, on the system Node; the other Node majors run the fast lane.
const fast = process.env.SOCKTUNE_TESTS === 'fast';

export default defineConfig({
  // The CommonJS modules of src/ (.cts: the engines check, the require() entries) are TypeScript too.
  oxc: { include: /\.([cm]?ts|[jt]sx)$/ },
  test: {
    include: fast ? ['test/*.test.ts'] : ['test/**/*.test.ts'],
    // Each file gets its own process: the addon, namespaces and strace children stay apart.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // In CI the counts are also written as JSON for .ci/run's closing line.
    reporters: ci ? ['default', 'json'] : ['default'],
    outputFile: ci ? { json: process.env.SOCKTUNE_TEST_RESULTS ?? '.test-results.json' } : undefined,
  },
});
