import type { StoredEvent } from '../store/event-store.ts';
import { compilePolicySet, type CompiledPolicySet, type PolicySetSource } from './policy-set.ts';

export const POLICY_STREAM_TYPE = 'policy';
export const POLICY_STREAM_ID = `${POLICY_STREAM_TYPE}/current`;
export const POLICY_PUBLISHED = 'PolicySetPublished';

/**
 * The policy set in force, folded from `PolicySetPublished` events. Compiling is deferred to
 * first use, so catching up through many versions compiles only the last. A decision takes
 * `current()` once and uses that object throughout: nodes switch versions atomically.
 */
export class PolicyView {
  private latest: { source: PolicySetSource; version: number } | null = null;
  private compiled: CompiledPolicySet | null = null;
  private failedVersion = 0;
  /** Set when the latest published set cannot be compiled here (e.g. after a Cedar upgrade). */
  error: string | null = null;

  apply(e: StoredEvent): void {
    if (e.streamType !== POLICY_STREAM_TYPE || e.type !== POLICY_PUBLISHED) return;
    const { schema, policies, aliases } = e.data as PolicySetSource;
    this.latest = { source: { schema, policies, ...(aliases ? { aliases } : {}) }, version: e.version };
  }

  get version(): number {
    return this.latest?.version ?? 0;
  }

  /** The compiled set in force, or null when none is published or it cannot be compiled. */
  current(): CompiledPolicySet | null {
    if (!this.latest || this.failedVersion === this.latest.version) return null;
    if (this.compiled?.version !== this.latest.version) {
      try {
        this.compiled = compilePolicySet(this.latest.source, this.latest.version);
        this.error = null;
      } catch (err) {
        // Keep deciding with nothing rather than with a stale set: every request is denied.
        this.compiled = null;
        this.failedVersion = this.latest.version;
        this.error = `policy set version ${this.latest.version} cannot be loaded: ${(err as Error).message}`;
        return null;
      }
    }
    return this.compiled;
  }
}
