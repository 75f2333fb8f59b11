import { defineConfig } from 'vitest/config';

// The fast unit tests alone: no mint, no PostgreSQL, no server, no child process. Mutation
// testing (stryker.config.json) runs them once per mutant, so anything slower would not fit.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    // These start an HTTP server or a child process.
    exclude: ['test/unit/anthropic-upstream.test.ts', 'test/unit/config.test.ts', 'test/unit/log.test.ts'],
    testTimeout: 10_000,
  },
});
