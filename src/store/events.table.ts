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

export interface DecisionsTable {
  seq: ColumnType<string, string | number, never>;
  id: string;
  node_id: string;
  recorded_at: ColumnType<Date, Date | string, never>;
  request: ColumnType<unknown, string, never>;
  decision: boolean;
  layer: string;
  code: string | null;
  reasons: ColumnType<unknown, string, never>;
  policy_version: number;
  log_position: ColumnType<string, string | number, never>;
  prev_hash: string;
  hash: string;
  shadow: ColumnType<unknown, string | null, never>;
}

export interface AuditArchiveTable {
  chain: 'events' | 'decisions';
  first: ColumnType<string, string | number, never>;
  last: ColumnType<string, string | number, never>;
  prev_hash: string;
  last_hash: string;
  records: number;
  file: string;
  sha256: string;
  archived_at: Generated<Date>;
}

/** Client assertions' `jti`s the token endpoint accepted, until they expire (migration 0008). */
export interface ClientAssertionJtisTable {
  agent_id: string;
  jti: string;
  expires_at: ColumnType<Date, Date | string, Date | string>;
}

export interface Database {
  events: EventsTable;
  decisions: DecisionsTable;
  audit_archive: AuditArchiveTable;
  client_assertion_jtis: ClientAssertionJtisTable;
  deployment: { one: boolean; id: string; created_at: Date };
}
