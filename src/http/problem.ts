import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errorStatus, LeashError, type ErrorCode } from '../errors.ts';

/** RFC 9457 problem document; `code` is the stable member clients match on. */
export interface ProblemDocument {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail?: string;
  instance?: string;
  [extension: string]: unknown;
}

const titles: Record<ErrorCode, string> = {
  VALIDATION_FAILED: 'The request is malformed',
  UNAUTHENTICATED: 'Authentication required',
  FORBIDDEN: 'Not allowed',
  NOT_FOUND: 'No such resource',
  AGENT_NOT_FOUND: 'No such agent',
  HUMAN_NOT_FOUND: 'No such human',
  GRANT_NOT_FOUND: 'No such grant',
  GROUP_NOT_FOUND: 'No such group',
  APPROVAL_NOT_FOUND: 'No such approval',
  FINDING_NOT_FOUND: 'No such finding',
  STREAM_NOT_FOUND: 'No such event stream',
  METHOD_NOT_ALLOWED: 'Method not allowed',
  INVALID_TRANSITION: 'This transition is not possible from the current state',
  ALREADY_EXISTS: 'Already exists',
  APPROVAL_EXPIRED: 'The approval has expired',
  VERSION_MISMATCH: 'The resource has changed',
  PAYLOAD_TOO_LARGE: 'The request body is too large',
  RATE_LIMITED: 'Too many requests',
  UNSUPPORTED_MEDIA_TYPE: 'Unsupported media type',
  UNKNOWN_OWNER: 'The owner is not a registered human',
  UNKNOWN_GROUP: 'A group is not registered',
  INVALID_CREDENTIALS: 'The credential pins are not usable',
  INVALID_TEMPLATE_LINK: 'The template link does not fit its template',
  IDEMPOTENCY_KEY_REUSED: 'Idempotency-Key reused for another request',
  POLICY_INVALID: 'The policy set is not valid',
  LIMIT_EXCEEDED: 'A limit is reached',
  NOT_READY: 'This node is not ready',
  INTERNAL: 'Internal error',
};

export function problem(code: ErrorCode, detail: string | undefined, extensions: Record<string, unknown> = {}): ProblemDocument {
  return {
    type: `urn:leash:problem:${code.toLowerCase().replaceAll('_', '-')}`,
    title: titles[code],
    status: errorStatus[code],
    code,
    ...(detail ? { detail } : {}),
    ...extensions,
  };
}

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/**
 * Schema errors as a caller can act on them: the property that is not allowed, by name; for
 * a choice of values (TypeBox writes them as anyOf of consts), the values that are.
 */
function validationErrors(context: string, errors: AjvError[]): { path: string; message: string }[] {
  const out = new Map<string, { path: string; message: string }>();
  const allowed = new Map<string, unknown[]>();
  for (const e of errors) {
    const path = `${context}${e.instancePath}`;
    if (e.keyword === 'const') {
      allowed.set(path, [...(allowed.get(path) ?? []), e.params.allowedValue]);
      continue;
    }
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') message = `has a property that is not allowed: ${JSON.stringify(String(e.params.additionalProperty).slice(0, 100))}`;
    else if (e.keyword === 'anyOf' && allowed.has(path)) message = `must be one of ${allowed.get(path)!.map((v) => JSON.stringify(v)).join(', ')}`;
    else if (e.keyword === 'enum') message = `must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    out.set(`${path}\n${message}`, { path, message });
  }
  if (out.size === 0) for (const [path, values] of allowed) out.set(path, { path, message: `must be ${values.map((v) => JSON.stringify(v)).join(' or ')}` });
  return [...out.values()];
}

/** Maps fastify's own errors (parsing, limits, schema validation) onto our codes. */
function fromFastify(err: FastifyError): ProblemDocument | null {
  if (err.validation) {
    const errors = validationErrors(err.validationContext ?? '', err.validation as AjvError[]);
    return problem('VALIDATION_FAILED', errors.map((e) => `${e.path} ${e.message}`).join('; '), { errors });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return problem('PAYLOAD_TOO_LARGE', err.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return problem('UNSUPPORTED_MEDIA_TYPE', 'send application/json');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return problem('VALIDATION_FAILED', 'the body is not valid JSON');
    default:
      break;
  }
  if (err instanceof SyntaxError || (err.statusCode === 400 && /JSON/i.test(err.message))) {
    return problem('VALIDATION_FAILED', 'the body is not valid JSON');
  }
  if (err.statusCode === 413) return problem('PAYLOAD_TOO_LARGE', err.message);
  if (err.statusCode === 415) return problem('UNSUPPORTED_MEDIA_TYPE', err.message);
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return { ...problem('VALIDATION_FAILED', err.message), status: err.statusCode };
  }
  return null;
}

export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  let body: ProblemDocument;
  if (err instanceof LeashError) {
    body = problem(err.code, err.message, err.details);
    if (err.status >= 500) request.log.error({ err }, 'request failed');
  } else {
    const mapped = fromFastify(err);
    if (mapped) {
      body = mapped;
    } else {
      // Never leak internals (SQL, stack, paths) to the caller; the log has them.
      request.log.error({ err }, 'unhandled error');
      body = problem('INTERNAL', 'an internal error occurred; see the server log', { requestId: request.id });
    }
  }
  if (body.code === 'UNAUTHENTICATED') reply.header('www-authenticate', 'Bearer realm="leash"');
  if (body.code === 'RATE_LIMITED' && typeof body.retryAfterSeconds === 'number') reply.header('retry-after', String(body.retryAfterSeconds));
  void reply.status(body.status).type('application/problem+json').send(body);
}
