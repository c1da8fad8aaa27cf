import { currentScope, type ActivityScope } from '../worker/scope.js';

/**
 * Refusals already on record, and where. Code that refuses and audits marks the error with the
 * activity or Nexus handler it was recorded in (or none); the guards record any refusal that leaves
 * their handler's code without that mark (one raised where no auditor was at hand: a malformed option,
 * an invalid context handed to `runAsUser`), so that none goes unrecorded and none is recorded twice.
 * Keyed by where, not only whether: one error object thrown by several activities (an application's
 * module-level error, a memoised rejection) is recorded by each of them.
 */
const recordedIn = new WeakMap<object, ActivityScope | 'outside'>();

/** Marks `err` as audited in the current activity or handler scope. Returns it: `throw markRecorded(err)`. */
export function markRecorded<E extends object>(err: E): E {
  recordedIn.set(err, currentScope() ?? 'outside');
  return err;
}

/** Marks `err` as audited for `scope`: a refusal its guard recorded before the scope was entered. */
export function markRecordedIn<E extends object>(err: E, scope: ActivityScope): E {
  recordedIn.set(err, scope);
  return err;
}

/** Whether `err` was audited in `scope` (the handler whose guard asks). */
export function wasRecordedIn(err: unknown, scope: ActivityScope): boolean {
  return typeof err === 'object' && err !== null && recordedIn.get(err) === scope;
}
