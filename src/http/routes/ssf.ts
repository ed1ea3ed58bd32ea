import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { LeashError } from '../../errors.ts';
import { adminOn } from '../../humans/admin.ts';
import { advancePolled, cursorOf, dropOtherCredentials, forgetStream, putCredential } from '../../ssf/delivery-store.ts';
import { DEFAULT_MAX_EVENTS } from '../../ssf/poll.ts';
import { EVENTS_SUPPORTED, eventsDelivered } from '../../ssf/sets.ts';
import { MAX_STREAMS, MIN_VERIFICATION_INTERVAL_SECONDS, POLL, PUSH, streamAggregate, type Delivery, type StreamConfig, type StreamEntry, type StreamStatus } from '../../ssf/stream.ts';
import { tokenSettings } from '../../tokens/settings.ts';
import { urlProblem } from '../../tokens/outbound-fetch.ts';
import { Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { byCaller } from './write-options.ts';

// Leash as a Shared Signals transmitter (SSF 1.0): its configuration metadata, the stream
// management API (create, read, update, replace, delete; status; verification) and the poll
// endpoint (RFC 8936). Streams are managed by the operator (or a human an admin policy lets:
// `admin:read-streams`, `admin:manage-streams`, `admin:poll-events` on `Leash::"ssf"`).

const closed = { additionalProperties: false } as const;
const StreamId = Type.String({ format: 'uuid' });
const Uri = Type.String({ minLength: 1, maxLength: 256, pattern: '^[\\x21-\\x7e]+$' });
const DeliveryIn = Type.Object({
  method: Type.Union([Type.Literal(PUSH), Type.Literal(POLL)]),
  endpoint_url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
  // Sent as it is with every push: one header value of visible ASCII and spaces.
  authorization_header: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, pattern: '^[\\x21-\\x7e][\\x20-\\x7e]*$' })),
}, closed);
const receiverSupplied = {
  delivery: Type.Optional(DeliveryIn),
  events_requested: Type.Optional(Type.Array(Uri, { minItems: 1, maxItems: 32, uniqueItems: true })),
  description: Type.Optional(Type.String({ maxLength: 256 })),
};
// Transmitter-supplied members may come back in an update as read; they must say what they said.
const transmitterSupplied = {
  stream_id: StreamId,
  iss: Type.Optional(Type.String({ maxLength: 2048 })),
  aud: Type.Optional(Type.String({ maxLength: 256 })),
  events_supported: Type.Optional(Type.Array(Uri, { maxItems: 32 })),
  events_delivered: Type.Optional(Type.Array(Uri, { maxItems: 32 })),
  min_verification_interval: Type.Optional(Type.Integer()),
};
const CreateBody = Type.Object({ ...receiverSupplied, aud: Type.Optional(Type.String({ minLength: 1, maxLength: 256, pattern: '^[\\x21-\\x7e]+$', description: 'the receiver as SETs name it (default: the stream id)' })) }, closed);
const UpdateBody = Type.Object({ ...receiverSupplied, ...transmitterSupplied }, closed);
const StreamQuery = Type.Object({ stream_id: StreamId }, closed);
const ListQuery = Type.Object({ stream_id: Type.Optional(StreamId) }, closed);

