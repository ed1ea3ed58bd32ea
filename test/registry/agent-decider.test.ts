import { describe, expect, it } from 'vitest';
import { LeashError } from '../../src/errors.ts';
import {
  decideAgent, evolveAgent, initialAgentState, type AgentCommand, type AgentEvent, type AgentRecord, type AgentState,
  type CredentialPins,
} from '../../src/registry/agent.ts';
import { decideGroup, decideHuman, evolveHuman, initialGroupState, initialHumanState } from '../../src/registry/principals.ts';

// Given events, when a command, then events or a refusal. The expected table below is
// SPEC §2 written out by hand, not derived from the code under test.

const t0 = new Date('2026-11-23T09:00:00.000Z');
const now = new Date('2026-11-23T10:00:00.000Z');
const pins: CredentialPins = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwksUri: 'https://idp.example/jwks' };
const registration = {
  id: 'bot', owner: 'alice', purpose: 'pay invoices', provenance: { model: 'm', modelVersion: '1', environment: 'production' as const },
  trustScore: 60, groups: ['finance-agents'], tags: ['finance'], credentials: pins, ceiling: { template: 'ceiling', values: {} },
};

const ev = {
  discovered: { type: 'AgentDiscovered', data: { id: 'bot', source: 'gateway', fingerprint: 'fp', firstSeen: t0.toISOString(), lastSeen: t0.toISOString() } },
  registered: { type: 'AgentRegistered', data: registration },
  authorized: { type: 'AgentAuthorized', data: { grants: [], tokensNotBefore: t0.toISOString() } },
  suspended: { type: 'AgentSuspended', data: { reason: 'anomaly' } },
  revoked: { type: 'AgentRevoked', data: { mode: 'immediate', reason: 'x', tokensNotBefore: t0.toISOString() } },
  quarantined: { type: 'AgentRevoked', data: { mode: 'quarantine', reason: 'x', tokensNotBefore: t0.toISOString() } },
  retired: { type: 'AgentRetired', data: { reason: 'done' } },
} satisfies Record<string, AgentEvent>;

/** Event histories that put an agent in each state. */
const histories: Record<string, AgentEvent[]> = {
  none: [],
  discovered: [ev.discovered],
  registered: [ev.registered],
  active: [ev.registered, ev.authorized],
  suspended: [ev.registered, ev.authorized, ev.suspended],
  revoked: [ev.registered, ev.authorized, ev.revoked],
  quarantined: [ev.registered, ev.authorized, ev.quarantined],
  retired: [ev.registered, ev.retired],
};

const given = (events: AgentEvent[]): AgentState => events.reduce((s, e) => evolveAgent(s, e, t0), initialAgentState());

const commands: Record<string, AgentCommand> = {
  discover: { type: 'DiscoverAgent', data: { id: 'bot', source: 'gateway', fingerprint: 'fp' }, metadata: { now } },
  register: { type: 'RegisterAgent', data: registration, metadata: { now } },
  authorize: { type: 'AuthorizeAgent', data: { grants: [{ template: 'reader', values: {} }] }, metadata: { now } },
  suspend: { type: 'SuspendAgent', data: { reason: 'anomaly' }, metadata: { now } },
  rotate: { type: 'RotateCredentials', data: { credentials: { ...pins, issuer: 'https://new.example' } }, metadata: { now } },
  revoke: { type: 'RevokeAgent', data: { mode: 'immediate', reason: 'compromised' }, metadata: { now } },
  quarantine: { type: 'RevokeAgent', data: { mode: 'quarantine', reason: 'suspicious' }, metadata: { now } },
  retire: { type: 'RetireAgent', data: { reason: 'decommissioned' }, metadata: { now } },
};

/** SPEC §2: for each command, the states it may start from and the state it leads to. */
const table: Record<string, Record<string, string>> = {
  discover: { none: 'discovered' },
  register: { none: 'registered', discovered: 'registered' },
  authorize: { registered: 'active', suspended: 'active', quarantined: 'active', revoked: 'active' },
  suspend: { active: 'suspended' },
  rotate: { registered: 'registered', active: 'active' },
  revoke: { discovered: 'revoked', registered: 'revoked', active: 'revoked', suspended: 'revoked', quarantined: 'revoked' },
  quarantine: { discovered: 'quarantined', registered: 'quarantined', active: 'quarantined', suspended: 'quarantined' },
  retire: { discovered: 'retired', registered: 'retired', active: 'retired', suspended: 'retired', revoked: 'retired', quarantined: 'retired' },
};

const cases = Object.entries(commands).flatMap(([name, command]) =>
  Object.keys(histories).map((from) => ({ name, command, from, to: table[name]![from] })),
);

