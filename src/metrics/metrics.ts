import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

// What a node tells Prometheus (`GET /metrics`): decisions by outcome and layer and how long
// they take, the durable writes under them, fences and the broadcast, tokens, the detectors'
// findings and the approvals waiting, and Node's own process metrics. One registry per node
// (a test process runs several). What the hot path does per decision is two increments on
// children made once; everything else is read when Prometheus scrapes.

/** Seconds: from a tenth of a millisecond (a cached in-process decision) to a few seconds (a stuck fence). */
const BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export interface MetricSources {
  nodesLive: () => number;
  approvalsPending: () => number;
}

/** A verified-token cache's hits and misses so far (counted where they happen, read at scrape). */
export interface CacheCounts {
  readonly hits: number;
  readonly misses: number;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly decisions = new Counter({ name: 'leash_decisions_total', help: 'Decisions made on this node, by outcome and deciding layer.', labelNames: ['decision', 'layer'] as const, registers: [this.registry] });
  private readonly byOutcome = new Map<string, Counter.Internal>();
  readonly decisionSeconds = histogram(this.registry, 'leash_decision_duration_seconds', 'Time to decide one request (token, details, every layer), before it is recorded.');
  readonly decisionLogCommitSeconds = histogram(this.registry, 'leash_decision_log_commit_seconds', 'Time from a decision handed to the decision log to its record being durable.');
  readonly eventAppendSeconds = histogram(this.registry, 'leash_event_append_seconds', 'Time for an append to the event log to be durable (group-committed).');
  readonly fenceSeconds = histogram(this.registry, 'leash_fence_seconds', 'Time for a fence: every live node confirming it applied a change.');
  readonly broadcastLagSeconds = histogram(this.registry, 'leash_broadcast_lag_seconds', 'From an event committed on another node to its arrival here over the broadcast.');
  readonly tokensIssued = new Counter({ name: 'leash_tokens_issued_total', help: 'Access tokens this node issued at POST /oauth/token.', registers: [this.registry] });
  /** The token caches this node's routes decide with (authzen.ts adds its own). */
  readonly tokenCaches: CacheCounts[] = [];
  readonly setsDelivered = new Counter({ name: 'leash_ssf_sets_delivered_total', help: 'Security events this node pushed to a receiver that took them.', registers: [this.registry] });
  readonly anomalies = new Counter({ name: 'leash_anomalies_total', help: 'Findings this node recorded, by detector.', labelNames: ['detector'] as const, registers: [this.registry] });

  /** `enabled` false (LEASH_METRICS=off): nothing is kept, `decided` does nothing and the hooks are not wired (node.ts). */
  constructor(readonly enabled: boolean, sources: MetricSources) {
    if (!enabled) return;
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'leash_nodes_live', help: 'Nodes this node counts in its fences (itself included).', registers: [this.registry], collect() { this.set(sources.nodesLive()); } });
    new Gauge({ name: 'leash_approvals_pending', help: 'Approvals waiting for an answer.', registers: [this.registry], collect() { this.set(sources.approvalsPending()); } });
    const reading = (name: string, help: string, read: () => number) => {
      let seen = 0;
      new Counter({ name, help, registers: [this.registry], collect() {
        const now = read();
        this.inc(Math.max(0, now - seen));
        seen = Math.max(seen, now);
      } });
    };
    const sum = (k: keyof CacheCounts) => this.tokenCaches.reduce((n, c) => n + c[k], 0);
    reading('leash_token_cache_hits_total', 'Agent tokens found in the verified-token cache (not verified again).', () => sum('hits'));
    reading('leash_token_cache_misses_total', 'Agent tokens not in the verified-token cache (verified).', () => sum('misses'));
  }

  decided(decision: boolean, layer: string, seconds: number): void {
    if (!this.enabled) return;
    const key = `${decision}\n${layer}`;
    let child = this.byOutcome.get(key);
    if (!child) this.byOutcome.set(key, (child = this.decisions.labels(decision ? 'allow' : 'deny', layer)));
    child.inc();
    this.decisionSeconds.observe(seconds);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function histogram(registry: Registry, name: string, help: string): Histogram {
  return new Histogram({ name, help, buckets: BUCKETS, registers: [registry] });
}
