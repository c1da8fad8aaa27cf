import { currentScope, type ActivityScope } from '../worker/scope.js';

/**
 * Refusals already on record, and where. Code that refuses and audits marks the error with the
 * activity or Nexus handler it was recorded in (or none); the guards record any refusal that leaves
 * their handler's code without that mark (one raised where no auditor was at hand: a malformed option,
 * an invalid context handed to `runAsUser`), so that none goes unrecorded and none is recorded twice.
 * Keyed by where, not only whether: one error object thrown by several activities (an application's
 * module-level error, a memoised rejection, one refusal of a token lookup shared by concurrent
 * activities) is recorded by each of them, and each mark is kept: one activity's mark does not erase
 * another's (found by review: the second overwrote the first, which then recorded it again).
 */
const recordedIn = new WeakMap<object, WeakSet<ActivityScope>>();

/** Marks `err` as audited in the current activity or handler scope. Returns it: `throw markRecorded(err)`. */
export function markRecorded<E extends object>(err: E): E {
  const scope = currentScope();
  // Outside any activity or handler: no guard asks (wasRecordedIn takes a scope).
  return scope === undefined ? err : markRecordedIn(err, scope);
}

/** Marks `err` as audited for `scope`: a refusal its guard recorded before the scope was entered. */
export function markRecordedIn<E extends object>(err: E, scope: ActivityScope): E {
  let scopes = recordedIn.get(err);
  if (!scopes) recordedIn.set(err, (scopes = new WeakSet()));
  scopes.add(scope);
  return err;
}

/** Whether `err` was audited in `scope` (the handler whose guard asks). */
export function wasRecordedIn(err: unknown, scope: ActivityScope): boolean {
  return typeof err === 'object' && err !== null && recordedIn.get(err)?.has(scope) === true;
}
