import { LeashError } from '../../errors.ts';
import { adminOn } from '../../humans/admin.ts';
import { suggestGrants } from '../../monitoring/suggestion.ts';
import { IdParams, Problem, SuggestionQuery, SuggestionView } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { etag } from './write-options.ts';

// SPEC §9 least privilege over HTTP: the narrowest grants covering what an agent was allowed
// in the last days, what each change removes, and the what-if of the proposal on that window.
// Read-only: applying it is the agent's authorize (the CLI's `leash suggest --apply`).

export async function suggestionRoutes(app: App, deps: ServerDeps): Promise<void> {
  app.get('/v1/agents/:id/suggestion', {
    config: { access: 'operator', admin: adminOn.param('read', 'Agent') },
    schema: { tags: ['agents'], params: IdParams, querystring: SuggestionQuery, response: { 200: SuggestionView, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 503: Problem } },
  }, async (request, reply) => {
    const agent = deps.view.agents.get(request.params.id);
    if (!agent) throw new LeashError('AGENT_NOT_FOUND', `no agent ${request.params.id}`);
    const policies = deps.policies.current();
    if (!policies) throw new LeashError('NOT_READY', 'no policy set is loaded, so the grants\' templates cannot be read');
    const suggestion = await suggestGrants(deps.decisions.db, {
      agent: { record: agent.record, version: agent.version }, policies,
      days: Number(request.query.days ?? 30), collapse: request.query.collapse === 'true', now: new Date(),
    });
    void reply.header('etag', etag(agent.version));
    return suggestion;
  });
}
