import type { PolicyEntry } from '../authz/combined.ts';
import { canonicalJson } from '../canonical-json.ts';
import { entityKey } from '../authz/engine.ts';
import type { TemplateLink } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';

// SPEC §9 least privilege, the pure part: from what an agent's grants were used for in a window,
// the narrowest links that still cover it, and what each change takes away. No I/O: the
// observations come in (suggestion.ts reads them from the decision log).

/** One current grant, its template in the policy set in force, and the resources its allowed requests named. */
export interface GrantUse {
  link: TemplateLink;
  template: PolicyEntry | undefined;
  /** Distinct resources (Cedar uids) of the allowed requests this grant permitted. */
  used: EntityUid[];
}

/** Entities and entity → parent links one suggestion holds (a few hundred bytes each). */
export const MAX_LINKS = 1_000_000;

/**
 * What the window's requests showed of the entity hierarchy: each entity's parents, and each
 * parent's children. Keyed by the entities' names, so a history that gives one entity a new
 * parent in every request costs a look-up per parent, not a scan of those it had.
 */
export class Sightings {
  /**
   * Set once the window described more links than are held: the hierarchy is then known only in
   * part, so no folder is proposed (a folder "all of whose children were used" might have others).
   */
  full = false;
  private links = 0;
  private readonly parents = new Map<string, Map<string, EntityUid>>();
  private readonly children = new Map<string, Set<string>>();
  /** `below` answers, until the next sighting. */
  private readonly belowCache = new Map<string, Set<string>>();

  /** At most `maxLinks` entities and entity → parent links are held (a PEP describes the hierarchy, 1,000 links a request). */
  constructor(private readonly maxLinks = MAX_LINKS) {}

  /** An entity named in a recorded request (its resource, or its context entities), with the parents it was given. */
  saw(uid: EntityUid, parents: EntityUid[]): void {
    if (this.full) return;
    this.belowCache.clear();
    const k = entityKey(uid);
    let known = this.parents.get(k);
    if (!known) {
      if (this.over()) return;
      this.parents.set(k, (known = new Map()));
    }
    for (const p of parents) {
      const pk = entityKey(p);
      if (known.has(pk)) continue;
      if (this.over()) return;
      known.set(pk, p);
      let kids = this.children.get(pk);
      if (!kids) this.children.set(pk, (kids = new Set()));
      kids.add(k);
    }
  }

  /** One more entity or link: past the bound, the hierarchy is full. */
  private over(): boolean {
    if (++this.links > this.maxLinks) this.full = true;
    return this.full;
  }

  parentsOf(uid: EntityUid): EntityUid[] {
    return [...(this.parents.get(entityKey(uid))?.values() ?? [])];
  }

  childrenOf(uid: EntityUid): ReadonlySet<string> {
    return this.children.get(entityKey(uid)) ?? new Set();
  }

  /** Is `uid` the same as `ancestor` or below it, as far as the window's requests showed? */
  within(uid: EntityUid, ancestor: EntityUid): boolean {
    return this.below(ancestor).has(entityKey(uid));
  }

  /** The names of `ancestor` and of everything the window showed below it (remembered: asked once per grant's value, not once per resource). */
  below(ancestor: EntityUid): ReadonlySet<string> {
    const target = entityKey(ancestor);
    let found = this.belowCache.get(target);
    if (found) return found;
    found = new Set([target]);
    const pending = [target];
    for (let k = pending.pop(); k !== undefined; k = pending.pop()) {
      for (const kid of this.children.get(k) ?? []) {
        if (found.has(kid)) continue;
        found.add(kid);
        pending.push(kid);
      }
    }
    this.belowCache.set(target, found);
    return found;
  }
}

export type ChangeKind = 'narrowed' | 'removed' | 'kept';

export interface GrantChange {
  grant: TemplateLink;
  kind: ChangeKind;
  /** What replaces it: nothing (removed), itself (kept), or one link per resource or folder (narrowed). */
  proposed: TemplateLink[];
  /** In words, what the change takes away from today's rights. */
  removes: string;
}

const RESOURCE = '?resource';

/** How a template's resource scope uses `?resource`: `in` (narrowable), `==` (one resource already), or not at all. */
function resourceSlot(entry: PolicyEntry): 'in' | '==' | null {
  const scope = entry.json.resource as { op?: string; slot?: string; in?: { slot?: string } };
  if ((scope.op === 'in' && scope.slot === RESOURCE) || (scope.op === 'is' && scope.in?.slot === RESOURCE)) return 'in';
  if (scope.op === '==' && scope.slot === RESOURCE) return '==';
  return null;
}

/** The actions a template's action scope names, in words. */
function actionsOf(entry: PolicyEntry): string {
  const scope = entry.json.action as { op?: string; entity?: EntityUid; entities?: EntityUid[] };
  const named = scope.entity ? [scope.entity] : scope.entities ?? [];
  if (scope.op === 'All' || named.length === 0) return 'every action';
  const words = named.map((a) => a.id).join(', ');
  return scope.op === 'in' && scope.entity ? `${words} (and the actions in it)` : words;
}

