/**
 * Refusals already on record. Code that refuses and audits marks the error; the activity and Nexus
 * guards audit any refusal that leaves handler code unmarked (one raised where no auditor was at hand:
 * a malformed option, an invalid context given to `runAsUser`), so that none goes unrecorded and none
 * is recorded twice.
 */
const recorded = new WeakSet<object>();

/** Marks `err` as audited where it was raised. Returns it, for `throw markRecorded(err)`. */
export function markRecorded<E extends object>(err: E): E {
  recorded.add(err);
  return err;
}

/** Whether `err` was audited where it was raised. */
export function wasRecorded(err: unknown): boolean {
  return typeof err === 'object' && err !== null && recorded.has(err);
}
