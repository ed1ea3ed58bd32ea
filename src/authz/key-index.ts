/**
 * Which cache keys belong to which agent, so that forgetting an agent (SPEC §6: its state
 * changed) touches that agent's entries only, never the whole cache.
 */
export class KeyIndex {
  private readonly byTag = new Map<string, Set<string>>();

  add(tag: string, key: string): void {
    let keys = this.byTag.get(tag);
    if (!keys) this.byTag.set(tag, (keys = new Set()));
    keys.add(key);
  }

  remove(tag: string, key: string): void {
    const keys = this.byTag.get(tag);
    if (!keys) return;
    keys.delete(key);
    if (keys.size === 0) this.byTag.delete(tag);
  }

  /** The tag's keys, forgotten by the index. */
  take(tag: string): string[] {
    const keys = this.byTag.get(tag);
    this.byTag.delete(tag);
    return keys ? [...keys] : [];
  }
}
