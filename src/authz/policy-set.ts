import { createHash } from 'node:crypto';
import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';
import { approverSpecOf, type ApproverSpec } from '../approvals/approver-spec.ts';
import { combinedSchema, namedAttributes, ownerIsHuman, readsContextByAttribute, slimSchema, survivesJson, type CombinableSource, type PolicyEntry } from './combined.ts';

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
  /** Handles into cedar-wasm's preparsed caches: the ordinary policies and the ceiling ones. */
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
 * Parses and strictly validates a policy set against its schema; refuses it with Cedar's
 * diagnostics otherwise. Policy and template ids come from their `@id` annotations.
 */
export function compilePolicySet(source: PolicySetSource, version: number, options: { prepare?: boolean } = {}): CompiledPolicySet {
  const schemaJson = cedar.schemaToJson(source.schema);
  if (schemaJson.type === 'failure') throw invalid('the schema does not parse', messages(schemaJson.errors));

  const parts = cedar.policySetTextToParts(source.policies);
  if (parts.type === 'failure') throw invalid('the policies do not parse', messages(parts.errors));

  const staticPolicies: Record<string, string> = {};
  const ceilingPolicies: Record<string, string> = {};
  const adminPolicies: Record<string, string> = {};
  const adminForbids: string[] = [];
  const templates: Record<string, string> = {};
  const templateLayers: Record<string, { text: string; layer: string | null }> = {};
  const statics: PolicyEntry[] = [];
  const templateEntries: Record<string, PolicyEntry> = {};
  const approvals = new Map<string, ApproverSpec>();
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
      approvals.set(id, spec);
    }
    if (layer === CEILING) ceilingPolicies[id] = text;
    // Admin policies stand apart: an admin forbid never touches a decision, nor a permit of the
    // decision layers an admin call.
    if (layer === ADMIN) {
      adminPolicies[id] = text;
      if (json.json.effect === 'forbid') adminForbids.push(id);
    } else statics.push({ id, text, json: json.json, layer });
  });
  parts.policy_templates.forEach((text, i) => {
    const json = cedar.templateToJson(text);
    if (json.type === 'failure') throw invalid('a template does not parse', messages(json.errors));
    const id = name(json.json, `template${i}`);
    if (json.json.annotations?.approval !== undefined) throw invalid(`template ${JSON.stringify(id)} asks for an approval, which only a static permit may do`, [`@approval on template ${id}`]);
    if (json.json.annotations?.layer === ADMIN) throw invalid(`template ${JSON.stringify(id)} is in the admin layer, which holds static policies only`, [`@layer("admin") on template ${id}`]);
    templates[id] = text;
    templateLayers[id] = { text, layer: json.json.annotations?.layer ?? null };
    templateEntries[id] = { id, text, json: json.json, layer: json.json.annotations?.layer ?? null };
  });

  const policySet = { staticPolicies, templates };
  const validation = cedar.validate({ schema: source.schema, policies: policySet, validationSettings: { mode: 'strict' } });
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

  const sha256 = createHash('sha256').update(JSON.stringify([source.schema, source.policies, source.aliases ?? {}])).digest('hex');
  const preparsedId = `v${version}-${sha256.slice(0, 16)}`;
  const schemaName = `schema-${preparsedId}`;
  const ordinary = Object.fromEntries(Object.entries(staticPolicies).filter(([id]) => !(id in ceilingPolicies) && !(id in adminPolicies)));
  const compiled: CompiledPolicySet = {
    version, sha256, source, policyIds: Object.keys(staticPolicies), templateIds: Object.keys(templates),
    preparsedId, ceilingPreparsedId: `${preparsedId}-ceiling`, adminPreparsedId: `${preparsedId}-admin`, schemaName, templates: templateLayers, schemaJson: schemaJson.json,
    statics, templateEntries, ceilingLayer: CEILING, combinedOwnerSchemaName: null, combinedSchemaName: null,
    namedAttributes: namedAttributes([...statics, ...Object.values(templateEntries)]), slimTypes: new Set(),
    approvals,
    forbidIds: new Set([
      ...[...statics, ...Object.values(templateEntries)].filter((p) => p.json.effect === 'forbid').map((p) => p.id),
      ...adminForbids,
    ]),
  };
  if (options.prepare === false) return compiled; // validation only: nothing kept in cedar-wasm
  const schemaParsed = cedar.preparseSchema(schemaName, source.schema);
  if (schemaParsed.type === 'failure') throw invalid('the schema cannot be prepared', messages(schemaParsed.errors));
  for (const [id, policies] of [[preparsedId, ordinary], [compiled.ceilingPreparsedId, ceilingPolicies], [compiled.adminPreparsedId, adminPolicies]] as const) {
    const parsed = cedar.preparsePolicySet(id, { staticPolicies: policies });
    if (parsed.type === 'failure') throw invalid('the policy set cannot be prepared', messages(parsed.errors));
  }
  // Without these, agent decisions take one Cedar call per layer: slower, same answers.
  // Only the human-layer copies (ordinary policies) are rewritten; the rest go in as written.
  const slim = slimSchema(schemaJson.json, ['Agent', 'Human', 'Group']);
  const rewritable = slim && statics.every((p) => p.layer === CEILING || survivesJson(p.json));
  if (slim && rewritable) {
    compiled.slimTypes = slim.types;
    const prepare = (name: string, schema: cedar.SchemaJson<string> | null) => (schema && cedar.preparseSchema(name, schema).type === 'success' ? name : null);
    if (ownerIsHuman(schemaJson.json)) compiled.combinedOwnerSchemaName = prepare(`${schemaName}-owner`, slim.schema);
    const byAttribute = [...statics, ...Object.values(templateEntries)].every((p) => readsContextByAttribute(p.json));
    if (byAttribute) compiled.combinedSchemaName = prepare(`${schemaName}-combined`, combinedSchema(slim.schema));
  }
  return compiled;
}
