import type { StoredEvent } from '../store/event-store.ts';
import { compilePolicySet, type CompiledPolicySet, type PolicySetSource } from './policy-set.ts';

export const POLICY_STREAM_TYPE = 'policy';
export const POLICY_STREAM_ID = `${POLICY_STREAM_TYPE}/current`;
export const POLICY_PUBLISHED = 'PolicySetPublished';

/** The set a `PolicySetPublished` event carries, with its version; null for any other event. */
function published(e: StoredEvent): { source: PolicySetSource; version: number } | null {
  if (e.streamType !== POLICY_STREAM_TYPE || e.type !== POLICY_PUBLISHED) return null;
  const { schema, policies, aliases } = e.data as PolicySetSource;
  return { source: { schema, policies, ...(aliases ? { aliases } : {}) }, version: e.version };
}

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
    this.latest = published(e) ?? this.latest;
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

/**
 * Every published version and the position it took effect at (SPEC §8 replay): which version
 * was in force at any position, and each version compiled on first use.
 */
export class PolicyHistory {
  private readonly published: { position: number; version: number; source: PolicySetSource; sha256: string }[] = [];
  private readonly compiled = new Map<number, CompiledPolicySet | null>();

  apply(e: StoredEvent): void {
    const p = published(e);
    if (p) this.published.push({ position: e.position, ...p, sha256: (e.data as { sha256?: string }).sha256 ?? '' });
  }

  /** The version in force at `position` (0: none published yet). */
  versionAt(position: number): number {
    let version = 0;
    for (const p of this.published) {
      if (p.position > position) break;
      version = p.version;
    }
    return version;
  }

  /** Where a version was published, and its digest; undefined if it never was. */
  describe(version: number): { version: number; position: number; sha256: string } | undefined {
    const p = this.published.find((x) => x.version === version);
    return p && { version: p.version, position: p.position, sha256: p.sha256 };
  }

  /** The version compiled as a node compiles it; null when it cannot be (a node denies everything then). */
  set(version: number): CompiledPolicySet | null {
    if (!this.compiled.has(version)) {
      const p = this.published.find((x) => x.version === version);
      let set: CompiledPolicySet | null = null;
      try {
        set = p ? compilePolicySet(p.source, p.version) : null;
      } catch {
        set = null;
      }
      this.compiled.set(version, set);
    }
    return this.compiled.get(version)!;
  }
}
