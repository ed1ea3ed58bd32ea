import { exportJWK, generateKeyPair } from 'jose';
import { RegistryView } from '../../src/registry/registry-view.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';

// What in-process decision tests start from: an issuer whose ES256 tokens the agents they
// register accept, and a registry view fed events by hand.

export async function testIssuer() {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };
  const credentials = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwks: { keys: [jwk] } };
  return { keys, credentials };
}

export function handFedView() {
  const view = new RegistryView();
  let position = 0;
  const apply = (streamType: string, id: string, version: number, type: string, data: Record<string, unknown>) =>
    view.apply({ position: ++position, streamId: `${streamType}/${id}`, streamType, version, type, data, metadata: {}, at: new Date(), idempotencyKey: null, prevHash: '', hash: '' } as StoredEvent);
  return { view, apply };
}
