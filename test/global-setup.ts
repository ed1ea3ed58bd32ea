import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { connect } from '../src/store/connect.ts';
import { startNats, startPostgres } from './support/servers.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the throwaway PostgreSQL server; tests create their own databases. */
    postgresUrl: string;
    natsUrl: string;
    /** An embedded data directory PGlite has created (initdb) and closed; nothing else is in it. */
    pgliteTemplate: string;
    /** A directory of this run's own, removed when it ends: the copies of the template go there (40 MB each). */
    runDir: string;
  }
}

/**
 * A new PGlite database is created by running initdb in WebAssembly: some 5 s of CPU each
 * time, and the suites make dozens. The template is created once, by the code a node runs
 * (connect on an empty data directory), and closed; freshPglite() copies it, as Postgres's
 * CREATE DATABASE copies template1. Its log is empty and unmigrated: every node and store
 * still migrates it itself. The tests of a first start on a fresh directory (the CLI, the
 * README, the signal tests) run `leash serve` on an empty directory as before.
 */
async function pgliteTemplate(): Promise<{ dir: string; remove(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'leash-pglite-template-'));
  const connection = await connect({ kind: 'pglite', dataDir: dir });
  await connection.db.destroy();
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export default async function setup(project: TestProject) {
  const [postgres, nats, template] = await Promise.all([startPostgres(), startNats(), pgliteTemplate()]);
  const runDir = mkdtempSync(join(tmpdir(), 'leash-test-run-'));
  project.provide('postgresUrl', postgres.url);
  project.provide('natsUrl', nats.url);
  project.provide('pgliteTemplate', template.dir);
  project.provide('runDir', runDir);
  return async () => {
    template.remove();
    rmSync(runDir, { recursive: true, force: true });
    await Promise.all([postgres.stop(), nats.stop()]);
  };
}
