import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { isLeashError } from '../../errors.ts';
import { pinnableAlgorithms } from '../../tokens/pins.ts';
import { OAuthError } from '../../tokens/oauth-error.ts';
import { GRANT_TOKEN_TYPE } from '../../tokens/grant-exchange.ts';
import { ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE } from '../../tokens/token-exchange.ts';
import { CLIENT_CREDENTIALS, TOKEN_EXCHANGE, TokenService, type TokenForm } from '../../tokens/token-service.ts';
import type { App, ServerDeps } from '../server.ts';
import { leashTokens } from './authzen.ts';
import { revocationRoutes } from './oauth-revocation.ts';

// Leash as an OAuth authorization server for agents: its metadata (RFC 8414), its keys, and
// the token endpoint (client credentials with a private_key_jwt client assertion). Every URL
// comes from LEASH_PUBLIC_URL, never from the request's Host header, which the caller writes.

/** The whole form, every parameter included. */
export const MAX_FORM_BYTES = 24 * 1024;
const MAX_PARAMS = 32;

const Metadata = Type.Object({
  issuer: Type.String(),
  token_endpoint: Type.String(),
  jwks_uri: Type.String(),
  introspection_endpoint: Type.String(),
  revocation_endpoint: Type.String(),
  grant_types_supported: Type.Array(Type.String()),
  token_endpoint_auth_methods_supported: Type.Array(Type.String()),
  token_endpoint_auth_signing_alg_values_supported: Type.Array(Type.String()),
  authorization_details_types_supported: Type.Array(Type.String()),
});

const PublicJwk = Type.Object({ kty: Type.String(), crv: Type.String(), x: Type.String(), y: Type.String(), kid: Type.String(), alg: Type.String(), use: Type.String() }, { additionalProperties: false });
const Jwks = Type.Object({ keys: Type.Array(PublicJwk) }, { additionalProperties: false });

