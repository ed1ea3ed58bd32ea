import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { isLeashError } from '../../errors.ts';
import { OAuthError } from '../../tokens/oauth-error.ts';
import { TokenRevocation } from '../../tokens/token-revocation.ts';
import { tokenVerifier } from '../../tokens/verify.ts';
import { isBearer } from '../access.ts';
import type { App, ServerDeps } from '../server.ts';
import { leashTokens } from './authzen.ts';
import { formScope, MAX_FORM_BYTES, oauthErrorHandler } from './oauth.ts';

// POST /oauth/revoke (RFC 7009) and POST /oauth/introspect (RFC 7662), in a scope of their own:
// form bodies as at the token endpoint, OAuth errors, never cached.

const TokenParam = Type.String({ description: 'a Leash access token' });

const RevokeForm = Type.Object(
  {
    token: TokenParam,
    token_type_hint: Type.Optional(Type.String({ description: 'access_token (Leash issues no other kind; any value is only a hint)' })),
    client_assertion_type: Type.Optional(Type.String({ description: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer, unless the operator token is sent instead' })),
    client_assertion: Type.Optional(Type.String({ description: 'the agent\'s client assertion, as at the token endpoint; aud may also be the revocation endpoint' })),
    client_id: Type.Optional(Type.String()),
  },
  { additionalProperties: Type.String() },
);
const IntrospectForm = Type.Object({ token: TokenParam, token_type_hint: Type.Optional(Type.String()) }, { additionalProperties: Type.String() });

const RevokeResponse = Type.Object({
  position: Type.Optional(Type.Integer()), nodesConfirmed: Type.Optional(Type.Integer()), nodesExpected: Type.Optional(Type.Integer()), nodesMissing: Type.Optional(Type.Array(Type.String())),
});
const IntrospectResponse = Type.Object({ active: Type.Boolean() }, { additionalProperties: true, description: 'active: false, or active: true with the token\'s claims and token_type' });
const OAuthErrorBody = Type.Object({ error: Type.String(), error_description: Type.String() });

export async function revocationRoutes(scope: App, deps: ServerDeps, o: { tokenEndpoint: string }): Promise<void> {
  const base = deps.publicUrl;
  const revocation = new TokenRevocation({
    issuer: base, assertionAudiences: [base, o.tokenEndpoint, `${base}/oauth/revoke`], registry: deps.view, revoked: deps.revokedTokens, keys: deps.keys.getKey,
    verify: tokenVerifier(leashTokens(deps)), db: deps.store.db, store: deps.store, commands: deps.commands, fence: (p) => deps.cluster.fence(p),
    admit: () => deps.cluster.admit(), release: (t) => deps.cluster.release(t), log: (fields, message) => scope.log.warn(fields, message),
  });

  formScope(scope, errorHandler);

  const noStore = (reply: FastifyReply) => reply.header('cache-control', 'no-store').header('pragma', 'no-cache');

  scope.post('/oauth/revoke', {
    config: { access: 'public' }, // the client assertion or the operator token, checked here: either may authenticate
    bodyLimit: MAX_FORM_BYTES,
    schema: {
      tags: ['oauth'], consumes: ['application/x-www-form-urlencoded'], body: RevokeForm,
      response: { 200: RevokeResponse, 400: OAuthErrorBody, 401: OAuthErrorBody, 503: OAuthErrorBody },
    },
  }, async (request, reply) => {
    const form = request.body as Partial<Record<string, string>>;
    const header = request.headers.authorization;
    let fenced;
    if (header !== undefined) {
      // RFC 6749 §2.3: one way of authenticating per request.
      if (form.client_assertion !== undefined || form.client_assertion_type !== undefined) throw new OAuthError('invalid_request', 'authenticate with the operator token or a client assertion, not both');
      if (!isBearer(header, deps.adminToken)) throw new OAuthError('invalid_client', 'the bearer token is not the operator token');
      fenced = await revocation.revoke(form, { kind: 'operator' });
    } else {
      fenced = await revocation.revoke(form, { kind: 'agent', form });
    }
    noStore(reply);
    return fenced ?? {};
  });

  scope.post('/oauth/introspect', {
    config: { access: 'decider' }, // a PEP's caller token or the operator token
    bodyLimit: MAX_FORM_BYTES,
    schema: {
      tags: ['oauth'], consumes: ['application/x-www-form-urlencoded'], body: IntrospectForm,
      response: { 200: IntrospectResponse, 400: OAuthErrorBody, 401: OAuthErrorBody, 503: OAuthErrorBody },
    },
  }, async (request, reply) => {
    const result = await revocation.introspect((request.body as Partial<Record<string, string>>).token);
    noStore(reply);
    return result;
  });
}

/** As the token endpoint's, and a caller the access hook refused is `invalid_client` (401). */
function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (isLeashError(err) && err.code === 'UNAUTHENTICATED') {
    const failure = new OAuthError('invalid_client', err.message);
    void reply.status(401).header('www-authenticate', 'Bearer').header('cache-control', 'no-store').header('pragma', 'no-cache').type('application/json').send(failure.body());
    return;
  }
  oauthErrorHandler(err, request, reply);
}
