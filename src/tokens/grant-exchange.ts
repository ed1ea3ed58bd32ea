import { randomUUID } from 'node:crypto';
import { detailsOf } from '../authz/details.ts';
import { GRANT_CLAIM } from '../authz/token-layer.ts';
import { grantInForce } from '../registry/grants.ts';
import { ACCESS_TOKEN_SECONDS } from './node-signer.ts';
import { OAuthError } from './oauth-error.ts';
import { ACCESS_TOKEN_TYPE, DELEGATION_LAYER, EXCHANGE_RECORD_KIND, refuseInactiveClient, requestedWithin, type ExchangeParty } from './token-exchange.ts';
import type { TokenForm, TokenResponse } from './token-service.ts';
import { MAX_TOKEN_CHARS } from './verify.ts';

// A token for a human's grant (RFC 8693 token exchange, the grant's id as the subject token):
// the agent the human granted asks, with its own client assertion, for a token that acts for
// the human (`sub` the human, `act.sub` the agent), within the grant and the agent's ceiling,
// never outliving the grant. Every outcome after the agent authenticated is a recorded decision.

export const GRANT_TOKEN_TYPE = 'urn:leash:params:oauth:token-type:grant';
/** The recorded action of a grant's exchange: the human acting through the agent. */
export const ACT_FOR_ACTION = 'act-for';

const MAX_GRANT_ID_CHARS = 64;

export async function grantExchange(party: ExchangeParty, form: TokenForm, now: Date): Promise<TokenResponse> {
  const grantId = form.subject_token;
  if (grantId === undefined || grantId.length === 0 || grantId.length > MAX_GRANT_ID_CHARS) throw new OAuthError('invalid_request', 'subject_token must be a grant id');
  if (form.actor_token !== undefined || form.actor_token_type !== undefined) throw new OAuthError('invalid_request', 'a grant\'s token is for the agent it was granted to: no actor_token');
  if (form.authorization_details === undefined) throw new OAuthError('invalid_request', 'authorization_details is required');
  const client = await party.authenticateClient(form, now);
  const { deps } = party;
  const human = deps.registry.grantHolder(grantId) ?? null;
  const record = { human, agent: client.record.id, grant: grantId, requested: form.authorization_details, issued: null as { jti: string; exp: number } | null };
  const write = async (code: string | null) => {
    try {
      await deps.decisions.record({
        id: randomUUID(), nodeId: deps.nodeId, at: now, decision: code === null, layer: DELEGATION_LAYER, code, reasons: code === null ? [`grant:${grantId}`] : [],
        request: {
          kind: EXCHANGE_RECORD_KIND, subject: human === null ? null : { type: 'Human', id: human }, action: { name: ACT_FOR_ACTION }, resource: { type: 'Agent', id: record.agent },
          context: { grant: grantId, requested: record.requested, ...(record.issued ? { issued: record.issued } : {}) },
        },
        policyVersion: deps.policies()?.version ?? 0, logPosition: deps.registry.position,
      });
    } catch (err) {
      deps.log({ err: (err as Error).message }, 'recording a grant\'s token exchange failed');
      throw new OAuthError('temporarily_unavailable', 'the exchange could not be recorded durably, so it is not given');
    }
  };
  try {
    const issued = await issueForGrant(party, form, client, human, grantId, now, record);
    await write(null);
    return issued;
  } catch (err) {
    if (err instanceof OAuthError && err.error !== 'temporarily_unavailable' && err.error !== 'server_error') await write(err.code ?? err.error);
    throw err;
  }
}

async function issueForGrant(
  party: ExchangeParty, form: TokenForm, client: Awaited<ReturnType<ExchangeParty['authenticateClient']>>, human: string | null, grantId: string, now: Date,
  out: { issued: { jti: string; exp: number } | null },
): Promise<TokenResponse> {
  const { deps } = party;
  const A = client.record;
  const refused = (code: string, why: string) => new OAuthError('invalid_grant', why, code);
  refuseInactiveClient(client);
  // The same words for a grant that does not exist and one given to another agent.
  const grant = human === null ? undefined : deps.registry.humans.get(human)?.record.grants?.find((g) => g.id === grantId);
  if (!grant || grant.agent !== A.id) throw refused('GRANT_NOT_FOUND', 'no grant to this agent has this id');
  if (!grantInForce(grant, now)) throw refused(grant.status === 'revoked' ? 'GRANT_REVOKED' : 'GRANT_EXPIRED', `the grant is ${grant.status === 'revoked' ? 'revoked' : 'expired'}`);
  const held = detailsOf(grant.authorization_details);
  if (!held.ok) throw refused(held.code, 'the grant\'s authorization_details cannot be read');
  const entries = requestedWithin(party, form.authorization_details, { held: held.details, heldBy: 'the grant', code: 'DETAILS_BEYOND_GRANT' }, A, client.version, 'the agent\'s ceiling');

  const iat = Math.floor(now.getTime() / 1000);
  const exp = Math.min(iat + Math.min(ACCESS_TOKEN_SECONDS, A.credentials!.maxTokenLifetimeSeconds), Math.floor(Date.parse(grant.expiresAt) / 1000));
  const claims = {
    iss: deps.issuer, sub: human!, aud: party.audienceOf(form.resource), client_id: A.id, iat, exp, jti: randomUUID(), act: { sub: A.id }, [GRANT_CLAIM]: grant.id, authorization_details: entries,
  };
  const token = await deps.signer.sign(claims, now);
  if (token === null) throw new OAuthError('temporarily_unavailable', 'this node has no signing key it may use right now');
  if (token.length > MAX_TOKEN_CHARS) throw new OAuthError('invalid_authorization_details', 'authorization_details is too large for a token', 'DETAILS_MALFORMED');
  out.issued = { jti: claims.jti, exp };
  return { access_token: token, token_type: 'Bearer', expires_in: Math.max(0, exp - iat), authorization_details: entries, issued_token_type: ACCESS_TOKEN_TYPE };
}
