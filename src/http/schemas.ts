import { Type, type Static } from 'typebox';
import { LeashError } from '../errors.ts';
import { agentStatuses } from '../registry/agent.ts';
import { MAX_CLOCK_SKEW_SECONDS, pinnableAlgorithms } from '../tokens/pins.ts';

// Request and response shapes of SPEC §7. Every object is closed: an unknown field is a
// 400, never silently dropped.

const closed = { additionalProperties: false } as const;

/**
 * A `format: 'date-time'` value as an instant. The format admits a leap second
 * (`…T23:59:60Z`), which Date cannot hold: that is a 400 naming where, not an Invalid Date
 * for the database to refuse with a 500.
 */
export function instantOf(text: string, where: string): Date {
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) throw new LeashError('VALIDATION_FAILED', `${where} is not an instant Leash can use (a leap second?)`);
  return at;
}

/** SPEC §2: ids match [A-Za-z0-9._:@-]{1,128}; so no quotes, slashes, spaces or unicode. */
// Never __proto__, constructor or prototype: an id is a key in many places, and those three mean something else there.
export const Id = Type.String({ pattern: '^(?!(?:__proto__|constructor|prototype)$)[A-Za-z0-9._:@-]{1,128}$', description: 'id matching [A-Za-z0-9._:@-]{1,128}, other than __proto__, constructor and prototype' });
export const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength });
export const Ids = (maxItems: number) => Type.Array(Id, { maxItems, uniqueItems: true });

export const EntityRef = Type.Object({ type: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$', maxLength: 256 }), id: Type.String({ minLength: 1, maxLength: 256 }) }, closed);

export const TemplateLink = Type.Object(
  {
    template: Id,
    values: Type.Record(Type.String({ pattern: '^\\?(principal|resource)$' }), EntityRef),
  },
  closed,
);

export const Provenance = Type.Object(
  {
    model: Text(200),
    modelVersion: Text(100),
    environment: Type.Union([Type.Literal('production'), Type.Literal('staging'), Type.Literal('sandbox')]),
  },
  closed,
);

const Jwk = Type.Object({ kty: Type.String({ maxLength: 10 }) }, { additionalProperties: Type.Any(), maxProperties: 20 });

export const Credentials = Type.Object(
  {
    issuer: Text(500),
    audience: Type.Union([Text(500), Type.Array(Text(500), { minItems: 1, maxItems: 10 })]),
    algorithms: Type.Array(Type.Union(pinnableAlgorithms.map((a) => Type.Literal(a))), { minItems: 1, uniqueItems: true }),
    clockSkewSeconds: Type.Integer({ minimum: 0, maximum: MAX_CLOCK_SKEW_SECONDS }),
    maxTokenLifetimeSeconds: Type.Integer({ minimum: 1, maximum: 86400 }),
    jwks: Type.Optional(Type.Object({ keys: Type.Array(Jwk, { minItems: 1, maxItems: 20 }) }, closed)),
    jwksUri: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  closed,
);

export const RegisterAgentBody = Type.Object(
  {
    id: Id,
    owner: Id,
    purpose: Text(1000),
    provenance: Provenance,
    trustScore: Type.Integer({ minimum: 0, maximum: 100 }),
    groups: Type.Optional(Ids(100)),
    tags: Type.Optional(Type.Array(Text(100), { maxItems: 100, uniqueItems: true })),
    credentials: Credentials,
    ceiling: Type.Optional(Type.Union([TemplateLink, Type.Null()])),
  },
  closed,
);
export type RegisterAgentBody = Static<typeof RegisterAgentBody>;

export const DiscoverAgentBody = Type.Object({ id: Id, source: Text(500), fingerprint: Text(500) }, closed);
export const AuthorizeAgentBody = Type.Object({ grants: Type.Array(TemplateLink, { maxItems: 100 }) }, closed);
export const ReasonBody = Type.Object({ reason: Text(1000) }, closed);
export const ClearFindingBody = Type.Object({
  detector: Type.Union(['rate_spike', 'deny_burst', 'new_resource', 'new_action', 'off_hours', 'ceiling_probe'].map((d) => Type.Literal(d)), { description: 'the detector whose finding is cleared' }),
  reason: Text(1000),
}, closed);
export const RotateBody = Type.Object({ credentials: Credentials }, closed);
export const RevokeBody = Type.Object(
  {
    mode: Type.Union([Type.Literal('immediate'), Type.Literal('graceful'), Type.Literal('quarantine')]),
    reason: Text(1000),
    gracePeriodSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
  },
  closed,
);

/** SPEC §6 kill switch: revoke every live agent of an owner, with a tag, or all of them. */
export const KillSwitchBody = Type.Object(
  {
    scope: Type.Union([
      Type.Object({ owner: Id }, closed),
      Type.Object({ tag: Type.String({ minLength: 1, maxLength: 128 }) }, closed),
      Type.Object({ all: Type.Literal(true) }, closed),
    ], { description: 'exactly one of {"owner"}, {"tag"} or {"all": true}' }),
    ...RevokeBody.properties,
  },
  closed,
);

export const HumanBody = Type.Object(
  { id: Id, email: Type.String({ format: 'email', maxLength: 320 }), groups: Type.Optional(Ids(100)), displayName: Type.Optional(Text(200)) },
  closed,
);
export const GroupBody = Type.Object({ id: Id, parents: Type.Optional(Ids(20)), description: Type.Optional(Text(1000)) }, closed);

export const IdParams = Type.Object({ id: Id }, closed);

export const AgentListQuery = Type.Object(
  {
    status: Type.Optional(Type.Union(agentStatuses.map((s) => Type.Literal(s)))),
    owner: Type.Optional(Id),
    tag: Type.Optional(Text(100)),
    limit: Type.Optional(Type.String({ pattern: '^(?:[1-9][0-9]{0,2}|1000)$', description: '1..1000, default 100' })),
    after: Type.Optional(Id),
  },
  closed,
);

export const WriteHeaders = Type.Object({
  'if-match': Type.Optional(Type.String({ pattern: '^(?:W/)?"?[0-9]{1,9}"?$', description: 'expected stream version, e.g. "3"' })),
  'idempotency-key': Type.Optional(Type.String({ pattern: '^[\\x21-\\x7e]{1,200}$' })),
});

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String(),
    detail: Type.Optional(Type.String()),
    instance: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

const open = { additionalProperties: true } as const;
export const AgentView = Type.Object(
  {
    id: Type.String(),
    status: Type.String(),
    version: Type.Integer(),
    owner: Type.Union([Type.String(), Type.Null()]),
    purpose: Type.String(),
    trustScore: Type.Integer(),
    groups: Type.Array(Type.String()),
    tags: Type.Array(Type.String()),
  },
  open,
);
/** SPEC §6: what a containment call reports once every live node has applied it. */
export const FenceFields = {
  position: Type.Integer({ description: 'log position of the change' }),
  nodesConfirmed: Type.Integer({ description: 'live nodes that confirmed they applied it before the response' }),
  nodesExpected: Type.Integer({ description: 'live nodes (heard from within the staleness bound) when the call was made' }),
  nodesMissing: Type.Array(Type.String(), { description: 'ids of live nodes that did not confirm in time; each fails closed on its own' }),
};
export const FencedAgentView = Type.Object({ ...AgentView.properties, ...FenceFields }, open);
export const HumanView = Type.Object({ id: Type.String(), email: Type.String(), groups: Type.Array(Type.String()), version: Type.Integer() }, open);
export const GroupView = Type.Object({ id: Type.String(), parents: Type.Array(Type.String()), version: Type.Integer() }, open);
export const EventView = Type.Object({
  type: Type.String(), version: Type.Integer(), position: Type.Integer(), at: Type.String(), data: Type.Any(),
  actor: Type.Optional(Type.String({ description: 'who caused it: `human:<id>` (a person\'s admin call, decided by Cedar), `operator` (the operator token), `operator:kill-switch`, …' })),
  breakGlass: Type.Optional(Type.Boolean({ description: 'true when the operator token (the break-glass way in) caused it' })),
}, open);

/** SPEC §9: GET /v1/agents/{id}/suggestion's query. */
export const SuggestionQuery = Type.Object(
  {
    days: Type.Optional(Type.String({ pattern: '^(?:[1-9]|[1-8][0-9]|90)$', description: 'the window: the last 1..90 days, default 30' })),
    collapse: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'true: resources sharing a folder are proposed as that folder even when the window saw other children of it unused' })),
  },
  closed,
);