const StreamView = Type.Object({
  stream_id: Type.String(), iss: Type.String(), aud: Type.String(),
  delivery: Type.Object({ method: Type.String(), endpoint_url: Type.String() }),
  events_supported: Type.Array(Type.String()), events_requested: Type.Optional(Type.Array(Type.String())), events_delivered: Type.Array(Type.String()),
  description: Type.Optional(Type.String()), min_verification_interval: Type.Integer(),
});
const Status = Type.Union([Type.Literal('enabled'), Type.Literal('paused'), Type.Literal('disabled')]);
const StatusView = Type.Object({ stream_id: Type.String(), status: Status, reason: Type.Optional(Type.String()) });
const StatusBody = Type.Object({ stream_id: StreamId, status: Status, reason: Type.Optional(Type.String({ maxLength: 256 })) }, closed);
const VerifyBody = Type.Object({ stream_id: StreamId, state: Type.Optional(Type.String({ maxLength: 256 })) }, closed);
const PollBody = Type.Object({
  maxEvents: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
  returnImmediately: Type.Optional(Type.Boolean()),
  ack: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 1000 })),
  setErrs: Type.Optional(Type.Record(Type.String({ maxLength: 256 }), Type.Object({
    err: Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\w-]+$' }), description: Type.Optional(Type.String({ maxLength: 1024 })),
  }, closed), { maxProperties: 1000 })),
}, closed);

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem };
const read = { access: 'operator', admin: adminOn.leash('read-streams', 'ssf') } as const;
const manage = { access: 'operator', admin: adminOn.leash('manage-streams', 'ssf') } as const;
const NO_STORE = 'no-store';

