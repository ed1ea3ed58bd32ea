// Delegation in a token (RFC 8693 §4.1): `act` names the acting party, `act.act` the party
// that delegated to it, and so on up. Here every party in `act` is an agent: `act.sub` is the
// acting agent, the nested ones are the agents above it, and the top-level `sub` is whom the
// whole chain acts for (a human). Without `act`, `sub` is the acting agent itself.

export interface Actors {
  /** The agent the token is for: `act.sub`, or `sub` without `act` (null: the token names none). */
  acting: string | null;
  /** The top-level `sub` when the token carries `act` (acting for someone); otherwise null. */
  onBehalfOf: string | null;
  /** The agents above the acting one, nearest first (`act.act.sub`, `act.act.act.sub`, …). */
  chain: string[];
}

export type ActChain = ({ ok: true } & Actors) | { ok: false; code: 'TOKEN_MALFORMED' | 'DELEGATION_TOO_DEEP'; detail: string };

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Reads the chain strictly: an `act` (at any level) that is not a plain object, or a level
 * without a non-empty string `sub`, is TOKEN_MALFORMED: ignoring it would decide for someone
 * other than the token names. `maxDepth` bounds the number of agents in the chain, the acting
 * agent included: a token without `act` has 1, `{act: {sub: A}}` has 1 (A),
 * `{act: {sub: A, act: {sub: B}}}` has 2 (A, B); the human in the top-level `sub` is not
 * counted. An `act` level beyond the bound, whatever it holds, is DELEGATION_TOO_DEEP: the
 * walk stops there, so what lies further down never changes the answer. A top-level `sub`
 * that is not a string leaves the acting agent unnamed (null), which the subject check refuses.
 */
export function readActChain(claims: Record<string, unknown>, maxDepth: number): ActChain {
  const sub = typeof claims.sub === 'string' ? claims.sub : null;
  if (claims.act === undefined) return { ok: true, acting: sub, onBehalfOf: null, chain: [] };
  // Acting for someone names them: `act` beside a `sub` that is not a name is not honoured.
  if (sub === null || sub.length === 0) return malformed('a token with act needs sub, a non-empty string: whom the agent acts for');
  const agents: string[] = [];
  const where = (depth: number) => `act${'.act'.repeat(depth - 1)}`;
  let level: unknown = claims.act;
  for (let depth = 1; level !== undefined; depth++) {
    if (depth > maxDepth) return { ok: false, code: 'DELEGATION_TOO_DEEP', detail: `the delegation chain has more than ${maxDepth} agents` };
    if (!isPlainObject(level)) return malformed(`${where(depth)} is not an object`);
    if (typeof level.sub !== 'string' || level.sub.length === 0) return malformed(`${where(depth)}.sub is not a non-empty string`);
    agents.push(level.sub);
    level = level.act;
  }
  return { ok: true, acting: agents[0]!, onBehalfOf: sub, chain: agents.slice(1) };
}

const malformed = (detail: string): ActChain => ({ ok: false, code: 'TOKEN_MALFORMED', detail });

/**
 * Who acted for whom, for showing a recorded token (audit trace): the strict reading when the
 * chain is well formed, else the well-formed levels from the top down to the first that is
 * not (the decision itself refused such a token; this only describes it).
 */
export function actors(claims: Record<string, unknown>): { acting: string | undefined; onBehalfOf: string | null; chain: string[] } {
  const strict = readActChain(claims, Number.POSITIVE_INFINITY);
  if (strict.ok) return { acting: strict.acting ?? undefined, onBehalfOf: strict.onBehalfOf, chain: strict.chain };
  const agents: string[] = [];
  for (let level: unknown = claims.act; isPlainObject(level) && typeof level.sub === 'string' && level.sub; level = level.act) agents.push(level.sub);
  const sub = typeof claims.sub === 'string' ? claims.sub : null;
  return { acting: agents[0], onBehalfOf: sub, chain: agents.slice(1) };
}
