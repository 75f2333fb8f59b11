import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    globalSetup: ['test/support/global-mint.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Files share one real mint; running them one at a time keeps mint load and logs readable.
    fileParallelism: false,
  },
});
