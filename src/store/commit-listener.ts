import pg from 'pg';
import { EVENTS_CHANNEL } from './event-store.ts';

/**
 * LISTENs for the `pg_notify` every append transaction sends, so a node hears other nodes'
 * commits at once instead of on its next poll. Best effort: if the connection drops it
 * reconnects with backoff, and the follower's poll keeps the view correct meanwhile.
 */
export function listenForCommits(url: string, onCommit: () => void): { close(): Promise<void> } {
  let client: pg.Client | null = null;
  let closed = false;
  let retry: NodeJS.Timeout | null = null;
  let backoff = 100;

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString: url });
    c.on('notification', () => onCommit());
    c.on('error', () => reconnect(c));
    c.on('end', () => reconnect(c));
    try {
      await c.connect();
      await c.query(`LISTEN ${EVENTS_CHANNEL}`);
      if (closed) return void c.end().catch(() => {});
      client = c;
      backoff = 100;
      onCommit(); // anything committed while we were not listening
    } catch {
      reconnect(c);
    }
  };

  const reconnect = (c: pg.Client) => {
    if (client === c) client = null;
    c.end().catch(() => {});
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = null;
      void connect();
    }, backoff);
    retry.unref();
    backoff = Math.min(backoff * 2, 5000);
  };

  void connect();
  return {
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      await client?.end().catch(() => {});
      client = null;
    },
  };
}
