import { LeashError } from '../errors.ts';
import { assertNever, type CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';

// One Leash access token revoked by its jti (POST /oauth/revoke): a stream per jti
// (`token/<jti>`), one event. What is written down is the jti, the token's exp (how long the
// revocation must be remembered) and who revoked it; never the token.

export const REVOKED_TOKEN_STREAM_TYPE = 'token';
export const TOKEN_REVOKED_EVENT = 'TokenRevoked';

export interface TokenRevoked {
  type: typeof TOKEN_REVOKED_EVENT;
  data: {
    jti: string;
    /** The token's `exp` (seconds since the epoch): after it (plus the largest leeway) nothing accepts the token anyway. */
    exp: number;
    /** `operator`, or `agent:<id>` for an agent that revoked its own token. */
    revokedBy: string;
  };
}

export type RevokeTokenCommand = { type: 'RevokeToken'; data: TokenRevoked['data']; metadata: CommandMetadata };
export type RevokedTokenState = { revoked: boolean };

export const revokedTokenAggregate: Aggregate<RevokeTokenCommand, TokenRevoked, RevokedTokenState> = {
  streamType: REVOKED_TOKEN_STREAM_TYPE,
  initialState: () => ({ revoked: false }),
  decide: (command, state) => {
    switch (command.type) {
      case 'RevokeToken':
        // Revoked once; the caller answers a second revocation as the first (RFC 7009: idempotent).
        if (state.revoked) throw new LeashError('ALREADY_EXISTS', 'this token is already revoked');
        return [{ type: TOKEN_REVOKED_EVENT, data: command.data }];
      default:
        return assertNever(command.type);
    }
  },
  evolve: () => ({ revoked: true }),
};

/** A jti Leash minted (a UUID) fits a stream id; anything else is not one of its tokens. */
export const isRevocableJti = (jti: unknown): jti is string => typeof jti === 'string' && /^[A-Za-z0-9._:-]{1,128}$/.test(jti);
