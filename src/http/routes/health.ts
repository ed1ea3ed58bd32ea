import { Type } from 'typebox';
import type { App, ServerDeps } from '../server.ts';

/** Liveness and readiness (SPEC §1: 503 while the log is not caught up, the broadcast is lost past its staleness bound, or no policy set is loaded). Public: no registry data. */
export async function healthRoutes(app: App, deps: ServerDeps): Promise<void> {
  app.get('/healthz', { config: { access: 'public' }, schema: { tags: ['health'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } } }, async () => ({ status: 'ok' as const }));

  const Readiness = Type.Object({
    ready: Type.Boolean(),
    nodeId: Type.String(),
    position: Type.Integer(),
    checks: Type.Object({
      log: Type.Object({ ok: Type.Boolean(), detail: Type.String() }),
      policies: Type.Object({ ok: Type.Boolean(), detail: Type.String() }),
      broadcast: Type.Object({ ok: Type.Boolean(), detail: Type.String() }),
    }),
  });

  app.get('/readyz', { config: { access: 'public' }, schema: { tags: ['health'], response: { 200: Readiness, 503: Readiness } } }, async (request, reply) => {
    const { caughtUp, lastError, position } = deps.follower.status;
    const logOk = caughtUp && lastError === null;
    // Public endpoint: say what is wrong, never the internals (hosts, SQL, policy text); the log has those.
    const detail = !caughtUp ? 'catching up with the event log' : lastError ? 'cannot read the event log (see the server log)' : `caught up at position ${position}`;
    const set = deps.policies.current();
    const policies = set
      ? { ok: true, detail: `policy set version ${set.version} loaded` }
      : { ok: false, detail: deps.policies.error ? `policy set version ${deps.policies.version} cannot be loaded (see the server log)` : 'no policy set published yet' };
    const broadcast = deps.cluster.health();
    const ready = logOk && policies.ok && broadcast.ok;
    if (!ready) request.log.warn({ log: lastError, policies: deps.policies.error, broadcast: broadcast.detail }, 'not ready');
    void reply.status(ready ? 200 : 503);
    return { ready, nodeId: deps.nodeId, position: deps.view.position, checks: { log: { ok: logOk, detail }, policies, broadcast } };
  });
}
