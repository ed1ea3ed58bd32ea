import { createHash } from 'node:crypto';
import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';
import { approverSpecOf, type ApproverSpec } from '../approvals/approver-spec.ts';
import { combinedSchema, namedAttributes, ownerIsHuman, readsContextByAttribute, slimSchema, survivesJson, type CombinableSource, type PolicyEntry } from './combined.ts';
import { indexByScope, type ScopeIndex } from './slices.ts';

/** What an operator publishes: Cedar schema and policies (text), plus AuthZEN type aliases. */
export interface PolicySetSource {
  schema: string;
  policies: string;
  /** AuthZEN type → Cedar entity type, e.g. `{"user": "Human"}` for the Todo interop. */
  aliases?: Record<string, string>;
}

/** A validated, preparsed policy set, ready for `statefulIsAuthorized`. Immutable. */
export interface CompiledPolicySet extends CombinableSource {
  version: number;
  sha256: string;
  source: PolicySetSource;
  policyIds: string[];
  templateIds: string[];
  /**
   * Names of the three layers (the ordinary policies, the ceiling ones, the admin ones); each
   * is prepared in slices by principal (slices.ts), found by name in `layers`. The name also
   * keys every set prepared for this version, which are given back when it is superseded.
   */
  preparsedId: string;
  ceilingPreparsedId: string;
  /** The `@layer("admin")` policies, which decide admin calls made with a human token and nothing else. */
  adminPreparsedId: string;
  schemaName: string;
  /** Ids of the static policies and templates that are forbids (an erroring forbid denies). */
  forbidIds: ReadonlySet<string>;
  /** Permits marked `@approval(...)`, by id: they allow only with a human's approval (approvals/gate.ts). */
  approvals: ReadonlyMap<string, ApproverSpec>;
  /** Template texts by id, with their layer, for per-agent links (ceilings and grants). */
  templates: Record<string, { text: string; layer: string | null }>;
  /** The schema in Cedar's JSON form, cheaper to hand to per-request (stateless) calls. */
  schemaJson: cedar.SchemaJson<string>;
  /**
   * Combined layer calls (combined.ts), by preparsed schema: for the owner's requests (the schema
   * declares `owner: Human`) and for delegated ones; null when a set or schema does not allow it.
   */
  combinedOwnerSchemaName: string | null;
  combinedSchemaName: string | null;
  /** The schema with the registry types' attributes optional (combined.ts `slimSchema`), for calls given slimmed registry entities; null when there is none. */
  slimSchemaName: string | null;
  /** Each layer's policies by principal scope, by the layer's name (`preparsedId`, …). */
  layers: Map<string, ScopeIndex>;
}

/**
 * A policy set parsed and strictly validated, as plain data (it crosses from the thread that
 * checks it to the one that decides): everything a compiled set needs but the preparsed parts.
 */
export interface CheckedPolicySet {
  sha256: string;
  source: PolicySetSource;
  policyIds: string[];
  templateIds: string[];
  /** The static policies, admin ones apart. */
  statics: PolicyEntry[];
  admin: PolicyEntry[];
  templateEntries: Record<string, PolicyEntry>;
  approvals: [string, ApproverSpec][];
  forbidIds: string[];
  schemaJson: cedar.SchemaJson<string>;
  namedAttributes: string[];
  /** The schemas combined calls use (combined.ts), when this set and schema allow them. */
  slim: { types: string[]; schema: cedar.SchemaJson<string>; owner: cedar.SchemaJson<string> | null; combined: cedar.SchemaJson<string> | null } | null;
}

/** `@layer("ceiling")` marks a ceiling policy or template; everything else is ordinary. */
export const CEILING = 'ceiling';
/** `@layer("admin")` marks a policy that decides admin calls (admin.ts); no other decision reads it. */
export const ADMIN = 'admin';

const ENTITY_TYPE = /^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$/;

const messages = (errors: { message: string; help?: string | null }[]) =>
  errors.map((e) => (e.help ? `${e.message} (${e.help})` : e.message));

function invalid(detail: string, diagnostics: string[]): LeashError {
  return new LeashError('POLICY_INVALID', detail, { diagnostics });
}

/** The `@id("…")` annotation, or a generated id when there is none. */
function idOf(json: { annotations?: Record<string, string | null> }, fallback: string): string {
  const id = json.annotations?.id;
  return typeof id === 'string' && id.length > 0 ? id : fallback;
}

/**
 * Ids Leash gives the policies it links for an agent: `ceiling:<agent>` and `grant:<agent>:<i>`,
 * which decisions name among their reasons. A published policy may not take one, so a reason
 * always says which of the two it was.
 */
