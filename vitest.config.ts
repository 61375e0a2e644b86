import { defineConfig } from 'vitest/config';

const ci = process.env.CI === 'true' || process.env.CI === '1';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file gets its own process: the addon, namespaces and strace children stay apart.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // In CI the counts are also written as JSON for .ci/run's closing line.
    reporters: ci ? ['default', 'json'] : ['default'],
    outputFile: ci ? { json: process.env.SOCKTUNE_TEST_RESULTS ?? '.test-results.json' } : undefined,
  },
});
