import { Type } from 'typebox';
import { MAX_LIMIT, search, type SearchKind, type SearchRequest } from '../../authz/search.ts';
import { Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';

// AuthZEN 1.0 search (access review): POST /access/v1/search/{subject,action,resource}. Callers
// are PEPs and the operator, as for evaluations. See authz/search.ts for what is searched.

const open = { additionalProperties: true } as const;
const Properties = Type.Record(Type.String(), Type.Unknown());
const Typed = Type.Object({ type: Type.String({ minLength: 1, maxLength: 256 }), id: Type.Optional(Type.String({ maxLength: 1024 })), properties: Type.Optional(Properties) }, open);
const Identified = Type.Object({ type: Type.String({ minLength: 1, maxLength: 256 }), id: Type.String({ maxLength: 1024 }), properties: Type.Optional(Properties) }, open);
const Action = Type.Object({ name: Type.String({ maxLength: 512 }), properties: Type.Optional(Properties) }, open);
const Page = Type.Object({ token: Type.Optional(Type.String({ maxLength: 2048 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT })) }, open);
const Context = Type.Record(Type.String(), Type.Unknown());

const bodies: Record<SearchKind, ReturnType<typeof Type.Object>> = {
  // The subject searched for: its type only (an id, if sent, is ignored).
  subject: Type.Object({ subject: Typed, action: Action, resource: Identified, context: Type.Optional(Context), page: Type.Optional(Page) }, open),
  action: Type.Object({ subject: Identified, resource: Identified, context: Type.Optional(Context), page: Type.Optional(Page) }, open),
  // The resources searched: those of this type the request's context.entities name.
  resource: Type.Object({ subject: Identified, action: Action, resource: Typed, context: Type.Optional(Context), page: Type.Optional(Page) }, open),
};

const Response = Type.Object({
  page: Type.Object({ next_token: Type.String(), count: Type.Integer() }),
  results: Type.Array(Type.Object({}, open)),
}, open);

export async function searchRoutes(app: App, deps: ServerDeps): Promise<void> {
  for (const kind of ['subject', 'action', 'resource'] as const) {
    app.post(`/access/v1/search/${kind}`, {
      config: { access: 'decider', exactValues: true },
      schema: { tags: ['authzen'], body: bodies[kind], response: { 200: Response, 400: Problem, 401: Problem, 413: Problem, 503: Problem } },
    }, async (request) => {
      // Caught up, as a decision is (or refused if this node has lost the broadcast); the ticket is
      // not held through the search, which takes turns with other work and must not hold back
      // this node's confirmations of revocations meanwhile.
      deps.cluster.release(await deps.cluster.admit());
      return search(kind, request.body as unknown as SearchRequest, deps.policies.current(), deps.view, new Date());
    });
  }
}
