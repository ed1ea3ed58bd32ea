import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';

// What one Cedar call says, as a layer of a decision sees it (SPEC §3, §11): allow or deny,
// the policies that decided, and the ones that failed to evaluate. Cedar skips a policy that
// fails to evaluate; for a forbid, that would turn a deny into an allow, so here it denies.

export interface LayerResult {
  allow: boolean;
  /** Satisfied permits on an allow; satisfied forbids on a deny (empty: nothing permitted). */
  reasons: string[];
  /** `<policy id>: <message>` for each policy that failed to evaluate. */
  errors: string[];
  /** The same, by the policy id Cedar reported. */
  failed: { policyId: string; message: string }[];
  /** A forbid failed to evaluate: the layer denies, naming it among the reasons. */
  errored: boolean;
}

/** Which of a call's policy ids (as Cedar reports them) are forbids. */
export type IsForbid = (cedarId: string) => boolean;

const byMessage = (a: { message: string }, b: { message: string }) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0);

/** Cedar's messages quote the values they refuse; a caller's value is bounded in what it can make us say. */
const bounded = (message: string) => (message.length > 300 ? `${message.slice(0, 300)}…` : message);

/** The request does not fit the schema (Cedar's request validation): a 400 naming what does not fit. */
export function requestInvalid(errors: { message: string; help?: string | null }[]): LeashError {
  return new LeashError('VALIDATION_FAILED', `the request does not fit the schema: ${errors.map((e) => bounded(e.help ? `${e.message} (${e.help})` : e.message)).join('; ')}`);
}

/**
 * Cedar's answer as a layer result; `name` maps Cedar's policy ids to the ones decisions report.
 * Cedar skips a policy that fails to evaluate; for a forbid that would turn a deny into an
 * allow (a context value of the wrong type, an overflow), so here an erroring forbid denies.
 */
export function answer(result: cedar.AuthorizationAnswer, isForbid: IsForbid, name: (id: string) => string = (id) => id): LayerResult {
  if (result.type === 'failure') throw requestInvalid(result.errors);
  const { decision, diagnostics } = result.response;
  // Cedar reports these as sets in no fixed order; decisions (and their replay) list them sorted.
  const failed = diagnostics.errors.map((e) => ({ policyId: e.policyId, message: `${name(e.policyId)}: ${bounded(e.error.message)}` })).sort(byMessage);
  const errors = failed.map((f) => f.message);
  const failedForbids = failed.filter((f) => isForbid(f.policyId)).map((f) => f.policyId);
  if (failedForbids.length > 0) {
    const satisfiedForbids = decision === 'deny' ? diagnostics.reason : [];
    return { allow: false, reasons: [...new Set([...satisfiedForbids, ...failedForbids])].sort(), errors, failed, errored: true };
  }
  return { allow: decision === 'allow', reasons: diagnostics.reason.sort(), errors, failed, errored: false };
}
