import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts'],
    // Integration tests share one Temporal dev server and one PostgreSQL started in globalSetup.
    globalSetup: ['./test-support/global-setup.ts'],
    setupFiles: ['./test-support/fork-file.ts', './test-support/quiet-default-auditor.ts'],
    // A hung run fails in minutes, naming what hung, instead of at CI's 90-minute limit.
    reporters: ['default', './test-support/stall-watchdog.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
