import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export const migrationsDir = fileURLToPath(new URL('../../migrations', import.meta.url));

/**
 * Loads `migrations/NNNN_name.ts` with this module's own `import()`, so the files run
 * wherever the app runs (tsx for `leash`, vite for tests) without a build step.
 */
class MigrationFolder implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    const files = readdirSync(migrationsDir).filter((f) => /^\d{4}_[\w-]+\.ts$/.test(f)).sort();
    const entries = await Promise.all(
      files.map(async (f) => [f.replace(/\.ts$/, ''), (await import(pathToFileURL(join(migrationsDir, f)).href)) as Migration] as const),
    );
    return Object.fromEntries(entries);
  }
}

/** Brings the schema up to date; safe on every start and from several nodes at once (kysely locks). */
export async function migrateToLatest(db: Kysely<any>): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new MigrationFolder() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`migration ${failed ?? '(unknown)'} failed: ${(error as Error).message}`, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** The schema brought up to `name` and no further (tests of an upgrade from an earlier version). */
export async function migrateTo(db: Kysely<any>, name: string): Promise<void> {
  const { error } = await new Migrator({ db, provider: new MigrationFolder() }).migrateTo(name);
  if (error) throw new Error(`migration to ${name} failed: ${(error as Error).message}`, { cause: error });
}
