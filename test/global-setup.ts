import type { TestProject } from 'vitest/node';
import { startNats, startPostgres } from './support/servers.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the throwaway PostgreSQL server; tests create their own databases. */
    postgresUrl: string;
    natsUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const [postgres, nats] = await Promise.all([startPostgres(), startNats()]);
  project.provide('postgresUrl', postgres.url);
  project.provide('natsUrl', nats.url);
  return async () => {
    await Promise.all([postgres.stop(), nats.stop()]);
  };
}
