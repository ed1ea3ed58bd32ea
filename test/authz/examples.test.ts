import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite } from '../support/backends.ts';
import { PEP_TOKEN, startTestNode, type TestNode } from '../support/node.ts';

// cedar/examples/{ALLOW,DENY}/*.json: AuthZEN requests against the shipped cedar/ policies,
// in folders named by the expected outcome (as cedar-examples does), with the registry of
// cedar/examples/registry.json.

const dir = fileURLToPath(new URL('../../cedar/examples', import.meta.url));
const cases = (['ALLOW', 'DENY'] as const).flatMap((outcome) =>
  readdirSync(join(dir, outcome)).filter((f) => f.endsWith('.json')).map((file) => ({ outcome, file, request: JSON.parse(readFileSync(join(dir, outcome, file), 'utf8')) })),
);

let node: TestNode;
beforeAll(async () => {
  node = await startTestNode(freshPglite()); // boots with cedar/ as policy set version 1
  const registry = JSON.parse(readFileSync(join(dir, 'registry.json'), 'utf8')) as { groups: unknown[]; humans: unknown[] };
  for (const g of registry.groups) expect((await node.api('POST', '/v1/groups', g)).status).toBe(201);
  for (const h of registry.humans) expect((await node.api('POST', '/v1/humans', h)).status).toBe(201);
});
afterAll(async () => node?.close());

describe('example requests for the shipped policies', () => {
  it('has examples of both outcomes', () => {
    expect(cases.filter((c) => c.outcome === 'ALLOW').length).toBeGreaterThan(0);
    expect(cases.filter((c) => c.outcome === 'DENY').length).toBeGreaterThan(0);
  });

  it.each(cases)('$outcome/$file', async ({ outcome, request }) => {
    const res = await node.api('POST', '/access/v1/evaluation', request, {}, PEP_TOKEN);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.decision).toBe(outcome === 'ALLOW');
    expect(res.body.context.policyVersion).toBe(1);
  });
});
