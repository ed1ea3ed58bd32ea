import { LeashError } from '../../errors.ts';
import type { App, ServerDeps } from '../server.ts';

// GET /metrics: Prometheus' text format, for the operator token or the metrics token
// (LEASH_METRICS_TOKEN, which opens nothing else). Names and labels: metrics/metrics.ts.

export async function metricsRoutes(app: App, deps: ServerDeps): Promise<void> {
  app.get('/metrics', { config: { access: 'metrics' }, schema: { tags: ['operations'], description: 'Prometheus text exposition format' } }, async (_request, reply) => {
    if (!deps.metrics.enabled) throw new LeashError('NOT_FOUND', 'this node keeps no metrics (LEASH_METRICS=off)');
    void reply.header('content-type', deps.metrics.contentType).header('cache-control', 'no-store');
    return deps.metrics.text();
  });
}
