// A replay worker thread: registers tsx for this thread (no build step), then runs the
// TypeScript worker. See replay-parallel.ts.
import { register } from 'tsx/esm/api';

register();
await import('./replay-worker.ts');
