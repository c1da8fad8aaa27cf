import { ApplicationFailure } from '@temporalio/common';
import { ErrorCodes, UserContextError, type UserContextErrorCode } from './errors.js';

// Loaded in the workflow sandbox too (through `temporal-user-context/workflow`): no validation library.
const CODES: ReadonlySet<string> = new Set<string>(Object.values(ErrorCodes));
/** A refused query's message: the refusal's code first (workflow/interceptors.ts `refusal`). */
const QUERY_REFUSAL = /^(USER_CONTEXT_[A-Z_]+): /;

/**
 * The `USER_CONTEXT_*` code of a refusal as it crosses Temporal, or `undefined` for any other error.
 * Workflow code and clients see refusals as Temporal failures, not as `UserContextError`: the `type` of an
 * `ApplicationFailure` (what `getUserContext()` and `verifyActor()` reject with in workflow code), found on the
 * error itself or in its cause chain (an `ActivityFailure` of one of your activities that the worker
 * refused, a `ChildWorkflowFailure`), or the `code` of a `UserContextError`. A refused query reaches
 * the SDK's client as a `QueryNotRegisteredError` (SDK 1.24 names every failed query so) whose message
 * is the refusal's, `<code>: <reason>`: its code is read from there.
 *
 * @example
 * try { await verifyActor(); } catch (err) {
 *   if (userContextFailureCode(err) === ErrorCodes.LINEAGE_MISMATCH) return; // not a verifiable actor
 *   throw err;
 * }
 */
export function userContextFailureCode(err: unknown): UserContextErrorCode | undefined {
  // Bounded: a cause chain is built by whoever threw, and need not end.
  let e = err;
  for (let depth = 0; depth < 16 && e !== null && typeof e === 'object'; depth++) {
    if (e instanceof UserContextError) return e.code;
    if (e instanceof ApplicationFailure && typeof e.type === 'string' && CODES.has(e.type)) {
      return e.type as UserContextErrorCode;
    }
    // By name: the class is the client package's, which the sandbox does not load.
    if ((e as Error).name === 'QueryNotRegisteredError') {
      const message: unknown = (e as Error).message;
      const code = typeof message === 'string' ? QUERY_REFUSAL.exec(message)?.[1] : undefined;
      if (code !== undefined && CODES.has(code)) return code as UserContextErrorCode;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** True when `err` is a refusal of this library ({@link userContextFailureCode}), optionally `code`. */
export function isUserContextFailure(err: unknown, code?: UserContextErrorCode): boolean {
  const found = userContextFailureCode(err);
  return found !== undefined && (code === undefined || found === code);
}
