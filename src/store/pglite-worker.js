// The embedded database's thread: registers tsx for this thread (no build step), then runs
// the TypeScript worker. See pglite-thread.ts.
import { register } from 'tsx/esm/api';

register();
await import('./pglite-worker.ts');
