import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import type { FromThread, ToThread } from './pglite-thread.ts';

// The embedded database's own thread (see pglite-thread.ts): it opens PGlite on the data
// directory it is given and runs the statements it is sent, one at a time, in the order they
// come. Nothing here decides anything; it only carries statements and their answers.

const port = parentPort!;
const send = (message: FromThread) => port.postMessage(message);

/** An error as plain fields: a thread boundary keeps an Error's message and drops the rest (the SQLSTATE among them). */
function fields(err: unknown): { message: string; [field: string]: string } {
  const out: { message: string; [field: string]: string } = { message: String(err) };
  if (err && typeof err === 'object') {
    for (const [key, value] of Object.entries(err)) if (typeof value === 'string' || typeof value === 'number') out[key] = String(value);
    // The file system's errors carry only a name and an errno (WASI's numbering).
    const { message, name, errno } = err as { message?: unknown; name?: unknown; errno?: unknown };
    out.message = typeof message === 'string' && message ? message : `${String(name ?? 'error')}${errno === undefined ? '' : ` (errno ${String(errno)})`}`;
  }
  return out;
}

const { dataDir } = workerData as { dataDir: string | null };
let db: PGlite;
try {
  db = dataDir === null ? await PGlite.create() : await PGlite.create(dataDir);
  send({ kind: 'ready' });
} catch (err) {
  send({ kind: 'failed', error: fields(err) });
  process.exit(1);
}

port.on('message', (message: ToThread) => {
  if (message.kind === 'close') {
    void db.close().then(() => send({ kind: 'closed' }), (err: unknown) => send({ kind: 'failed', error: fields(err) }));
    return;
  }
  db.query(message.sql, message.params).then(
    (result) => send({ kind: 'result', id: message.id, rows: result.rows, affectedRows: result.affectedRows }),
    (err: unknown) => send({ kind: 'error', id: message.id, error: fields(err) }),
  );
});
