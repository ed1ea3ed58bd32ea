import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { canonicalJson } from '../../canonical-json.ts';
import { actorOf } from '../../humans/admin.ts';
import type { CommandOptions } from '../../service/command-handler.ts';

/** What every write takes from its request: clock, actor, If-Match and Idempotency-Key. */
export function writeOptions(request: FastifyRequest): CommandOptions {
  const ifMatch = request.headers['if-match'];
  const key = request.headers['idempotency-key'];
  const options: CommandOptions = { now: new Date(), ...byCaller(request) };
  if (typeof ifMatch === 'string') options.expectedVersion = Number(/[0-9]+/.exec(ifMatch)![0]);
  if (typeof key === 'string') {
    options.idempotencyKey = key;
    options.requestHash = createHash('sha256')
      .update(canonicalJson({ method: request.method, route: request.routeOptions.url, params: request.params ?? {}, body: request.body ?? null }))
      .digest('hex');
  }
  return options;
}

/**
 * Who made the call, as events record it: a human whose call Cedar decided (humans/admin.ts), or
 * the operator token, the break-glass way in. `suffix` says how (`:kill-switch`).
 */
export function byCaller(request: FastifyRequest, suffix = ''): Pick<CommandOptions, 'actor' | 'breakGlass'> {
  return { actor: `${actorOf(request.caller)}${suffix}`, ...(request.caller?.kind === 'human' ? {} : { breakGlass: true }) };
}

export const etag = (version: number): string => `"${version}"`;
