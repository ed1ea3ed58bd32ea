// Errors of the token endpoint as OAuth defines them (RFC 6749 §5.2, RFC 8707 `invalid_target`,
// RFC 9396 `invalid_authorization_details`): `{"error", "error_description"}`, never a problem
// document. A vocabulary of its own, apart from LeashError's codes, because OAuth clients
// match on these exact strings.

export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'invalid_authorization_details'
  /** RFC 7009: a token this server cannot revoke (not one Leash issued). */
  | 'unsupported_token_type'
  /** The node cannot issue right now (no policy set, no usable signing key, the database). */
  | 'temporarily_unavailable'
  | 'server_error';

const statuses: Partial<Record<OAuthErrorCode, number>> = { invalid_client: 401, temporarily_unavailable: 503, server_error: 500 };

export class OAuthError extends Error {
  override readonly name = 'OAuthError';
  readonly status: number;

  constructor(
    readonly error: OAuthErrorCode,
    /** For the client: says what is wrong with the request, never echoes a secret from it. */
    readonly description: string,
    /** Leash's own code for the refusal, as the decision log records it (token exchange); the client sees `error` only. */
    readonly code?: string,
  ) {
    super(description);
    this.status = statuses[error] ?? 400;
  }

  body(): { error: OAuthErrorCode; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}
