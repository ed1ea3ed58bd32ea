import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { canonicalJson } from '../../canonical-json.ts';
import type { CommandOptions } from '../../service/command-handler.ts';

/** What every write takes from its request: clock, actor, If-Match and Idempotency-Key. */
export function writeOptions(request: FastifyRequest): CommandOptions {
  const ifMatch = request.headers['if-match'];
  const key = request.headers['idempotency-key'];
  const options: CommandOptions = { now: new Date(), actor: 'operator' };
  if (typeof ifMatch === 'string') options.expectedVersion = Number(/[0-9]+/.exec(ifMatch)![0]);
  if (typeof key === 'string') {
    options.idempotencyKey = key;
    options.requestHash = createHash('sha256')
      .update(canonicalJson({ method: request.method, route: request.routeOptions.url, params: request.params ?? {}, body: request.body ?? null }))
      .digest('hex');
  }
  return options;
}

export const etag = (version: number): string => `"${version}"`;
