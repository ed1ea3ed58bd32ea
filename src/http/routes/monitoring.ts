import { Type } from 'typebox';
import { adminOn } from '../../humans/admin.ts';
import { configOf, monitoringAggregate, MonitoringDocument } from '../../monitoring/monitoring-config.ts';
import { FenceFields, Problem, WriteHeaders } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { etag, writeOptions } from './write-options.ts';

// The detectors' configuration (monitoring/monitoring-config.ts): read the one in force, or
// publish the next version (fenced: every node counts by it before the call returns).

const open = { additionalProperties: true } as const;
const Detector = Type.Object({ windowSeconds: Type.Integer(), severity: Type.String(), threshold: Type.Optional(Type.Integer()) }, open);
const ConfigView = Type.Object({
  version: Type.Integer({ description: '0: the defaults, nothing published yet' }),
  detectors: Type.Record(Type.String(), Detector),
  warmup: Type.Object({ hours: Type.Integer(), decisions: Type.Integer() }),
  responses: Type.Record(Type.String(), Type.String()),
  trustScore: Type.Record(Type.String(), Type.Integer()),
}, open);
const errors = { 400: Problem, 401: Problem, 403: Problem, 412: Problem, 413: Problem };

export async function monitoringRoutes(app: App, deps: ServerDeps): Promise<void> {
  app.get('/v1/monitoring', {
    config: { access: 'operator', admin: adminOn.leash('read-monitoring', 'monitoring') },
    schema: { tags: ['monitoring'], response: { 200: ConfigView, ...errors } },
  }, async (_request, reply) => {
    void reply.header('etag', etag(deps.monitoring.version));
    return { version: deps.monitoring.version, ...deps.monitoring.config };
  });

  app.put('/v1/monitoring', {
    config: { access: 'operator', admin: adminOn.leash('configure-monitoring', 'monitoring') },
    schema: { tags: ['monitoring'], body: MonitoringDocument, headers: WriteHeaders, response: { 200: Type.Object({ ...ConfigView.properties, ...FenceFields }, { additionalProperties: true }), ...errors } },
  }, async (request, reply) => {
    const config = configOf(request.body);
    const result = await deps.commands.handle(monitoringAggregate, 'current', { type: 'ConfigureMonitoring', data: { config }, metadata: { now: new Date() } }, writeOptions(request));
    const fence = await deps.cluster.fence(result.position);
    void reply.header('etag', etag(result.version));
    return { version: result.version, ...config, ...fence };
  });
}
