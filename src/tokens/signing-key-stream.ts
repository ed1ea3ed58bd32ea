import { assertNever, type CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';

// The public halves of the keys Leash signs its access tokens with: one stream per node
// (`signing-key/<node id>`), one event per key that node generated. The private half never
// leaves the node's memory (node-signer.ts); only what is here is ever written down.

export const SIGNING_KEY_STREAM_TYPE = 'signing-key';
export const SIGNING_KEY_PUBLISHED = 'SigningKeyPublished';

/** Exactly the public members of an ES256 key, with its id, algorithm and use. */
export interface PublicSigningJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
  kid: string;
  alg: 'ES256';
  use: 'sig';
}

export interface SigningKeyPublished {
  type: typeof SIGNING_KEY_PUBLISHED;
  data: {
    nodeId: string;
    jwk: PublicSigningJwk;
    /** The node signs nothing with this key from this instant on (ISO 8601); it has rotated to a new one before. */
    signUntil: string;
    /** The longest lifetime (`exp − iat`) of any token the node signs with this key. */
    maxTokenLifetimeSeconds: number;
  };
}

export type SigningKeyCommand = { type: 'PublishSigningKey'; data: SigningKeyPublished['data']; metadata: CommandMetadata };
export type SigningKeyState = { keys: number };

export const signingKeyAggregate: Aggregate<SigningKeyCommand, SigningKeyPublished, SigningKeyState> = {
  streamType: SIGNING_KEY_STREAM_TYPE,
  initialState: () => ({ keys: 0 }),
  decide: (command) => {
    switch (command.type) {
      case 'PublishSigningKey':
        return [{ type: SIGNING_KEY_PUBLISHED, data: command.data }];
      default:
        return assertNever(command.type);
    }
  },
  evolve: (state) => ({ keys: state.keys + 1 }),
};

/** Only the public members, whatever else the object holds: what goes into an event or a JWKS. */
export function publicMembers(jwk: { x?: unknown; y?: unknown }, kid: string): PublicSigningJwk {
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new Error('not a P-256 public key');
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, kid, alg: 'ES256', use: 'sig' };
}
