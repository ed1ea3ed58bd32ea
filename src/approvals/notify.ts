import type { Bus } from '../bus/bus.ts';
import type { NodeSigner } from '../tokens/node-signer.ts';
import type { ApprovalRecord } from './approval.ts';

// Approvers learn of a pending approval without polling: every approval a node records is
// published on NATS (`leash.approvals`) and, when `LEASH_APPROVAL_WEBHOOK` is set, POSTed there
// as a JWT signed with the node's key (verifiable with Leash's JWKS), retried with backoff until
// the receiver answers 2xx or the approval expires. Neither delivery holds up the decision.

export const APPROVALS_SUBJECT = 'leash.approvals';
/** The JWT `typ` of a webhook body: not an access token, so no resource server can take it for one. */
export const APPROVAL_NOTICE_TYP = 'leash-approval+jwt';

export interface NotifyOptions {
  bus: Bus;
  webhook: string | null;
  signer: NodeSigner;
  issuer: string;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** Delay before retry n (1-based); tests shorten it. */
  backoffMs?: (attempt: number) => number;
  /** How long one delivery may take. */
  timeoutMs?: number;
}

/** What an approver needs to decide: never the request's context itself, only its digest. */
export const noticeOf = (a: ApprovalRecord) => ({
  id: a.id, status: a.status, agent: a.agent, human: a.human, action: a.action, resource: a.resource, contextDigest: a.contextDigest,
  approvers: a.approvers, policies: a.policies, requestedAt: a.requestedAt, expiresAt: a.expiresAt, decisionId: a.decisionId,
});

export class ApprovalNotifier {
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly options: NotifyOptions) {}

  notify(approval: ApprovalRecord): void {
    this.options.bus.publish(APPROVALS_SUBJECT, noticeOf(approval));
    if (!this.options.webhook) return;
    const delivery = this.deliver(approval).finally(() => this.inFlight.delete(delivery));
    this.inFlight.add(delivery);
  }

  /** Stops retrying; deliveries under way end at their timeout. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.inFlight]);
  }

  private async deliver(approval: ApprovalRecord): Promise<void> {
    const { webhook, signer, issuer, log } = this.options;
    const backoff = this.options.backoffMs ?? ((n: number) => Math.min(30_000, 500 * 2 ** (n - 1)));
    const expires = Date.parse(approval.expiresAt);
    for (let attempt = 1; !this.stopped; attempt++) {
      const now = new Date();
      if (now.getTime() >= expires) {
        log({ approval: approval.id, attempts: attempt - 1 }, 'approval webhook gave up: the approval expired before the receiver took it');
        return;
      }
      let failure: string;
      const body = await signer.sign({ iss: issuer, iat: Math.floor(now.getTime() / 1000), exp: Math.floor(expires / 1000), jti: approval.id, approval: noticeOf(approval) }, now, APPROVAL_NOTICE_TYP);
      if (!body) {
        failure = 'this node has no signing key it may use';
      } else {
        try {
          const response = await fetch(webhook!, {
            method: 'POST', headers: { 'content-type': 'application/jwt' }, body, redirect: 'error', signal: AbortSignal.timeout(this.options.timeoutMs ?? 5_000),
          });
          await response.body?.cancel();
          if (response.ok) return;
          failure = `HTTP ${response.status}`;
        } catch (err) {
          // Never the error's message: fetch's may quote the URL, which may hold the receiver's secret.
          const code = ((err as { cause?: { code?: unknown } }).cause?.code);
          failure = (err as Error).name === 'TimeoutError' ? 'timed out' : typeof code === 'string' ? code : 'the request failed';
        }
      }
      log({ approval: approval.id, attempt, failure }, 'approval webhook delivery failed; retrying');
      await new Promise((resolve) => setTimeout(resolve, backoff(attempt)).unref());
    }
  }
}
