import type { DecisionCaches } from '../authz/decision-caches.ts';
import { detailsOf } from '../authz/details.ts';
import { entitiesFor } from '../authz/engine.ts';
import type { CompiledPolicySet } from '../authz/policy-set.ts';
import { ceilingOf, withinCeiling } from '../authz/within-ceiling.ts';
import { isLeashError } from '../errors.ts';
import { findUnsafeValue } from '../json-limits.ts';
import type { AgentRecord } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { OAuthError } from './oauth-error.ts';

// What a client asks a token for (`authorization_details`, RFC 9396) at the token endpoint:
// read as a decision reads a token's, and checked against the agent's ceiling before any
// token carries it. Shared by client credentials and the token exchange.

/** `authorization_details` as sent, at most this many characters (the token must stay within MAX_TOKEN_CHARS). */
export const MAX_DETAILS_CHARS = 8_192;
/** Deep enough for any entry Leash reads (entries are 2 levels down, targets 3). */
const MAX_DETAILS_DEPTH = 16;

/** The request's `authorization_details`, read as a decision reads a token's (details.ts). */
export function readDetails(raw: string | undefined): unknown[] {
  if (raw === undefined) throw new OAuthError('invalid_request', 'authorization_details is required');
  const refuse = (why: string) => new OAuthError('invalid_authorization_details', why);
  if (raw.length > MAX_DETAILS_CHARS) throw refuse(`authorization_details is longer than ${MAX_DETAILS_CHARS} characters`);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw refuse('authorization_details is not JSON');
  }
  const unsafe = findUnsafeValue(value, MAX_DETAILS_DEPTH);
  if (unsafe) throw refuse(`authorization_details ${unsafe.why}`);
  const parsed = detailsOf(value);
  if (!parsed.ok) throw refuse(parsed.detail);
  // The token carries the entries as sent (nothing dropped, nothing added); bounded in bytes too.
  if (Buffer.byteLength(JSON.stringify(value)) > MAX_DETAILS_CHARS) throw refuse(`authorization_details is larger than ${MAX_DETAILS_CHARS} bytes`);
  return value as unknown[];
}

/**
 * Every entry within the agent's ceiling, asked as a decision asks it, with what the registry
 * knows: no request context, and only registered entities (a target's place in a hierarchy
 * the registry does not hold is unknown here; the decision asks again with the PEP's).
 */
export function checkCeiling(policies: CompiledPolicySet, registry: RegistryState, agent: AgentRecord, version: number, entries: unknown[], caches?: DecisionCaches): void {
  const details = detailsOf(entries);
  if (!details.ok) throw new OAuthError('invalid_authorization_details', details.detail);
  const refuse = (why: string) => new OAuthError('invalid_authorization_details', why);
  const A: EntityUid = { type: 'Agent', id: agent.id };
  let entities;
  try {
    entities = entitiesFor(registry, [{ uid: A }, ...details.details.map((d) => ({ uid: d.resource ?? d.resourceIn! }))], undefined);
  } catch (err) {
    if (isLeashError(err)) throw refuse(err.message);
    throw err;
  }
  const found = ceilingOf(policies, agent, version, entities);
  if (!found.ok) throw refuse(`the agent has no ceiling that can be checked (${found.code}), so no entry lies within it`);
  let inside;
  try {
    inside = withinCeiling({ policies, agent, agentVersion: version, ceiling: found.ceiling, details, entities, view: registry, context: {}, caches });
  } catch (err) {
    if (isLeashError(err)) throw refuse(err.message);
    throw err;
  }
  if (inside.ok) return;
  if (inside.code === 'DETAILS_MALFORMED') throw refuse(inside.errors[0] ?? 'authorization_details names what the schema does not know');
  if (inside.code === 'POLICY_EVALUATION_ERROR') throw refuse('a ceiling policy could not be evaluated for an entry, so it is not shown to lie within the ceiling');
  throw refuse('an entry asks for more than the agent\'s ceiling allows; the request is refused whole, never narrowed');
}