describe('agent decider: every command from every state', () => {
  it.each(cases.filter((c) => c.to))('$name from $from → $to', ({ command, from, to }) => {
    const state = given(histories[from]!);
    const events = decideAgent(command, state);
    expect(events).toHaveLength(1);
    const after = events.reduce((s, e) => evolveAgent(s, e, now), state);
    expect(after.status).toBe(to);
  });

  it.each(cases.filter((c) => !c.to && c.from !== 'none'))('$name from $from is refused with INVALID_TRANSITION naming $from', ({ command, from }) => {
    const state = given(histories[from]!);
    const err = (() => {
      try {
        decideAgent(command, state);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(LeashError);
    expect(err).toMatchObject({ code: 'INVALID_TRANSITION', status: 409, details: { currentState: from } });
  });

  it.each(cases.filter((c) => !c.to && c.from === 'none'))('$name on an unknown agent is AGENT_NOT_FOUND', ({ command }) => {
    expect(() => decideAgent(command, initialAgentState())).toThrow(expect.objectContaining({ code: 'AGENT_NOT_FOUND' }));
  });
});

describe('agent decider: what the events carry', () => {
  it('register after discovery keeps the discovery record and takes the owner', () => {
    const state = given([ev.discovered]);
    const after = decideAgent(commands.register!, state).reduce((s, e) => evolveAgent(s, e, now), state) as AgentRecord;
    expect(after).toMatchObject({ status: 'registered', owner: 'alice', discovery: { source: 'gateway', fingerprint: 'fp' }, createdAt: t0.toISOString() });
  });

  it('authorize moves tokensNotBefore to the command time; rotate and revoke to the next whole second, so a token issued in the same second dies too', () => {
    const [authorized] = decideAgent(commands.authorize!, given(histories.registered!));
    expect(authorized!.data).toMatchObject({ tokensNotBefore: now.toISOString() });
    for (const [name, from] of [['rotate', 'active'], ['revoke', 'active']] as const) {
      for (const at of [new Date(now.getTime() + 400), now]) { // within a second, and exactly on one
        const [event] = decideAgent({ ...commands[name]!, metadata: { now: at } } as AgentCommand, given(histories[from]!));
        expect(event!.data).toMatchObject({ tokensNotBefore: new Date((Math.floor(at.getTime() / 1000) + 1) * 1000).toISOString() });
      }
    }
  });

  it('authorizing again within the second of an immediate revoke keeps the revoke\'s bound, so a token from before the revoke stays dead', () => {
    const revokeAt = new Date(now.getTime() + 300);
    const state = given(histories.active!);
    const revoked = decideAgent({ type: 'RevokeAgent', data: { mode: 'immediate', reason: 'leak' }, metadata: { now: revokeAt } }, state).reduce((s, e) => evolveAgent(s, e, revokeAt), state) as AgentRecord;
    const [authorized] = decideAgent({ ...commands.authorize!, metadata: { now: new Date(now.getTime() + 800) } } as AgentCommand, revoked);
    expect(authorized!.data).toMatchObject({ tokensNotBefore: new Date(now.getTime() + 1000).toISOString() });
    // A second later the authorize's own instant is the bound again.
    const [later] = decideAgent({ ...commands.authorize!, metadata: { now: new Date(now.getTime() + 5000) } } as AgentCommand, revoked);
    expect(later!.data).toMatchObject({ tokensNotBefore: new Date(now.getTime() + 5000).toISOString() });
  });

  it('rotate replaces the pins; authorize replaces the grants and clears a revocation', () => {
    const rotated = decideAgent(commands.rotate!, given(histories.active!)).reduce((s, e) => evolveAgent(s, e, now), given(histories.active!)) as AgentRecord;
    expect(rotated.credentials?.issuer).toBe('https://new.example');
    const reauthorized = decideAgent(commands.authorize!, given(histories.revoked!)).reduce((s, e) => evolveAgent(s, e, now), given(histories.revoked!)) as AgentRecord;
    expect(reauthorized).toMatchObject({ status: 'active', revocation: null, grants: [{ template: 'reader', values: {} }] });
  });

  it('revoke records mode, reason and grace period', () => {
    const graceful: AgentCommand = { type: 'RevokeAgent', data: { mode: 'graceful', reason: 'rotation', gracePeriodSeconds: 30 }, metadata: { now } };
    const state = given(histories.active!);
    const after = decideAgent(graceful, state).reduce((s, e) => evolveAgent(s, e, now), state) as AgentRecord;
    expect(after).toMatchObject({ status: 'revoked', revocation: { mode: 'graceful', reason: 'rotation', gracePeriodSeconds: 30, at: now.toISOString() } });
  });

  it('graceful and quarantine leave earlier tokens verifying (the decision layer limits them); graceful defaults to 60 s', () => {
    const state = given(histories.active!) as AgentRecord;
    for (const mode of ['graceful', 'quarantine'] as const) {
      const [event] = decideAgent({ type: 'RevokeAgent', data: { mode, reason: 'x' }, metadata: { now } }, state);
      expect(event!.data).toMatchObject({ tokensNotBefore: state.tokensNotBefore });
      expect(state.tokensNotBefore).not.toBe(now.toISOString());
      if (mode === 'graceful') expect(event!.data).toMatchObject({ gracePeriodSeconds: 60 });
      else expect(event!.data).not.toHaveProperty('gracePeriodSeconds');
    }
  });
});

describe('agent decider: findings and the trust score', () => {
  const find = (detector: string, trustScoreDelta: number, at = now): AgentCommand => ({
    type: 'RecordFinding', data: { detector, severity: 'high', evidence: { count: 5 }, response: 'alert', windowSeconds: 60, trustScoreDelta }, metadata: { now: at },
  });
  const apply = (state: AgentState, events: AgentEvent[]) => events.reduce((s, e) => evolveAgent(s, e, now), state);

  it('a finding lowers the score by its delta, never below 0, and records how much it took', () => {
    const active = given(histories.active!);
    expect(decideAgent(find('rate_spike', -10), active)).toEqual([
      { type: 'AnomalyDetected', data: { detector: 'rate_spike', severity: 'high', evidence: { count: 5 }, response: 'alert', trustScoreChange: -10 } },
      { type: 'TrustScoreChanged', data: { from: 60, to: 50, reason: 'rate_spike (high)' } },
    ]);
    const low = apply(active, decideAgent(find('deny_burst', -55), active));
    expect(low).toMatchObject({ trustScore: 5, findings: { deny_burst: { trustScoreChange: -55 } } });
    const floor = decideAgent(find('off_hours', -25), low);
    expect(floor[0]!.data).toMatchObject({ trustScoreChange: -5 });
    expect(floor[1]).toEqual({ type: 'TrustScoreChanged', data: { from: 5, to: 0, reason: 'off_hours (high)' } });
    // A delta of 0 (or a score already at 0): the finding alone. A positive delta is taken as 0.
    expect(decideAgent(find('new_resource', 0), active)).toHaveLength(1);
    expect(decideAgent(find('new_resource', 30), active)).toHaveLength(1);
  });

  it('one finding per detector per window; another detector, or after the window, is a new one', () => {
    const found = apply(given(histories.active!), decideAgent(find('rate_spike', -10), given(histories.active!)));
    expect(() => decideAgent(find('rate_spike', -10, new Date(now.getTime() + 59_000)), found)).toThrow(expect.objectContaining({ code: 'ALREADY_EXISTS' }));
    expect(decideAgent(find('rate_spike', -10, new Date(now.getTime() + 61_000)), found)[0]!.type).toBe('AnomalyDetected');
    expect(decideAgent(find('new_action', -10), found)[0]!.type).toBe('AnomalyDetected');
  });

  it('clearing a finding gives back what it took (never above 100); one that is not there is FINDING_NOT_FOUND', () => {
    const clear = (detector: string): AgentCommand => ({ type: 'ClearFinding', data: { detector, reason: 'looked into' }, metadata: { now } });
    const active = given(histories.active!);
    const found = apply(active, decideAgent(find('rate_spike', -10), active));
    const events = decideAgent(clear('rate_spike'), found);
    expect(events).toEqual([
      { type: 'FindingCleared', data: { detector: 'rate_spike', reason: 'looked into' } },
      { type: 'TrustScoreChanged', data: { from: 50, to: 60, reason: 'rate_spike cleared' } },
    ]);
    const cleared = apply(found, events);
    expect(cleared).toMatchObject({ trustScore: 60, findings: {} });
    expect(() => decideAgent(clear('rate_spike'), cleared)).toThrow(expect.objectContaining({ code: 'FINDING_NOT_FOUND' }));
    // Raised meanwhile (a new registration would): capped at 100.
    const raised = apply(found, [{ type: 'TrustScoreChanged', data: { from: 50, to: 95, reason: 'test' } }]);
    expect(decideAgent(clear('rate_spike'), raised)[1]).toEqual({ type: 'TrustScoreChanged', data: { from: 95, to: 100, reason: 'rate_spike cleared' } });
    // A suspended agent's finding is cleared too; it stays suspended until authorized again.
    const suspended = apply(found, [ev.suspended]);
    expect(apply(suspended, decideAgent(clear('rate_spike'), suspended)).status).toBe('suspended');
    expect(() => decideAgent(clear('rate_spike'), initialAgentState())).toThrow(expect.objectContaining({ code: 'AGENT_NOT_FOUND' }));
  });
});

describe('human and group deciders', () => {
  it('registers a human once; a second registration is ALREADY_EXISTS', () => {
    const cmd = { type: 'RegisterHuman' as const, data: { id: 'alice', email: 'alice@example.com', groups: [] }, metadata: { now } };
    const events = decideHuman(cmd, initialHumanState());
    expect(events).toEqual([{ type: 'HumanRegistered', data: cmd.data }]);
    const state = evolveHuman(initialHumanState(), events[0]!, now);
    expect(() => decideHuman(cmd, state)).toThrow(expect.objectContaining({ code: 'ALREADY_EXISTS' }));
  });

  it('registers a group; it cannot be its own parent', () => {
    expect(decideGroup({ type: 'RegisterGroup', data: { id: 'finance', parents: [] }, metadata: { now } }, initialGroupState())).toHaveLength(1);
    expect(() => decideGroup({ type: 'RegisterGroup', data: { id: 'finance', parents: ['finance'] }, metadata: { now } }, initialGroupState())).toThrow(
      expect.objectContaining({ code: 'VALIDATION_FAILED' }),
    );
  });

  it('a human\'s grants: given, withdrawn once; an unknown or withdrawn grant cannot be withdrawn; at most 200', () => {
    const human = evolveHuman(initialHumanState(), { type: 'HumanRegistered', data: { id: 'alice', email: 'a@example.com', groups: [] } }, t0);
    const grant = { id: 'g1', agent: 'bot', authorization_details: [{ type: 'leash:cedar', actions: ['read'] }], expiresAt: '2026-12-01T00:00:00.000Z', purpose: 'p', consentedBy: 'human:alice' };
    const give = { type: 'GrantDelegation' as const, data: grant, metadata: { now } };
    const withdraw = (id: string) => ({ type: 'RevokeDelegation' as const, data: { id, revokedBy: 'human:alice', reason: 'done' }, metadata: { now } });
    // Nobody to grant for.
    expect(() => decideHuman(give, initialHumanState())).toThrow(expect.objectContaining({ code: 'HUMAN_NOT_FOUND' }));
    const events = decideHuman(give, human);
    expect(events).toEqual([{ type: 'DelegationGranted', data: grant }]);
    const granted = evolveHuman(human, events[0]!, now);
    expect(granted).toMatchObject({ grants: [{ ...grant, status: 'active', grantedAt: now.toISOString() }] });
    expect(() => decideHuman(give, granted)).toThrow(expect.objectContaining({ code: 'ALREADY_EXISTS' }));
    expect(() => decideHuman(withdraw('g2'), granted)).toThrow(expect.objectContaining({ code: 'GRANT_NOT_FOUND' }));
    const withdrawn = evolveHuman(granted, decideHuman(withdraw('g1'), granted)[0]!, now);
    expect(withdrawn).toMatchObject({ grants: [{ id: 'g1', status: 'revoked', revokedBy: 'human:alice', reason: 'done', revokedAt: now.toISOString() }] });
    expect(() => decideHuman(withdraw('g1'), withdrawn)).toThrow(expect.objectContaining({ code: 'INVALID_TRANSITION' }));
    let many = human;
    for (let i = 0; i < 200; i++) many = evolveHuman(many, { type: 'DelegationGranted', data: { ...grant, id: `g${i}` } }, now);
    expect(() => decideHuman({ ...give, data: { ...grant, id: 'one-more' } }, many)).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));

    // Ended grants do not count: once they have expired a new one is taken, and the record
    // keeps 200, the grant that ended first pushed out (its events stay in the log).
    const later = new Date('2026-12-02T00:00:00.000Z');
    let ended = human;
    for (let i = 0; i < 200; i++) ended = evolveHuman(ended, { type: 'DelegationGranted', data: { ...grant, id: `g${i}`, expiresAt: new Date(Date.parse('2026-12-01T00:00:00.000Z') + i * 1000).toISOString() } }, now);
    const fresh = { ...grant, id: 'fresh', expiresAt: '2026-12-31T00:00:00.000Z' };
    const taken = decideHuman({ type: 'GrantDelegation', data: fresh, metadata: { now: later } }, ended);
    const after = evolveHuman(ended, taken[0]!, later) as { grants: { id: string }[] };
    expect(after.grants).toHaveLength(200);
    expect(after.grants.map((g) => g.id)).not.toContain('g0');
    expect(after.grants.map((g) => g.id)).toContain('g1');
    expect(after.grants.at(-1)!.id).toBe('fresh');
  });
});
