// `@approval("owner")` or `@approval("group:<id>")`: who must approve a request before a permit
// so marked allows it. Parsed when a policy set is compiled, so a set that names its approvers
// in any other way is refused at publication, not at the first payment.

export type ApproverSpec = 'owner' | `group:${string}`;

/** Group ids as the registry takes them. */
const GROUP = /^group:[A-Za-z0-9._:@-]{1,128}$/;

export function approverSpecOf(value: string | null): ApproverSpec | null {
  if (value === 'owner') return value;
  return value !== null && GROUP.test(value) ? (value as ApproverSpec) : null;
}
