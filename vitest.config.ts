import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    // Only our tests: .cache holds third-party sources (the compose plugin's Go modules).
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-mint.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Files share one real mint; running them one at a time keeps mint load and logs readable.
    fileParallelism: false,
    // The same suite runs on both ledger engines.
    projects: [
      { extends: true, test: { name: 'sqlite', env: { TEST_LEDGER: 'sqlite' } } },
      // Every file, the Nostr door's included, runs on both engines. (With `extends: true` vitest
      // adds a project's `include` to the root one, so the `test/*.e2e.test.ts` that stood here
      // never narrowed anything: it only read as if the DVM suite ran on SQLite alone.)
      { extends: true, test: { name: 'postgres', env: { TEST_LEDGER: 'postgres' } } },
    ],
  },
});
