import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { LeashError } from '../errors.ts';
import type { CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';
import type { StoredEvent } from '../store/event-store.ts';

// The detectors' thresholds and responses, versioned as events like policy sets: the first
// node on an empty log publishes `cedar/monitoring.json` when there is one, `PUT /v1/monitoring`
// the next versions, and every node reads the latest from its view. What a document leaves out
// keeps its default.

const Severity = Type.Union([Type.Literal('low'), Type.Literal('medium'), Type.Literal('high'), Type.Literal('critical')]);
const Response = Type.Union([Type.Literal('alert'), Type.Literal('suspend'), Type.Literal('quarantine')]);
const severity = Type.Optional(Severity);
/** A counting detector's window (kept in memory per agent) is an hour at most; the others' (one finding per window) a day. */
const window = (maximum: number) => Type.Optional(Type.Integer({ minimum: 1, maximum }));
const windowSeconds = window(3600);
const threshold = Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 }));
const perSeverity = <T extends ReturnType<typeof Type.Integer> | typeof Response>(value: T) => Type.Optional(Type.Object(
  { low: Type.Optional(value), medium: Type.Optional(value), high: Type.Optional(value), critical: Type.Optional(value) },
  { additionalProperties: false },
));
const strict = { additionalProperties: false } as const;

/** What a configuration document may say (everything optional: defaults fill the rest). */
export const MonitoringDocument = Type.Object({
  detectors: Type.Optional(Type.Object({
    deny_burst: Type.Optional(Type.Object({ threshold, windowSeconds, severity }, strict)),
    ceiling_probe: Type.Optional(Type.Object({ threshold, windowSeconds, severity }, strict)),
    rate_spike: Type.Optional(Type.Object({
      threshold, windowSeconds, severity,
      factor: Type.Optional(Type.Number({ minimum: 1.5, maximum: 1000, description: 'times the baseline rate' })),
    }, strict)),
    new_action: Type.Optional(Type.Object({ windowSeconds: window(86_400), severity }, strict)),
    new_resource: Type.Optional(Type.Object({ windowSeconds: window(86_400), severity }, strict)),
    off_hours: Type.Optional(Type.Object({
      windowSeconds: window(86_400), severity,
      share: Type.Optional(Type.Number({ minimum: 0, maximum: 0.5, description: "an hour of the day with less than this share of the agent's decisions is off its hours" })),
    }, strict)),
  }, strict)),
  warmup: Type.Optional(Type.Object({
    hours: Type.Optional(Type.Integer({ minimum: 0, maximum: 8760 })),
    decisions: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
  }, strict)),
  responses: perSeverity(Response),
  trustScore: perSeverity(Type.Integer({ minimum: -100, maximum: 0, description: 'change to the trust score' })),
}, strict);
export type MonitoringDocument = Static<typeof MonitoringDocument>;

export type Severity = 'low' | 'medium' | 'high' | 'critical';

export interface DetectorConfig {
  /** How many in the window make a finding (counting detectors). */
  threshold: number;
  /** The window counted over; also: one finding per detector per window. */
  windowSeconds: number;
  severity: Severity;
}

export interface MonitoringConfig {
  detectors: {
    deny_burst: DetectorConfig;
    ceiling_probe: DetectorConfig;
    /** `threshold`: decisions in the window at least; `factor`: and more than this many times the agent's usual rate. */
    rate_spike: DetectorConfig & { factor: number };
    new_action: Omit<DetectorConfig, 'threshold'>;
    new_resource: Omit<DetectorConfig, 'threshold'>;
    off_hours: Omit<DetectorConfig, 'threshold'> & { share: number };
  };
  /** A baseline is learned this long, and from this many decisions, before the baseline detectors judge by it. */
  warmup: { hours: number; decisions: number };
  /** What each severity does. */
  responses: Record<Severity, 'alert' | 'suspend' | 'quarantine'>;
  /** How each severity moves the agent's trust score (0 to -100; the score stays within 0..100). */
  trustScore: Record<Severity, number>;
}