const slotValue = (link: TemplateLink): EntityUid | null => {
  const v = link.values[RESOURCE] as EntityUid | undefined;
  return v && typeof v.type === 'string' && typeof v.id === 'string' ? { type: v.type, id: v.id } : null;
};

/** `grant-read-folder on Folder::"invoices"`: how a change names the grant it is about. */
export const grantLabel = (link: TemplateLink): string => {
  const on = slotValue(link);
  return on ? `${link.template} on ${entityKey(on)}` : link.template;
};

const byKey = (a: EntityUid, b: EntityUid) => (entityKey(a) < entityKey(b) ? -1 : entityKey(a) > entityKey(b) ? 1 : 0);

/**
 * The resources to link instead of the whole slot value `within`: folders whose children all
 * (or, with `collapse`, any two or more) were used take the place of those children; every
 * other resource used is linked on its own. A folder counts only if the window showed it
 * inside `within` (else linking it could widen the grant).
 */
function narrowTo(used: EntityUid[], within: EntityUid, seen: Sightings, collapse: boolean): EntityUid[] {
  const usedKeys = new Set(used.map(entityKey));
  const candidates = new Map<string, { folder: EntityUid; children: EntityUid[] }>();
  for (const u of used) {
    for (const p of seen.parentsOf(u)) {
      if (!seen.within(p, within)) continue;
      const c = candidates.get(entityKey(p)) ?? { folder: p, children: [] };
      c.children.push(u);
      candidates.set(entityKey(p), c);
    }
  }
  // The folders covering most first; a resource already covered by one is not linked again.
  const folders = [...candidates.values()]
    .filter((c) => !seen.full && c.children.length >= 2 && (collapse || [...seen.childrenOf(c.folder)].every((k) => usedKeys.has(k))))
    .sort((a, b) => b.children.length - a.children.length || byKey(a.folder, b.folder));
  const covered = new Set<string>();
  const out: EntityUid[] = [];
  for (const f of folders) {
    if (f.children.every((c) => covered.has(entityKey(c)))) continue;
    out.push(f.folder);
    for (const c of f.children) covered.add(entityKey(c));
  }
  for (const u of used) if (!covered.has(entityKey(u)) && !out.some((f) => entityKey(f) === entityKey(u))) out.push(u);
  return out.sort(byKey);
}

/** What to do with one current grant, given what it was used for. */
export function changeFor(use: GrantUse, seen: Sightings, collapse: boolean): GrantChange {
  const { link, template } = use;
  const label = grantLabel(link);
  const kept = (why: string): GrantChange => ({ grant: link, kind: 'kept', proposed: [link], removes: `${label}: kept as is (${why}); nothing is removed` });
  if (!template) return kept('its template is not in the policy set in force, so what it covers cannot be read');
  if (template.json.effect === 'forbid') return kept('a forbid: narrowing or removing it would widen rights');
  const actions = actionsOf(template);
  const slot = resourceSlot(template);
  const on = slotValue(link);
  if (use.used.length === 0) {
    const what = slot === 'in' && on ? `${actions} on ${entityKey(on)} and everything in it` : on ? `${actions} on ${entityKey(on)}` : `everything ${link.template} permits`;
    return { grant: link, kind: 'removed', proposed: [], removes: `${label}: no allowed request used it in the window; ${what} is removed` };
  }
  if (slot === '==') return kept('it names one resource already');
  if (slot !== 'in' || !on) return kept('its template has no `resource in ?resource` to narrow');
  const to = narrowTo(use.used, on, seen, collapse);
  if (to.some((r) => entityKey(r) === entityKey(on))) {
    const itself = use.used.some((r) => entityKey(r) === entityKey(on));
    const why = itself ? `the requests used ${entityKey(on)} itself` : collapse ? `collapsed as asked: the resources used share ${entityKey(on)}` : `every child of ${entityKey(on)} the window saw was used`;
    return kept(why);
  }
  const proposed = to.map((r) => ({ template: link.template, values: { ...link.values, [RESOURCE]: r } }));
  return {
    grant: link, kind: 'narrowed', proposed,
    removes: `${label} → ${to.map(entityKey).join(', ')}: ${actions} on the rest of ${entityKey(on)} is removed`,
  };
}

/** A link's identity: its template and slot values, whatever order their keys were written (or stored in jsonb) in. */
export const linkKey = (l: TemplateLink): string => canonicalJson([l.template, l.values]);

/** The proposal: every change's links, each once, in the order of the current grants. */
export function proposalOf(changes: GrantChange[]): TemplateLink[] {
  const seen = new Set<string>();
  const out: TemplateLink[] = [];
  for (const c of changes) {
    for (const l of c.proposed) {
      const k = linkKey(l);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(l);
    }
  }
  return out;
}
