import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LeashError } from '../errors.ts';
import type { PolicySetSource } from './policy-set.ts';

/**
 * `LEASH_CEDAR_DIR`: schema.cedarschema, policies/*.cedar (in name order) and an optional
 * aliases.json (`{"user": "Human"}`).
 */
export function readPolicyFiles(dir: string): PolicySetSource {
  const schemaFile = join(dir, 'schema.cedarschema');
  if (!existsSync(schemaFile)) throw new LeashError('POLICY_INVALID', `no Cedar schema at ${schemaFile}`, { diagnostics: [] });
  const policyDir = join(dir, 'policies');
  const files = existsSync(policyDir) ? readdirSync(policyDir).filter((f) => f.endsWith('.cedar')).sort() : [];
  const aliasesFile = join(dir, 'aliases.json');
  return {
    schema: readFileSync(schemaFile, 'utf8'),
    policies: files.map((f) => readFileSync(join(policyDir, f), 'utf8')).join('\n'),
    ...(existsSync(aliasesFile) ? { aliases: JSON.parse(readFileSync(aliasesFile, 'utf8')) as Record<string, string> } : {}),
  };
}
