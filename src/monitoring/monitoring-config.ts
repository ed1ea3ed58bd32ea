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
const Detector = Type.Object({
  threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  windowSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
  severity: Type.Optional(Severity),
}, { additionalProperties: false });

/** What a configuration document may say (everything optional: defaults fill the rest). */
export const MonitoringDocument = Type.Object({
  detectors: Type.Optional(Type.Object({ deny_burst: Type.Optional(Detector), ceiling_probe: Type.Optional(Detector) }, { additionalProperties: false })),
  responses: Type.Optional(Type.Object({ low: Type.Optional(Response), medium: Type.Optional(Response), high: Type.Optional(Response), critical: Type.Optional(Response) }, { additionalProperties: false })),
}, { additionalProperties: false });
export type MonitoringDocument = Static<typeof MonitoringDocument>;

export interface DetectorConfig {
  threshold: number;
  windowSeconds: number;
  severity: 'low' | 'medium' | 'high' | 'critical';
}

export interface MonitoringConfig {
  detectors: { deny_burst: DetectorConfig; ceiling_probe: DetectorConfig };
  /** What each severity does. */
  responses: Record<DetectorConfig['severity'], 'alert' | 'suspend' | 'quarantine'>;
}

/** Defaults: 20 denies in a minute from one agent is critical (suspended); a probe series beyond the ceiling is high (an alert). */
export const DEFAULT_MONITORING: MonitoringConfig = {
  detectors: {
    deny_burst: { threshold: 20, windowSeconds: 60, severity: 'critical' },
    ceiling_probe: { threshold: 5, windowSeconds: 60, severity: 'high' },
  },
  responses: { low: 'alert', medium: 'alert', high: 'alert', critical: 'suspend' },
};

/** A document over the defaults; refused (400, naming the place) when it is not one. */
export function configOf(document: unknown): MonitoringConfig {
  if (!Value.Check(MonitoringDocument, document)) {
    const first = [...Value.Errors(MonitoringDocument, document)][0];
    throw new LeashError('VALIDATION_FAILED', `the monitoring configuration is not valid${first ? ` at ${first.instancePath || '/'}: ${first.message}` : ''}`);
  }
  const d = document as MonitoringDocument;
  return {
    detectors: {
      deny_burst: { ...DEFAULT_MONITORING.detectors.deny_burst, ...d.detectors?.deny_burst },
      ceiling_probe: { ...DEFAULT_MONITORING.detectors.ceiling_probe, ...d.detectors?.ceiling_probe },
    },
    responses: { ...DEFAULT_MONITORING.responses, ...d.responses },
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
    this.config = (e.data as MonitoringEvent['data']).config;
  }
}
