import type { StoredEvent } from '../store/event-store.ts';

// What the nodes of a deployment say to each other (cluster.ts does the saying): committed
// events, heartbeats, confirmations, and the subjects they go on.

/**
 * The broadcast's subjects. A deployment's nodes talk under its own id (`leash.<deployment>.…`,
 * the id its database holds): two deployments on one NATS never take each other's events,
 * heartbeats or confirmations for their own.
 */
export const subjectsOf = (deployment?: string) => {
  const prefix = deployment ? `leash.${deployment}` : 'leash';
  return {
    events: `${prefix}.events`,
    nodes: `${prefix}.nodes`,
    /** Where a node's own commits are confirmed to it: only the committing node waits on them. */
    acks: (node: string) => `${prefix}.acks.${node}`,
  } as const;
};

/** The subjects of a cluster made without a deployment id (tests of the broadcast itself). */
export const SUBJECTS = subjectsOf();

/** Events travel inline up to this size; beyond it only their positions do (NATS' default limit is 1 MiB). */
export const MAX_INLINE_BYTES = 256 * 1024;

export interface EventsMessage {
  node: string;
  first: number;
  last: number;
  /** Where to confirm once applied (the committing node's ack subject). */
  replyTo?: string;
  /** Absent when too large to send: receivers read them from the log. */
  events?: (Omit<StoredEvent, 'at'> & { at: string })[];
}

export interface NodeMessage {
  kind: 'heartbeat' | 'applied' | 'leaving';
  node: string;
  position: number;
  /** The sender's staleness bound (heartbeats): a fence waits at least that long for it. */
  stalenessMs?: number;
  /** The policy version the sender decides with (heartbeats; see Cluster `awaitPolicy`). */
  policyVersion?: number;
}
