// The policy checker's thread: registers tsx for this thread (no build step), then runs the
// TypeScript worker. See policy-compiler.ts.
import { register } from 'tsx/esm/api';

register();
await import('./policy-worker.ts');
