/**
 * One error type for everything Leash refuses. The `code` is the stable contract
 * (tests and clients match on it); the message is for humans and may change.
 */
export const errorStatus = {
  VALIDATION_FAILED: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  AGENT_NOT_FOUND: 404,
  HUMAN_NOT_FOUND: 404,
  GRANT_NOT_FOUND: 404,
  GROUP_NOT_FOUND: 404,
  APPROVAL_NOT_FOUND: 404,
  FINDING_NOT_FOUND: 404,
  STREAM_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  INVALID_TRANSITION: 409,
  ALREADY_EXISTS: 409,
  APPROVAL_EXPIRED: 409,
  VERSION_MISMATCH: 412,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNKNOWN_OWNER: 422,
  UNKNOWN_GROUP: 422,
  INVALID_CREDENTIALS: 422,
  INVALID_TEMPLATE_LINK: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  POLICY_INVALID: 422,
  LIMIT_EXCEEDED: 422,
  NOT_READY: 503,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof errorStatus;

export class LeashError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra members for the problem document (e.g. `currentState`). Never secrets. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'LeashError';
    this.code = code;
    this.status = errorStatus[code];
    this.details = details;
  }
}

export const isLeashError = (e: unknown): e is LeashError => e instanceof LeashError;