export async function ssfRoutes(app: App, deps: ServerDeps): Promise<void> {
  const base = deps.publicUrl.replace(/\/$/, '');

  const view = (id: string, entry: StreamEntry): Static<typeof StreamView> => {
    const config = entry.state.config!;
    return {
      stream_id: id, iss: deps.publicUrl, aud: config.aud,
      delivery: config.delivery.method === PUSH ? { method: PUSH, endpoint_url: config.delivery.endpoint_url } : { method: POLL, endpoint_url: `${base}/ssf/poll/${id}` },
      events_supported: [...EVENTS_SUPPORTED],
      ...(config.events_requested ? { events_requested: config.events_requested } : {}),
      events_delivered: eventsDelivered(config),
      ...(config.description !== null ? { description: config.description } : {}),
      min_verification_interval: MIN_VERIFICATION_INTERVAL_SECONDS,
    };
  };
  const find = (id: string): StreamEntry => {
    const entry = deps.streams.get(id);
    if (!entry) throw new LeashError('STREAM_NOT_FOUND', 'no event stream with this stream_id');
    return entry;
  };

  /**
   * A delivery as asked, checked; a push header is stored (under a fresh id) before the
   * configuration naming it is written. `merging` (PATCH): the delivery in force, whose header
   * is kept when the update names none and pushes to the same URL, and only then: a header
   * never follows the stream to a URL it was not given for.
   */
  const deliveryOf = async (stream: string, asked: Static<typeof DeliveryIn> | undefined, merging?: Delivery): Promise<Delivery> => {
    if (!asked || asked.method === POLL) {
      if (asked?.endpoint_url !== undefined || asked?.authorization_header !== undefined) {
        throw new LeashError('VALIDATION_FAILED', '/delivery: a polled stream\'s endpoint_url is Leash\'s to give, and it takes no authorization_header');
      }
      return { method: POLL };
    }
    if (asked.endpoint_url === undefined) throw new LeashError('VALIDATION_FAILED', '/delivery/endpoint_url is required to push');
    let url: URL;
    try {
      url = new URL(asked.endpoint_url);
    } catch {
      throw new LeashError('VALIDATION_FAILED', '/delivery/endpoint_url is not a URL');
    }
    const problem = urlProblem(url, tokenSettings().allowPrivateUrls);
    if (problem) throw new LeashError('VALIDATION_FAILED', `/delivery/endpoint_url ${problem}`);
    let authorization: string | null = null;
    if (asked.authorization_header === undefined && merging?.method === PUSH && merging.endpoint_url === url.href) {
      authorization = merging.authorization;
    } else if (asked.authorization_header !== undefined) {
      authorization = randomUUID();
      await putCredential(deps.decisions.db, stream, authorization, asked.authorization_header);
    }
    return { method: PUSH, endpoint_url: url.href, authorization };
  };

  /** Writes a stream's new configuration, then drops the headers it no longer names. */
  const configure = async (request: FastifyRequest, id: string, entry: StreamEntry, config: StreamConfig) => {
    const now = new Date();
    await deps.commands.handle(streamAggregate, id, { type: 'ConfigureStream', data: { config }, metadata: { now } }, { now, expectedVersion: entry.version, ...byCaller(request) });
    await dropOtherCredentials(deps.decisions.db, id, config.delivery.method === PUSH ? config.delivery.authorization : null);
    return view(id, find(id));
  };

  /** Transmitter-supplied members in an update must match (SSF §8.1.1.3); `aud` cannot be changed. */
  const unchanged = (id: string, entry: StreamEntry, body: Static<typeof UpdateBody>) => {
    const current = view(id, entry);
    for (const key of ['iss', 'aud', 'events_supported', 'events_delivered', 'min_verification_interval'] as const) {
      if (body[key] !== undefined && JSON.stringify(body[key]) !== JSON.stringify(current[key])) {
        throw new LeashError('VALIDATION_FAILED', `/${key} is Leash's to set, and is not what Leash said`);
      }
    }
  };

  app.get('/.well-known/ssf-configuration', { config: { access: 'public' }, schema: { tags: ['ssf'], response: { 200: Type.Object({}, { additionalProperties: true }) } } }, async () => ({
    spec_version: '1_0',
    issuer: deps.publicUrl,
    jwks_uri: `${base}/.well-known/jwks.json`,
    delivery_methods_supported: [PUSH, POLL],
    configuration_endpoint: `${base}/ssf/stream`,
    status_endpoint: `${base}/ssf/status`,
    verification_endpoint: `${base}/ssf/verify`,
    authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6750' }],
    default_subjects: 'ALL',
  }));

  app.post('/ssf/stream', { config: manage, schema: { tags: ['ssf'], body: CreateBody, response: { 201: StreamView, ...errors, 422: Problem } } }, async (request, reply) => {
    if (deps.streams.streams.size >= MAX_STREAMS) throw new LeashError('LIMIT_EXCEEDED', `a deployment has at most ${MAX_STREAMS} event streams`);
    const id = randomUUID();
    const body = request.body;
    const delivery = await deliveryOf(id, body.delivery);
    const config: StreamConfig = { aud: body.aud ?? id, delivery, events_requested: body.events_requested ?? null, description: body.description ?? null };
    const now = new Date();
    await deps.commands.handle(streamAggregate, id, { type: 'CreateStream', data: { id, config }, metadata: { now } }, { now, expectedVersion: 0, ...byCaller(request) });
    void reply.status(201).header('cache-control', NO_STORE);
    return view(id, find(id));
  });

  app.get('/ssf/stream', { config: read, schema: { tags: ['ssf'], querystring: ListQuery, response: { 200: Type.Union([StreamView, Type.Array(StreamView)]), ...errors } } }, async (request, reply) => {
    void reply.header('cache-control', NO_STORE);
    const id = request.query.stream_id;
    if (id !== undefined) return view(id, find(id));
    return [...deps.streams.streams].map(([streamId, entry]) => view(streamId, entry));
  });

  app.patch('/ssf/stream', { config: manage, schema: { tags: ['ssf'], body: UpdateBody, response: { 200: StreamView, ...errors, 412: Problem } } }, async (request, reply) => {
    const body = request.body;
    const entry = find(body.stream_id);
    unchanged(body.stream_id, entry, body);
    const config = entry.state.config!;
    const next: StreamConfig = {
      aud: config.aud,
      delivery: body.delivery === undefined ? config.delivery : await deliveryOf(body.stream_id, body.delivery, config.delivery),
      events_requested: body.events_requested === undefined ? config.events_requested : body.events_requested,
      description: body.description === undefined ? config.description : body.description,
    };
    void reply.header('cache-control', NO_STORE);
    return configure(request, body.stream_id, entry, next);
  });

  app.put('/ssf/stream', { config: manage, schema: { tags: ['ssf'], body: UpdateBody, response: { 200: StreamView, ...errors, 412: Problem } } }, async (request, reply) => {
    const body = request.body;
    const entry = find(body.stream_id);
    unchanged(body.stream_id, entry, body);
    // What the receiver leaves out is withdrawn (SSF: replace, not merge).
    const next: StreamConfig = { aud: entry.state.config!.aud, delivery: await deliveryOf(body.stream_id, body.delivery), events_requested: body.events_requested ?? null, description: body.description ?? null };
    void reply.header('cache-control', NO_STORE);
    return configure(request, body.stream_id, entry, next);
  });

  app.delete('/ssf/stream', { config: manage, schema: { tags: ['ssf'], querystring: StreamQuery, response: { 204: Type.Null(), ...errors } } }, async (request, reply) => {
    const id = request.query.stream_id;
    const entry = find(id);
    const now = new Date();
    await deps.commands.handle(streamAggregate, id, { type: 'DeleteStream', data: {}, metadata: { now } }, { now, expectedVersion: entry.version, ...byCaller(request) });
    await forgetStream(deps.decisions.db, id);
    void reply.status(204).header('cache-control', NO_STORE);
  });

  app.get('/ssf/status', { config: read, schema: { tags: ['ssf'], querystring: StreamQuery, response: { 200: StatusView, ...errors } } }, async (request, reply) => {
    const id = request.query.stream_id;
    const { state } = find(id);
    void reply.header('cache-control', NO_STORE);
    return { stream_id: id, status: state.status, ...(state.reason !== null ? { reason: state.reason } : {}) };
  });

  app.post('/ssf/status', { config: manage, schema: { tags: ['ssf'], body: StatusBody, response: { 200: StatusView, ...errors } } }, async (request, reply) => {
    const { stream_id: id, status, reason } = request.body;
    const { state } = find(id);
    const now = new Date();
    if (state.status !== status || state.reason !== (reason ?? null)) {
      const result = await deps.commands.handle(streamAggregate, id, { type: 'ChangeStreamStatus', data: { status: status as StreamStatus, reason: reason ?? null }, metadata: { now } }, { now, ...byCaller(request) });
      // Disabled holds nothing (SSF): what waited while the stream was paused goes with it.
      if (status === 'disabled') {
        await cursorOf(deps.decisions.db, id, state.createdAt);
        await advancePolled(deps.decisions.db, id, result.position);
      }
    }
    void reply.header('cache-control', NO_STORE);
    return { stream_id: id, status, ...(reason !== undefined ? { reason } : {}) };
  });

  app.post('/ssf/verify', { config: manage, schema: { tags: ['ssf'], body: VerifyBody, response: { 204: Type.Null(), ...errors, 429: Problem } } }, async (request, reply) => {
    const { stream_id: id, state } = request.body;
    find(id);
    const now = new Date();
    await deps.commands.handle(streamAggregate, id, { type: 'RequestVerification', data: { state: state ?? null }, metadata: { now } }, { now, ...byCaller(request) });
    void reply.status(204).header('cache-control', NO_STORE);
  });

  app.post('/ssf/poll/:id', {
    config: { access: 'operator', admin: adminOn.leash('poll-events', 'ssf') },
    schema: {
      tags: ['ssf'], params: Type.Object({ id: StreamId }), body: PollBody,
      description: `RFC 8936 poll: up to \`maxEvents\` (default ${DEFAULT_MAX_EVENTS}) SETs not acknowledged yet; \`ack\` and \`setErrs\` acknowledge earlier ones.`,
      response: { 200: Type.Object({ sets: Type.Record(Type.String(), Type.String()), moreAvailable: Type.Boolean() }), ...errors, 503: Problem },
    },
  }, async (request, reply) => {
    void reply.header('cache-control', NO_STORE);
    const answer = await deps.transmitter.poll(request.params.id, request.body);
    // Answered because the node is stopping: the connection goes too, or the server's close
    // would wait out its keep-alive (it closes only the connections idle when it starts).
    if (deps.transmitter.stopped) void reply.header('connection', 'close');
    return answer;
  });
}