/** RFC 6749 §4.4.2, RFC 7523 §2.2 and RFC 8693 §2.1; unknown parameters are ignored (RFC 6749 §3.2), each at most once. */
const TokenFormBody = Type.Object(
  {
    grant_type: Type.String({ description: `${CLIENT_CREDENTIALS}, or ${TOKEN_EXCHANGE} (a parent agent's token exchanged for one its sub-agent uses)` }),
    client_assertion_type: Type.Optional(Type.String({ description: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' })),
    client_assertion: Type.Optional(Type.String({ description: 'a JWT signed by a key in the agent\'s pins: iss = sub = the agent id, aud = the issuer or the token endpoint, exp at most 5 minutes ahead, a jti never used before' })),
    client_id: Type.Optional(Type.String({ description: 'the agent id, if given (it must match the assertion)' })),
    authorization_details: Type.Optional(Type.String({ description: 'JSON array of leash:cedar entries (RFC 9396); required' })),
    resource: Type.Optional(Type.String({ description: 'an absolute URI (RFC 8707): the token\'s aud; default LEASH_TOKEN_AUDIENCE' })),
    subject_token: Type.Optional(Type.String({ description: `token exchange: the client's own Leash access token` })),
    subject_token_type: Type.Optional(Type.String({ description: `token exchange: ${ACCESS_TOKEN_TYPE} (a parent agent's token) or ${GRANT_TOKEN_TYPE} (a human's grant id)` })),
    actor_token: Type.Optional(Type.String({ description: 'token exchange: a client assertion signed by the sub-agent\'s key (iss = sub = the sub-agent, the same rules as client_assertion, its jti used once)' })),
    actor_token_type: Type.Optional(Type.String({ description: `token exchange: ${JWT_TOKEN_TYPE}` })),
  },
  { additionalProperties: Type.String() },
);

const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  authorization_details: Type.Array(Type.Unknown()),
  issued_token_type: Type.Optional(Type.Literal(ACCESS_TOKEN_TYPE, { description: 'token exchange only (RFC 8693)' })),
});
const OAuthErrorBody = Type.Object({ error: Type.String(), error_description: Type.String() });

export async function oauthRoutes(app: App, deps: ServerDeps): Promise<void> {
  const base = deps.publicUrl;
  const tokenEndpoint = `${base}/oauth/token`;
  const metadata = {
    issuer: base,
    token_endpoint: tokenEndpoint,
    jwks_uri: `${base}/.well-known/jwks.json`,
    introspection_endpoint: `${base}/oauth/introspect`,
    revocation_endpoint: `${base}/oauth/revoke`,
    grant_types_supported: [CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: [...pinnableAlgorithms],
    authorization_details_types_supported: ['leash:cedar'],
  };

  app.get('/.well-known/oauth-authorization-server', { config: { access: 'public' }, schema: { tags: ['oauth'], response: { 200: Metadata } } }, async () => metadata);

  app.get('/.well-known/jwks.json', { config: { access: 'public' }, schema: { tags: ['oauth'], response: { 200: Jwks } } }, async (_request, reply) => {
    // Short: a node that starts publishes a key of its own (and verifiers refetch on an unknown kid anyway).
    void reply.header('cache-control', 'public, max-age=60');
    return deps.keys.jwks();
  });

  const service = new TokenService({
    issuer: base, tokenEndpoint, defaultAudience: deps.tokenAudience, registry: deps.view, policies: () => deps.policies.current(), db: deps.store.db,
    signer: deps.signer, admit: () => deps.cluster.admit(), release: (ticket) => deps.cluster.release(ticket), log: (fields, message) => app.log.warn(fields, message),
    leash: leashTokens(deps), decisions: deps.decisions, nodeId: deps.nodeId,
  });

  // Its own scope: a form parser instead of JSON, and OAuth errors instead of problem documents.
  await app.register(async (scope: App) => {
    formScope(scope, oauthErrorHandler);

    scope.post('/oauth/token', {
      config: { access: 'public' }, // the client assertion is the authentication
      bodyLimit: MAX_FORM_BYTES,
      schema: {
        tags: ['oauth'], consumes: ['application/x-www-form-urlencoded'], body: TokenFormBody,
        response: { 200: TokenResponse, 400: OAuthErrorBody, 401: OAuthErrorBody, 503: OAuthErrorBody },
      },
    }, async (request, reply) => {
      const issued = await service.issue(request.body as TokenForm);
      deps.metrics.tokensIssued.inc();
      void reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      return issued;
    });
  });

  // ---- Revocation (RFC 7009) and introspection (RFC 7662): oauth-revocation.ts ----
  await app.register(async (scope: App) => revocationRoutes(scope, deps, { tokenEndpoint }));
}

/** A parameter name as an error may show it: bounded, printable. */
const shown = (name: string) => JSON.stringify(name.slice(0, 64).replace(/[^\x20-\x7e]/g, '?'));

/** The form's parameters, each at most once (RFC 6749 §3.2); one `resource` per token (RFC 8707 `invalid_target`). */
/** An OAuth endpoint's scope: form bodies only (no JSON parser), and `handler` for its errors. */
export function formScope(scope: App, handler: (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => void): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
    try {
      done(null, formOf(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  scope.setErrorHandler(handler);
}

export function formOf(body: string): TokenForm {
  const params = new Map<string, string>();
  let count = 0;
  for (const [name, value] of new URLSearchParams(body)) {
    if (++count > MAX_PARAMS) throw new OAuthError('invalid_request', `the form has more than ${MAX_PARAMS} parameters`);
    if (params.has(name)) {
      if (name === 'resource') throw new OAuthError('invalid_target', 'one resource per token');
      throw new OAuthError('invalid_request', `parameter ${shown(name)} is repeated`);
    }
    params.set(name, value);
  }
  // (Own properties whatever the names, `__proto__` included.)
  return Object.fromEntries(params);
}

/**
 * Where an error was thrown, without what it says: the stack's frames only, read after the
 * message's own lines (a message that quotes the form can hold a line that looks like a
 * frame), at most 12 of them and 200 characters each.
 */
export function stackFrames(err: { message?: unknown; stack?: unknown }): string[] {
  if (typeof err.stack !== 'string') return [];
  const messageLines = typeof err.message === 'string' ? err.message.split('\n').length : 1;
  return err.stack.split('\n').slice(messageLines).filter((l) => l.trimStart().startsWith('at ')).slice(0, 12).map((l) => l.trim().slice(0, 200));
}

/** Whatever went wrong, the token endpoint answers as OAuth says (RFC 6749 §5.2), and is never cached. */
export function oauthErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  let failure: OAuthError;
  if (err instanceof OAuthError) {
    failure = err;
  } else if (err.validation) {
    failure = new OAuthError('invalid_request', err.message);
  } else if (isLeashError(err) && err.code === 'VALIDATION_FAILED') {
    failure = new OAuthError('invalid_request', err.message); // what the body holds cannot be kept (json-limits.ts)
  } else if (isLeashError(err) && err.code === 'NOT_READY') {
    failure = new OAuthError('temporarily_unavailable', err.message);
  } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.statusCode === 415) {
    failure = new OAuthError('invalid_request', 'the body must be application/x-www-form-urlencoded');
  } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
    failure = new OAuthError('invalid_request', `the body is larger than ${MAX_FORM_BYTES} bytes`);
  } else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    failure = new OAuthError('invalid_request', 'the request is malformed');
  } else {
    // Never the internals to the caller. The log gets where it failed, not what the message
    // says: an unexpected error's message may quote the form, which holds the assertion.
    request.log.error({ errType: String(err.name).slice(0, 64), errCode: typeof err.code === 'string' ? err.code.slice(0, 64) : undefined, frames: stackFrames(err) }, 'token endpoint failed');
    failure = new OAuthError('server_error', 'an internal error occurred; see the server log');
  }
  void reply.status(failure.status).header('cache-control', 'no-store').header('pragma', 'no-cache').type('application/json').send(failure.body());
}