const Uid = Type.Object({ type: Type.String(), id: Type.String() });
const Link = Type.Object({ template: Type.String(), values: Type.Record(Type.String(), Type.Unknown(), { description: 'slot (?resource) → entity uid {type, id}' }) });

/** SPEC §9: the narrowest grants that cover what the agent was allowed in the window, and their what-if. */
export const SuggestionView = Type.Object({
  agent: Type.String(),
  version: Type.Integer({ description: 'the agent\'s version the proposal was made from: send it as If-Match when applying' }),
  window: Type.Object({ since: Type.String(), until: Type.String(), days: Type.Integer() }),
  decisions: Type.Object({ allowed: Type.Integer(), denied: Type.Integer() }, { description: 'the agent\'s AuthZEN decisions read in the window' }),
  current: Type.Array(Link, { description: 'the agent\'s grants today' }),
  proposed: Type.Array(Link, { description: 'the grants proposed instead: the body of POST /v1/agents/{id}/authorize' }),
  changes: Type.Array(Type.Object({
    grant: Link,
    kind: Type.Union([Type.Literal('narrowed'), Type.Literal('removed'), Type.Literal('kept')]),
    proposed: Type.Array(Link, { description: 'what replaces this grant' }),
    removes: Type.String({ description: 'what the change takes away from today\'s rights, in words' }),
  }), { description: 'one per current grant' }),
  whatIf: Type.Object({
    decisions: Type.Integer({ description: 'the window\'s decisions decided again with the proposal as the agent\'s grants' }),
    allowToDeny: Type.Integer({ description: 'recorded allows the proposal would deny: 0 for a proposal that covers the window' }),
    denyToAllow: Type.Integer(),
    undecidable: Type.Integer({ description: 'records that could not be decided again' }),
    flips: Type.Array(Type.Object({ id: Type.String(), seq: Type.Integer(), at: Type.String(), action: Type.String(), resource: Uid, change: Type.String() })),
  }),
  capped: Type.Boolean({ description: 'true: the window held more decisions than one suggestion reads (100,000); the first ones were used' }),
  note: Type.Optional(Type.String()),
});
