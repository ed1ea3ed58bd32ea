import type { StoredEvent } from '../store/event-store.ts';
import { checkOffThread } from './policy-compiler.ts';
import { checkPolicySet, compilePolicySet, prepareCompiled, type CheckedPolicySet, type CompiledPolicySet, type PolicySetSource } from './policy-set.ts';
import { releaseSource } from './preparsed-slots.ts';

export const POLICY_STREAM_TYPE = 'policy';
export const POLICY_STREAM_ID = `${POLICY_STREAM_TYPE}/current`;
export const POLICY_PUBLISHED = 'PolicySetPublished';

/** The set a `PolicySetPublished` event carries, with its version; null for any other event. */
function published(e: StoredEvent): { source: PolicySetSource; version: number } | null {
  if (e.streamType !== POLICY_STREAM_TYPE || e.type !== POLICY_PUBLISHED) return null;
  const { schema, policies, aliases } = e.data as PolicySetSource;
  return { source: { schema, policies, ...(aliases ? { aliases } : {}) }, version: e.version };
}

/** How a view checks a set: off this thread (the default), or any other way (tests). */
export type Check = (source: PolicySetSource) => Promise<CheckedPolicySet>;

/**
 * The policy set in force, folded from `PolicySetPublished` events. A new version is checked
 * off this thread and prepared, then put in force in one step: until then, decisions go on
 * with the version before it. Catching up through many versions compiles only the last. A
 * decision takes `current()` once and uses that object throughout.
 */
export class PolicyView {
  private latest: { source: PolicySetSource; version: number } | null = null;
  private compiled: CompiledPolicySet | null = null;
  /** The version in force: the compiled one, or the last that could not be compiled here. */
  private inForce = 0;
  private compiling: Promise<void> | null = null;
  /** Set when the latest published set cannot be compiled here (e.g. after a Cedar upgrade). */
  error: string | null = null;
  /** Told each time another version comes into force. */
  switched: ((version: number) => void) | null = null;
  /** How long the last switch took, from its event to in force, ms. */
  lastCompileMs = 0;

  /**
   * Set once the node serves. Before that nobody waits on its event loop, so the sets it folds
   * while starting are checked on it (no thread to start); after, off it.
   */
  serving = false;

  private readonly check: Check;

  constructor(check?: Check) {
    this.check = check ?? ((source) => (this.serving ? checkOffThread(source) : Promise.resolve().then(() => checkPolicySet(source))));
  }

  apply(e: StoredEvent): void {
    const p = published(e);
    if (!p) return;
    this.latest = p;
    this.compiling ??= this.compileLatest();
  }

  /** The latest version published (in force, or being compiled). */
  get version(): number {
    return this.latest?.version ?? 0;
  }

  /** The version decisions are made with now (0: none yet). */
  get versionInForce(): number {
    return this.inForce;
  }

  /** The compiled set in force, or null when none is, or the version in force cannot be compiled. */
  current(): CompiledPolicySet | null {
    return this.compiled;
  }

  /** Resolves once the latest version published is in force (or known not to compile). */
  async settled(): Promise<void> {
    while (this.compiling) await this.compiling;
  }

  private async compileLatest(): Promise<void> {
    const started = performance.now();
    // Events are folded in batches: let this one finish, so only its last version is compiled.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.latest && this.latest.version !== this.inForce) {
      const target = this.latest;
      let next: CompiledPolicySet | null = null;
      let failure: string | null = null;
      try {
        next = prepareCompiled(await this.check(target.source), target.version);
      } catch (err) {
        failure = (err as Error).message;
      }
      if (this.latest !== target) continue; // a newer version came meanwhile: that one, then
      const before = this.compiled;
      // Keep deciding with nothing rather than with a stale set: every request is denied.
      this.compiled = next;
      this.inForce = target.version;
      this.error = failure === null ? null : `policy set version ${target.version} cannot be loaded: ${failure}`;
      if (before) releaseSource(before.preparsedId);
    }
    this.lastCompileMs = performance.now() - started;
    this.compiling = null;
    this.switched?.(this.inForce);
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

  /** Compiles a version ahead of `set`, its check off this thread (a server replaying keeps serving). */
  async ready(version: number): Promise<void> {
    if (this.compiled.has(version)) return;
    const p = this.published.find((x) => x.version === version);
    if (!p) return;
    let set: CompiledPolicySet | null = null;
    try {
      set = prepareCompiled(await checkOffThread(p.source), p.version);
    } catch {
      set = null;
    }
    if (!this.compiled.has(version)) this.compiled.set(version, set);
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