export const RESERVED_ID_PREFIXES = ['ceiling:', 'grant:'] as const;

/** Refuses a set to be published whose policy or template ids begin as Leash's own links' do. */
export function refuseReservedIds(checked: Pick<CheckedPolicySet, 'policyIds' | 'templateIds'>): void {
  const taken = [...checked.policyIds, ...checked.templateIds].filter((id) => RESERVED_ID_PREFIXES.some((prefix) => id.startsWith(prefix)));
  if (taken.length === 0) return;
  throw invalid(
    `policy ids beginning ${RESERVED_ID_PREFIXES.map((p) => JSON.stringify(p)).join(' or ')} are Leash's own (the links it makes for an agent's ceiling and grants); rename ${taken.length === 1 ? 'this one' : `these ${taken.length}`}`,
    taken.slice(0, 20).map((id) => `@id("${id.length > 200 ? `${id.slice(0, 200)}…` : id}") is reserved`),
  );
}

/** A set's digest: its schema, policies and aliases, as published. */
export const policySetDigest = (source: PolicySetSource): string =>
  createHash('sha256').update(JSON.stringify([source.schema, source.policies, source.aliases ?? {}])).digest('hex');

/**
 * Parses and strictly validates a policy set against its schema; refuses it with Cedar's
 * diagnostics otherwise. Policy and template ids come from their `@id` annotations. Pure:
 * nothing is kept in cedar-wasm, so it can run on any thread (policy-compiler.ts).
 */
export function checkPolicySet(source: PolicySetSource): CheckedPolicySet {
  const schemaJson = cedar.schemaToJson(source.schema);
  if (schemaJson.type === 'failure') throw invalid('the schema does not parse', messages(schemaJson.errors));

  const parts = cedar.policySetTextToParts(source.policies);
  if (parts.type === 'failure') throw invalid('the policies do not parse', messages(parts.errors));

  const staticPolicies: Record<string, string> = {};
  const templates: Record<string, string> = {};
  const statics: PolicyEntry[] = [];
  const admin: PolicyEntry[] = [];
  const templateEntries: Record<string, PolicyEntry> = {};
  const approvals: [string, ApproverSpec][] = [];
  const seen = new Set<string>();
  const name = (json: { annotations?: Record<string, string | null> }, fallback: string) => {
    const id = idOf(json, fallback);
    if (seen.has(id)) throw invalid(`two policies share the id ${JSON.stringify(id)}`, [`duplicate @id("${id}")`]);
    seen.add(id);
    return id;
  };
  parts.policies.forEach((text, i) => {
    const json = cedar.policyToJson(text);
    if (json.type === 'failure') throw invalid('a policy does not parse', messages(json.errors));
    const id = name(json.json, `policy${i}`);
    staticPolicies[id] = text;
    const layer = json.json.annotations?.layer ?? null;
    const approval = json.json.annotations?.approval;
    if (approval !== undefined) {
      const spec = approverSpecOf(approval);
      const where = `@approval on ${JSON.stringify(id)}`;
      if (!spec) throw invalid(`policy ${JSON.stringify(id)} names its approvers as ${JSON.stringify(approval)}; write @approval("owner") or @approval("group:<id>")`, [where]);
      if (json.json.effect !== 'permit' || layer !== null) throw invalid(`policy ${JSON.stringify(id)} asks for an approval, which only an ordinary permit (no @layer) may do`, [where]);
      approvals.push([id, spec]);
    }
    // Admin policies stand apart: an admin forbid never touches a decision, nor a permit of the
    // decision layers an admin call.
    (layer === ADMIN ? admin : statics).push({ id, text, json: json.json, layer });
  });
  parts.policy_templates.forEach((text, i) => {
    const json = cedar.templateToJson(text);
    if (json.type === 'failure') throw invalid('a template does not parse', messages(json.errors));
    const id = name(json.json, `template${i}`);
    if (json.json.annotations?.approval !== undefined) throw invalid(`template ${JSON.stringify(id)} asks for an approval, which only a static permit may do`, [`@approval on template ${id}`]);
    if (json.json.annotations?.layer === ADMIN) throw invalid(`template ${JSON.stringify(id)} is in the admin layer, which holds static policies only`, [`@layer("admin") on template ${id}`]);
    templates[id] = text;
    templateEntries[id] = { id, text, json: json.json, layer: json.json.annotations?.layer ?? null };
  });

  const validation = cedar.validate({ schema: source.schema, policies: { staticPolicies, templates }, validationSettings: { mode: 'strict' } });
  if (validation.type === 'failure') throw invalid('the policy set cannot be validated', messages(validation.errors));
  if (validation.validationErrors.length > 0) {
    throw invalid(
      'the policies do not validate against the schema (strict mode)',
      validation.validationErrors.map((e) => `${e.policyId}: ${messages([e.error])[0]}`),
    );
  }
  for (const [alias, type] of Object.entries(source.aliases ?? {})) {
    if (!ENTITY_TYPE.test(type)) throw invalid(`alias ${alias} names an invalid entity type`, [type]);
  }

  const everything = [...statics, ...Object.values(templateEntries)];
  // Without these, agent decisions take one Cedar call per layer: slower, same answers.
  // Only the human-layer copies (ordinary policies) are rewritten; the rest go in as written.
  const slimmed = slimSchema(schemaJson.json, ['Agent', 'Human', 'Group']);
  const rewritable = slimmed && statics.every((p) => p.layer === CEILING || survivesJson(p.json));
  const slim = slimmed && rewritable ? {
    types: [...slimmed.types],
    schema: slimmed.schema,
    owner: ownerIsHuman(schemaJson.json) ? slimmed.schema : null,
    combined: everything.every((p) => readsContextByAttribute(p.json)) ? combinedSchema(slimmed.schema) : null,
  } : null;
  return {
    sha256: policySetDigest(source),
    source, policyIds: Object.keys(staticPolicies), templateIds: Object.keys(templates),
    statics, admin, templateEntries, approvals, schemaJson: schemaJson.json,
    forbidIds: [...everything, ...admin].filter((p) => p.json.effect === 'forbid').map((p) => p.id),
    namedAttributes: [...namedAttributes(everything)],
    slim,
  };
}

