// One of several processes racing for data directory locks. For each line on stdin (a data
// directory) it tries to take that directory's lock at once and answers one line:
// "won <dir>", "refused <dir> <owner pid>" or "error <dir> <message>". What it wins it holds
// until it ends, so a late racer cannot win a lock legitimately released in between.
import { createInterface } from 'node:readline';
import { acquireDataDirLock, DataDirInUseError } from '../../src/store/data-dir-lock.ts';

process.stdout.write('ready\n');
for await (const dir of createInterface({ input: process.stdin })) {
  try {
    acquireDataDirLock(dir, 'racer');
    process.stdout.write(`won ${dir}\n`);
  } catch (err) {
    process.stdout.write(err instanceof DataDirInUseError ? `refused ${dir} ${err.owner.pid}\n` : `error ${dir} ${(err as Error).message}\n`);
  }
}
