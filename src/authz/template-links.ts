import { LeashError } from '../errors.ts';
import type { TemplateLink } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { PolicyEntry } from './combined.ts';
import { CEILING, type CompiledPolicySet } from './policy-set.ts';

// An agent's ceiling and grants are Cedar templates linked with values for their slots. A
// template is often written for its principal (`principal == ?principal`): that slot is the
// agent itself, always, so Leash fills it and a caller may not. Every other slot must be
// given, and nothing else: a link is checked when it is made (registration, authorization),
// so it never fails later, at every decision.

export type Slot = '?principal' | '?resource';

/** The slots a template has (in its principal and resource scopes). */
export function slotsOf(entry: PolicyEntry): Set<Slot> {
  const slots = new Set<Slot>();
  for (const scope of [entry.json.principal, entry.json.resource] as { slot?: string; in?: { slot?: string } }[]) {
    const slot = scope.slot ?? scope.in?.slot;
    if (slot === '?principal' || slot === '?resource') slots.add(slot);
  }
  return slots;
}

const invalid = (message: string, details: Record<string, unknown>) => new LeashError('INVALID_TEMPLATE_LINK', message, details);

/** Refuses (422 INVALID_TEMPLATE_LINK) a link that names no such template, or fills its slots wrongly. */
export function checkLink(set: CompiledPolicySet, link: TemplateLink, use: 'ceiling' | 'grant', where: string): void {
  const entry = set.templateEntries[link.template];
  if (!entry) throw invalid(`${where}: no template ${JSON.stringify(link.template)} in policy set version ${set.version}`, { template: link.template });
  if (use === 'ceiling' && entry.layer !== CEILING) throw invalid(`${where}: template ${link.template} is not a ceiling template (@layer("ceiling"))`, { template: link.template });
  if (use === 'grant' && entry.layer === CEILING) throw invalid(`${where}: template ${link.template} is a ceiling template; a grant links an ordinary one`, { template: link.template });
  const slots = slotsOf(entry);
  if ('?principal' in link.values) throw invalid(`${where}: ?principal is always the agent itself; leave it out of values`, { slot: '?principal' });
  for (const given of Object.keys(link.values)) {
    if (!slots.has(given as Slot)) throw invalid(`${where}: template ${link.template} has no slot ${given}`, { slot: given });
  }
  for (const slot of slots) {
    if (slot !== '?principal' && !(slot in link.values)) throw invalid(`${where}: template ${link.template} needs a value for ${slot}`, { slot });
  }
}

const fits = new WeakMap<TemplateLink, { set: CompiledPolicySet; ok: boolean }>();

/**
 * Does a link made under an earlier policy set still fit this one (a later set may have
 * dropped the template or changed its slots)? Decisions ask this instead of failing in Cedar.
 */
export function linkFits(set: CompiledPolicySet, link: TemplateLink, use: 'ceiling' | 'grant'): boolean {
  const hit = fits.get(link);
  if (hit?.set === set) return hit.ok;
  let ok = true;
  try {
    checkLink(set, link, use, '');
  } catch {
    ok = false;
  }
  fits.set(link, { set, ok });
  return ok;
}

const bound = new WeakMap<TemplateLink, { set: CompiledPolicySet; link: TemplateLink }>();

/** The link as Cedar gets it: `?principal`, when the template has it, bound to the agent. */
export function bindPrincipal(set: CompiledPolicySet, link: TemplateLink, agent: EntityUid): TemplateLink {
  const hit = bound.get(link);
  if (hit?.set === set) return hit.link;
  const entry = set.templateEntries[link.template];
  const result = entry && slotsOf(entry).has('?principal') ? { ...link, values: { ...link.values, '?principal': { type: agent.type, id: agent.id } } } : link;
  bound.set(link, { set, link: result });
  return result;
}
