import { hash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { LeashError } from '../errors.ts';
import type { HumanVerifier } from '../humans/human-tokens.ts';
import type { RegistryState } from '../registry/registry-view.ts';

// Who may call a route is part of the route's declaration, decided on the route the router
// matched (never on the URL as sent: the router decodes percent-escapes and absolute-form
// targets, so a test of the raw URL is a test of something else).
//
//   public    anyone: health, readiness, metadata documents, the OpenAPI document
//   decider   a PEP's caller token (LEASH_PEP_TOKENS) or the operator token
//   operator  the operator token, or (where the route declares its admin decision) a human's
//             token from the organisation's identity provider, whose call Cedar then decides
//             (humans/admin.ts)
//   metrics   the operator token or the metrics token (LEASH_METRICS_TOKEN): `/metrics` only
//
// A route that states nothing cannot be registered, and a request that matched no route
// (a 404) needs the operator token too: nothing is open unless it says so.

export type Access = 'public' | 'decider' | 'operator' | 'metrics';

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** A decision caller: `operator`, or `pep-<n>` for the n-th token of LEASH_PEP_TOKENS (never the token). */
    pep?: string;
  }
}

/** Every route the server registered, with who may call it (for tests and the OpenAPI document). */
export interface RouteAccess {
  method: string;
  url: string;
  access: Access;
}

const ACCESS: readonly Access[] = ['public', 'decider', 'operator', 'metrics'];

const digest = (s: string): Buffer => hash('sha256', s, 'buffer');

/** RFC 7235: the scheme is case-insensitive; the token is one run of visible ASCII. */
const BEARER = /^bearer +([\x21-\x7e]{1,4096}) *$/i;

export interface AccessControl {
  routes: RouteAccess[];
  /** For `onRoute`: refuses a route that does not state its access, and keeps the table. */
  declare(route: { method: string | string[]; url: string; config?: unknown; schema?: object }): void;
  /** For `onRequest`: enforces what the matched route states, and says who called (`request.caller`). */
  check(request: FastifyRequest): Promise<void>;
}

/** Whether an Authorization header carries exactly this bearer token (compared in constant time). */
export function isBearer(header: unknown, token: string): boolean {
  if (typeof header !== 'string') return false;
  const match = BEARER.exec(header);
  return match !== null && timingSafeEqual(digest(match[1]!), digest(token));
}

/** A JWS compact serialization: three base64url parts (what an operator or PEP token never is). */
const JWT = /^[\w-]+\.[\w-]+\.[\w-]*$/;

export interface HumanSignIn {
  verify: HumanVerifier;
  registry: RegistryState;
}

export function accessControl(tokens: { operator: string; deciders: string[]; humans?: HumanSignIn | null; metrics?: string | null }): AccessControl {
  const operator = [digest(tokens.operator)];
  const deciders = [...operator, ...tokens.deciders.map(digest)];
  const scrapers = tokens.metrics ? [...operator, digest(tokens.metrics)] : operator;
  const routes: RouteAccess[] = [];
  return {
    routes,
    declare(route) {
      const access = (route.config as { access?: unknown } | undefined)?.access;
      if (!ACCESS.includes(access as Access)) {
        throw new Error(`route ${String(route.method)} ${route.url} does not declare its access (config.access: ${ACCESS.join(' | ')})`);
      }
      for (const method of [route.method].flat()) routes.push({ method, url: route.url, access: access as Access });
      // The OpenAPI document says the same (the default there is the operator token).
      if (route.schema && access !== 'operator') (route.schema as { security?: unknown }).security = access === 'public' ? [] : [{ operator: [] }, { [access === 'metrics' ? 'metrics' : 'caller']: [] }];
    },
    async check(request) {
      const access: Access = request.routeOptions.config?.access ?? 'operator';
      if (access === 'public') return;
      const header = request.headers.authorization;
      if (typeof header !== 'string' || header.length === 0) throw new LeashError('UNAUTHENTICATED', 'a bearer token is required');
      const match = BEARER.exec(header);
      // Compare digests in constant time; the token itself is never logged or echoed.
      const given = match ? digest(match[1]!) : null;
      const accepted = access === 'decider' ? deciders : access === 'metrics' ? scrapers : operator;
      const at = given ? accepted.findIndex((token) => timingSafeEqual(given, token)) : -1;
      if (at >= 0) {
        if (access === 'operator') request.caller = { kind: 'operator' };
        else if (access === 'decider') request.pep = at === 0 ? 'operator' : `pep-${at}`;
        return;
      }
      // A person's token, on an admin route that says what Cedar is to decide.
      const humans = tokens.humans;
      if (match && access === 'operator' && humans && request.routeOptions.config?.admin && JWT.test(match[1]!)) {
        const checked = await humans.verify(match[1]!, humans.registry, new Date());
        if (!checked.ok) throw new LeashError('UNAUTHENTICATED', `the human token is refused: ${checked.detail}`, { tokenCode: checked.code });
        request.caller = { kind: 'human', id: checked.human };
        return;
      }
      throw new LeashError('UNAUTHENTICATED', match ? 'the bearer token is not accepted for this route' : 'the Authorization header is not a bearer token');
    },
  };
}
