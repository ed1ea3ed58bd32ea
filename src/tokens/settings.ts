// Process-wide settings of token verification, set once by `startNode` from the node's
// configuration. They are module state rather than parameters because they are read deep
// inside verification (the JWKS fetch, the `act` chain) and at registration (`checkPins`),
// places that are handed pins and claims, not a node. Every node of one process shares them.

export interface TokenSettings {
  /**
   * `LEASH_ALLOW_PRIVATE_URLS`: a `jwksUri` may name, and its fetch may reach, loopback,
   * private, link-local… addresses, and use plain http on loopback. Off: public https only.
   */
  allowPrivateUrls: boolean;
  /**
   * `LEASH_MAX_DELEGATION_DEPTH`: at most this many agents in a token's delegation chain,
   * the acting agent (`act.sub`, or `sub` without `act`) included. See act-chain.ts.
   */
  maxDelegationDepth: number;
  /** Where a refusal's cause goes that the caller is not told (a JWKS fetch's failure). */
  log: (fields: Record<string, unknown>, message: string) => void;
}

export const DEFAULT_MAX_DELEGATION_DEPTH = 4;

const defaults = (): TokenSettings => ({ allowPrivateUrls: false, maxDelegationDepth: DEFAULT_MAX_DELEGATION_DEPTH, log: () => {} });

let current: TokenSettings = defaults();

/** Sets what is given; what is left out goes back to its default (so a node never inherits a previous node's choice by accident). */
export function configureTokens(settings: Partial<TokenSettings> = {}): void {
  const next = { ...defaults(), ...Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) } as TokenSettings;
  if (!Number.isInteger(next.maxDelegationDepth) || next.maxDelegationDepth < 1) {
    throw new Error(`maxDelegationDepth must be a whole number ≥ 1, got ${String(next.maxDelegationDepth)}`);
  }
  current = next;
}

export const tokenSettings = (): Readonly<TokenSettings> => current;
