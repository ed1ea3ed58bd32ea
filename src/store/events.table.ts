import type { ColumnType, Generated } from 'kysely';

export interface EventsTable {
  position: ColumnType<string, string | number, never>;
  stream_id: string;
  stream_type: string;
  version: number;
  type: string;
  data: ColumnType<unknown, string, never>;
  metadata: ColumnType<unknown, string, never>;
  recorded_at: ColumnType<Date, Date | string, never>;
  idempotency_key: string | null;
  prev_hash: string;
  hash: string;
  transaction_id: Generated<string>;
}

export interface Database {
  events: EventsTable;
}
