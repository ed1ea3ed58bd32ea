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
  /** The log's reading order (a sequence since migration 0013; not hashed on a node's chain). */
  seq: ColumnType<string, string | number | undefined, never>;
  /** The record's number in its node's chain; null on the shared chain from before 0013. */
  chain_seq: ColumnType<string | null, string | number | null | undefined, never>;
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
  /** A decisions range's chain: the node's id, or '' for the shared chain from before migration 0013. */
  node_id: ColumnType<string, string | undefined, never>;
  first: ColumnType<string, string | number, never>;
  last: ColumnType<string, string | number, never>;
  prev_hash: string;
  last_hash: string;
  records: number;
  file: string;
  sha256: string;
  archived_at: Generated<Date>;
}

/** Each node's decision-chain head, at a fixed interval, in one shared hash chain (migration 0013). */
export interface DecisionAnchorsTable {
  seq: ColumnType<string, string | number, never>;
  node_id: string;
  chain_seq: ColumnType<string, string | number, never>;
  chain_hash: string;
  recorded_at: ColumnType<Date, Date | string, never>;
  prev_hash: string;
  hash: string;
}

/** Client assertions' `jti`s the token endpoint accepted, until they expire (migration 0008). */
export interface ClientAssertionJtisTable {
  agent_id: string;
  jti: string;
  expires_at: ColumnType<Date, Date | string, Date | string>;
}

/** Where each security event stream's delivery stands, and who pushes it (migration 0012). */
export interface SsfDeliveriesTable {
  stream_id: string;
  position: ColumnType<string, string | number, string | number>;
  owner: string | null;
  lease_until: ColumnType<Date | null, Date | string | null, Date | string | null>;
}

export interface SsfAcksTable {
  stream_id: string;
  position: ColumnType<string, string | number, never>;
}

export interface SsfPushCredentialsTable {
  id: string;
  stream_id: string;
  authorization_header: string;
}

export interface Database {
  events: EventsTable;
  decisions: DecisionsTable;
  audit_archive: AuditArchiveTable;
  decision_anchors: DecisionAnchorsTable;
  client_assertion_jtis: ClientAssertionJtisTable;
  ssf_deliveries: SsfDeliveriesTable;
  ssf_acks: SsfAcksTable;
  ssf_push_credentials: SsfPushCredentialsTable;
  deployment: { one: boolean; id: string; created_at: Date };
}