/** Schemas prepared in cedar-wasm, by name: a name is its text's digest, so versions that keep their schema share it. */
const preparedSchemas = new Set<string>();

function prepareSchema(name: string, schema: cedar.Schema): boolean {
  if (preparedSchemas.has(name)) return true;
  if (cedar.preparseSchema(name, schema).type === 'failure') return false;
  preparedSchemas.add(name);
  return true;
}

/**
 * A checked set as the version `version` in force: its schemas prepared in cedar-wasm (on
 * the thread that decides; cheap), its layers indexed for slicing (prepared on first use).
 */
export function prepareCompiled(checked: CheckedPolicySet, version: number): CompiledPolicySet {
  const { sha256, source, statics, admin } = checked;
  const preparsedId = `v${version}-${sha256.slice(0, 16)}`;
  const schemaName = `schema-${createHash('sha256').update(source.schema).digest('hex').slice(0, 32)}`;
  if (!prepareSchema(schemaName, source.schema)) throw invalid('the schema cannot be prepared', []);
  const compiled: CompiledPolicySet = {
    version, sha256, source, policyIds: checked.policyIds, templateIds: checked.templateIds,
    preparsedId, ceilingPreparsedId: `${preparsedId}-ceiling`, adminPreparsedId: `${preparsedId}-admin`, schemaName,
    templates: Object.fromEntries(Object.values(checked.templateEntries).map((t) => [t.id, { text: t.text, layer: t.layer }])),
    schemaJson: checked.schemaJson, statics, templateEntries: checked.templateEntries, ceilingLayer: CEILING,
    combinedOwnerSchemaName: null, combinedSchemaName: null, slimSchemaName: null,
    namedAttributes: new Set(checked.namedAttributes), slimTypes: new Set(),
    approvals: new Map(checked.approvals), forbidIds: new Set(checked.forbidIds),
    layers: new Map([
      [preparsedId, indexByScope(statics.filter((p) => p.layer !== CEILING))],
      [`${preparsedId}-ceiling`, indexByScope(statics.filter((p) => p.layer === CEILING))],
      [`${preparsedId}-admin`, indexByScope(admin)],
    ]),
  };
  if (checked.slim) {
    compiled.slimTypes = new Set(checked.slim.types);
    const prepare = (name: string, schema: cedar.SchemaJson<string> | null) => (schema && prepareSchema(name, schema) ? name : null);
    compiled.slimSchemaName = prepare(`${schemaName}-slim`, checked.slim.schema);
    // (The owner's schema is the slim one: it adds nothing, so it is prepared once.)
    compiled.combinedOwnerSchemaName = checked.slim.owner ? compiled.slimSchemaName : null;
    compiled.combinedSchemaName = prepare(`${schemaName}-combined`, checked.slim.combined);
  }
  return compiled;
}

/** Checked and prepared on this thread, in one go (replay's candidates, tests). */
export function compilePolicySet(source: PolicySetSource, version: number): CompiledPolicySet {
  return prepareCompiled(checkPolicySet(source), version);
}
