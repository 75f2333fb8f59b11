// Mutation testing of the pure money code: what the unit tests would let through if it changed.
// `npm run mutation`; the score per file and every surviving mutant are in the README (Testing).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.unit.config.ts' },
  coverageAnalysis: 'perTest',
  // The machine has 2 cores and is shared: one mutant at a time.
  concurrency: 1,
  timeoutMS: 10_000,
  mutate: [
    'src/engine/pricing.ts',
    'src/engine/tokens.ts',
    'src/formats/openai.ts',
    'src/formats/prompt.ts',
    // pickPlan, swapFee and meltFee; the rest of the file is types and the Ledger interface.
    'src/ledger/ledger.ts:361-412',
    // isLocked: the rest of p2pk.ts reads keys from disk or is reached only through a live mint.
    'src/cashu/p2pk.ts:70-72',
  ],
  // TypeScript 7 has no JavaScript API for Stryker to rewrite a tsconfig with, and the sandbox
  // does not type check (vitest strips types), so tsconfig files stay out of it.
  ignorePatterns: ['dist', 'data', 'bench', 'reports', '.ci', '.cache', '.venv', '.venv-relay', '.venv-nostr-sdk', '.wallet', 'models', '.test-data', 'tsconfig*.json'],
  reporters: ['clear-text', 'progress', 'json'],
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