export type DetectorName = keyof MonitoringConfig['detectors'];

/**
 * Defaults from common practice: 20 denies in a minute from one agent is critical (suspended);
 * a probe series beyond the ceiling, or five times the usual rate, is high; an action never
 * used before, or work at an hour the agent never works, medium; a resource never used, low.
 * All but critical are alerts. A baseline learns for a week (and 100 decisions) first.
 */
export const DEFAULT_MONITORING: MonitoringConfig = {
  detectors: {
    deny_burst: { threshold: 20, windowSeconds: 60, severity: 'critical' },
    ceiling_probe: { threshold: 5, windowSeconds: 60, severity: 'high' },
    rate_spike: { threshold: 30, windowSeconds: 60, severity: 'high', factor: 5 },
    new_action: { windowSeconds: 600, severity: 'medium' },
    new_resource: { windowSeconds: 600, severity: 'low' },
    off_hours: { windowSeconds: 3600, severity: 'medium', share: 0.01 },
  },
  warmup: { hours: 168, decisions: 100 },
  responses: { low: 'alert', medium: 'alert', high: 'alert', critical: 'suspend' },
  trustScore: { low: 0, medium: -5, high: -10, critical: -25 },
};

/** A document over the defaults; refused (400, naming the place) when it is not one. */
export function configOf(document: unknown): MonitoringConfig {
  if (!Value.Check(MonitoringDocument, document)) {
    const first = [...Value.Errors(MonitoringDocument, document)][0];
    throw new LeashError('VALIDATION_FAILED', `the monitoring configuration is not valid${first ? ` at ${first.instancePath || '/'}: ${first.message}` : ''}`);
  }
  return filled(document as MonitoringDocument);
}

/** The defaults under what a document (or a version recorded before a setting existed) says. */
function filled(d: MonitoringDocument): MonitoringConfig {
  const detectors = Object.fromEntries(Object.entries(DEFAULT_MONITORING.detectors).map(([name, defaults]) =>
    [name, { ...defaults, ...d.detectors?.[name as DetectorName] }])) as unknown as MonitoringConfig['detectors'];
  return {
    detectors,
    warmup: { ...DEFAULT_MONITORING.warmup, ...d.warmup },
    responses: { ...DEFAULT_MONITORING.responses, ...d.responses },
    trustScore: { ...DEFAULT_MONITORING.trustScore, ...d.trustScore },
  };
}

/** `cedar/monitoring.json`, if there is one. */
export function readMonitoringFile(cedarDir: string): MonitoringConfig | null {
  const file = join(cedarDir, 'monitoring.json');
  if (!existsSync(file)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file} is not JSON: ${(err as Error).message}`);
  }
  try {
    return configOf(parsed);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

export const MONITORING_STREAM_TYPE = 'monitoring';
export const MONITORING_CONFIGURED = 'MonitoringConfigured';

type MonitoringEvent = { type: typeof MONITORING_CONFIGURED; data: { config: MonitoringConfig } };
type MonitoringCommand = { type: 'ConfigureMonitoring'; data: { config: MonitoringConfig }; metadata: CommandMetadata };

export const monitoringAggregate: Aggregate<MonitoringCommand, MonitoringEvent, { version: number }> = {
  streamType: MONITORING_STREAM_TYPE,
  initialState: () => ({ version: 0 }),
  decide: (command) => [{ type: MONITORING_CONFIGURED, data: command.data }],
  evolve: (state) => ({ version: state.version + 1 }),
};

/** The configuration in force on this node: the latest version in the log, else the defaults. */
export class MonitoringView {
  version = 0;
  config: MonitoringConfig = DEFAULT_MONITORING;

  apply(e: StoredEvent): void {
    if (e.streamType !== MONITORING_STREAM_TYPE || e.type !== MONITORING_CONFIGURED) return;
    this.version = e.version;
    this.config = filled((e.data as MonitoringEvent['data']).config);
  }
}
