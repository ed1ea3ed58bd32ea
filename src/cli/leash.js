#!/usr/bin/env node
// The `leash` executable: runs the TypeScript sources through tsx (no build step). tsx is
// registered in this process, so `leash` is one process: a signal sent to it reaches the node.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('./main.ts');
runCli(process.argv);
