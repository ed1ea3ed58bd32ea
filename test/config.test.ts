import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';

// What a node is told by its environment, refused clearly when it is wrong.

describe('configuration', () => {
  it('defaults: embedded PGlite, in-process bus, a 1 s staleness bound, a 30 s watchdog', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ port: 8080, databaseUrl: null, natsUrl: null, stalenessMs: 1000, watchdogMs: 30_000 });
  });

  it('takes NATS_URL and LEASH_STALENESS_MS', () => {
    expect(loadConfig({ NATS_URL: 'nats://a:4222,nats://b:4222', LEASH_STALENESS_MS: '250' })).toMatchObject({ natsUrl: 'nats://a:4222,nats://b:4222', stalenessMs: 250 });
  });

  it.each(['0', '49', '60001', '1.5', 'soon', '-100'])('refuses LEASH_STALENESS_MS=%s with the allowed range', (value) => {
    expect(() => loadConfig({ LEASH_STALENESS_MS: value })).toThrow(/LEASH_STALENESS_MS must be a whole number of milliseconds from 50 to 60000/);
  });

  it('takes LEASH_WATCHDOG_MS, 0 turning the watchdog off', () => {
    expect(loadConfig({ LEASH_WATCHDOG_MS: '5000' }).watchdogMs).toBe(5000);
    expect(loadConfig({ LEASH_WATCHDOG_MS: '0' }).watchdogMs).toBe(0);
  });

  it.each(['99', '3600001', '2.5', 'never', '-1'])('refuses LEASH_WATCHDOG_MS=%s with the allowed range', (value) => {
    expect(() => loadConfig({ LEASH_WATCHDOG_MS: value })).toThrow(/LEASH_WATCHDOG_MS must be 0 \(off\) or a whole number of milliseconds from 100 to 3600000/);
  });

  it('LEASH_PUBLIC_URL: the base the metadata documents name, from the listen address unless given', () => {
    expect(loadConfig({}).publicUrl).toBe('http://127.0.0.1:8080');
    expect(loadConfig({ HOST: '0.0.0.0', PORT: '9000' }).publicUrl).toBe('http://localhost:9000');
    expect(loadConfig({ LEASH_PUBLIC_URL: 'https://authz.example.com/leash/' }).publicUrl).toBe('https://authz.example.com/leash');
  });

  it.each(['not a url', 'ftp://x.example', 'https://x.example/?a=1', 'https://u:p@x.example'])('refuses LEASH_PUBLIC_URL=%s', (value) => {
    expect(() => loadConfig({ LEASH_PUBLIC_URL: value })).toThrow(/LEASH_PUBLIC_URL must be/);
  });

  it('LEASH_TOKEN_AUDIENCE: the aud of issued tokens without a resource, `leash` unless given; no spaces or control characters', () => {
    expect(loadConfig({}).tokenAudience).toBe('leash');
    expect(loadConfig({ LEASH_TOKEN_AUDIENCE: 'https://api.example' }).tokenAudience).toBe('https://api.example');
    for (const bad of ['two words', 'tab\there', 'x'.repeat(501)]) expect(() => loadConfig({ LEASH_TOKEN_AUDIENCE: bad })).toThrow(/LEASH_TOKEN_AUDIENCE must be/);
  });

  it('LEASH_HUMAN_*: people sign in only when issuer, audience and one source of keys are all given; half a configuration stops the start', () => {
    expect(loadConfig({}).humanPins).toBeNull();
    const idp = { LEASH_HUMAN_ISSUER: 'https://idp.example', LEASH_HUMAN_AUDIENCE: 'leash-admin' };
    expect(loadConfig({ ...idp, LEASH_HUMAN_JWKS_URI: 'https://idp.example/jwks' }).humanPins).toEqual({
      issuer: 'https://idp.example', audience: 'leash-admin', algorithms: ['ES256', 'RS256'], jwks: { uri: 'https://idp.example/jwks' },
    });
    expect(loadConfig({ ...idp, LEASH_HUMAN_JWKS_FILE: 'people.json', LEASH_HUMAN_ALGORITHMS: 'EdDSA, ES384' }).humanPins).toMatchObject({ algorithms: ['EdDSA', 'ES384'], jwks: { file: expect.stringMatching(/\/people\.json$/) } });
    expect(() => loadConfig({ LEASH_HUMAN_ISSUER: 'https://idp.example' })).toThrow(/human sign-in needs LEASH_HUMAN_AUDIENCE, LEASH_HUMAN_JWKS_URI or LEASH_HUMAN_JWKS_FILE/);
    expect(() => loadConfig({ ...idp })).toThrow(/LEASH_HUMAN_JWKS_URI or LEASH_HUMAN_JWKS_FILE/);
    expect(() => loadConfig({ ...idp, LEASH_HUMAN_JWKS_URI: 'https://idp.example/jwks', LEASH_HUMAN_JWKS_FILE: 'x.json' })).toThrow(/not both/);
    expect(() => loadConfig({ ...idp, LEASH_HUMAN_JWKS_URI: 'file:///etc/passwd' })).toThrow(/must be an http\(s\) URL/);
    // Symmetric algorithms (a shared secret) or none at all are not accepted for people's tokens.
    for (const algs of ['HS256', 'none', 'ES256,HS256', ',']) expect(() => loadConfig({ ...idp, LEASH_HUMAN_JWKS_URI: 'https://idp.example/jwks', LEASH_HUMAN_ALGORITHMS: algs })).toThrow(/LEASH_HUMAN_ALGORITHMS must list/);
  });

  it('LEASH_METRICS_TOKEN: none by default; 16 or more visible characters, never echoed in the error', () => {
    expect(loadConfig({}).metricsToken).toBeNull();
    expect(loadConfig({ LEASH_METRICS_TOKEN: 'scrape-0123456789abcdef' }).metricsToken).toBe('scrape-0123456789abcdef');
    for (const bad of ['short', 'has a space 0123456789', 'tab\there-0123456789', 'x'.repeat(4097)]) {
      expect(() => loadConfig({ LEASH_METRICS_TOKEN: bad }), bad).toThrow(/^LEASH_METRICS_TOKEN must be 16 to 4096 visible ASCII characters$/);
    }
  });

  it('LEASH_MONITORING: on by default, off only when said exactly', () => {
    expect(loadConfig({}).monitoring).toBe(true);
    expect(loadConfig({ LEASH_MONITORING: 'off' }).monitoring).toBe(false);
    expect(loadConfig({ LEASH_MONITORING: 'on' }).monitoring).toBe(true);
    for (const bad of ['OFF', '0', 'false', 'no', ' off']) expect(() => loadConfig({ LEASH_MONITORING: bad }), bad).toThrow(/LEASH_MONITORING must be on or off/);
  });

  it('LEASH_METRICS: on by default, off only when said exactly', () => {
    expect(loadConfig({}).metrics).toBe(true);
    expect(loadConfig({ LEASH_METRICS: 'off' }).metrics).toBe(false);
    for (const bad of ['OFF', '0', 'false', ' on']) expect(() => loadConfig({ LEASH_METRICS: bad }), bad).toThrow(/LEASH_METRICS must be on or off/);
  });

  it('LEASH_APPROVAL_TTL_SECONDS (default 300, 10..86400) and LEASH_APPROVAL_WEBHOOK (an http(s) URL, named in no error)', () => {
    expect(loadConfig({})).toMatchObject({ approvalTtlSeconds: 300, approvalWebhook: null });
    expect(loadConfig({ LEASH_APPROVAL_TTL_SECONDS: '60', LEASH_APPROVAL_WEBHOOK: 'https://hooks.example/leash?key=k' })).toMatchObject({ approvalTtlSeconds: 60, approvalWebhook: 'https://hooks.example/leash?key=k' });
    for (const bad of ['9', '86401', '1.5', 'soon', '-1']) expect(() => loadConfig({ LEASH_APPROVAL_TTL_SECONDS: bad }), bad).toThrow(/LEASH_APPROVAL_TTL_SECONDS must be/);
    for (const bad of ['not a url', 'ftp://hooks.example/secret-path', 'file:///etc/passwd']) {
      expect(() => loadConfig({ LEASH_APPROVAL_WEBHOOK: bad }), bad).toThrow(/^LEASH_APPROVAL_WEBHOOK must be an http\(s\) URL$/);
    }
    // Credentials in the URL: refused, and not repeated in the refusal.
    expect(() => loadConfig({ LEASH_APPROVAL_WEBHOOK: 'https://leash:s3cret@hooks.example/x' })).toThrow(/must not carry a user name or password/);
    expect(() => loadConfig({ LEASH_APPROVAL_WEBHOOK: 'https://leash:s3cret@hooks.example/x' })).not.toThrow(/s3cret/);
  });
});
