import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One module graph per worker, not per file: loading it for each of 70 files was 90 s of
    // the workers' CPU. Files still run one at a time in a worker; what is process-wide
    // (src/tokens/settings.ts) each node sets when it starts, and tests that read it reset it.
    isolate: false,
    // Two files at a time on two cores (vitest's default is one fewer than the cores): most
    // files wait on servers and child processes they start, so one alone leaves a core idle.
    maxWorkers: 2,
  },
});
