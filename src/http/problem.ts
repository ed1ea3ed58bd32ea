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
  GROUP_NOT_FOUND: 'No such group',
  METHOD_NOT_ALLOWED: 'Method not allowed',
  INVALID_TRANSITION: 'The agent cannot make this transition',
  ALREADY_EXISTS: 'Already exists',
  VERSION_MISMATCH: 'The resource has changed',
  PAYLOAD_TOO_LARGE: 'The request body is too large',
  UNSUPPORTED_MEDIA_TYPE: 'Unsupported media type',
  UNKNOWN_OWNER: 'The owner is not a registered human',
  UNKNOWN_GROUP: 'A group is not registered',
  INVALID_CREDENTIALS: 'The credential pins are not usable',
  INVALID_TEMPLATE_LINK: 'The template link does not fit its template',
  IDEMPOTENCY_KEY_REUSED: 'Idempotency-Key reused for another request',
  POLICY_INVALID: 'The policy set is not valid',
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

/** Maps fastify's own errors (parsing, limits, schema validation) onto our codes. */
function fromFastify(err: FastifyError): ProblemDocument | null {
  if (err.validation) {
    return problem('VALIDATION_FAILED', err.message, {
      errors: err.validation.map((v) => ({ path: `${err.validationContext ?? ''}${v.instancePath}`, message: v.message ?? 'invalid' })),
    });
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
  void reply.status(body.status).type('application/problem+json').send(body);
}
