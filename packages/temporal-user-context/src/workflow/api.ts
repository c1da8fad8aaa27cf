import { proxyLocalActivities } from '@temporalio/workflow';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import { currentActor, workflowState, type ActorPolicy, type ActorRef, type Originator } from './state.js';

/** Activity names the plugin registers on every worker; workflow code reaches them through the APIs below. */
export const WHOAMI_ACTIVITY = 'temporalUserContext.whoami';
export const WHOIS_ACTOR_ACTIVITY = 'temporalUserContext.whoisActor';

const verifiers = proxyLocalActivities<{
  [WHOAMI_ACTIVITY]: () => Promise<UserContext>;
  [WHOIS_ACTOR_ACTIVITY]: () => Promise<UserContext>;
}>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 3, nonRetryableErrorTypes: Object.values(ErrorCodes) },
});

/**
 * The originator of this workflow lineage (who started it), verified by the worker.
 *
 * The first call runs one local activity that opens and verifies the sealed token outside the sandbox;
 * its result is recorded in history, so replay never needs keys and stays deterministic after key
 * rotation. Later calls in the same run return the memoised result. Rejects with a non-retryable
 * `USER_CONTEXT_*` failure when the context does not verify.
 */
export function getUserContext(): Promise<UserContext> {
  const state = workflowState();
  if (!state.originator) {
    return Promise.reject(
      new UserContextError(state.originatorError?.code ?? ErrorCodes.MISSING, 'no originator context'),
    );
  }
  state.verified ??= verifiers[WHOAMI_ACTIVITY]();
  return state.verified as Promise<UserContext>;
}

/** The originator as the workflow carries it (opaque header and lineage), without verification. */
export function getOriginator(): Originator | undefined {
  return workflowState().originator;
}

/**
 * Who sent the signal, update or query being handled (pseudonyms only), or `undefined` outside a
 * handler. The default policy already refused actors of another workspace before the handler ran.
 */
export function getActor(): ActorRef | undefined {
  return currentActor();
}

/**
 * Verifies the current actor's token in a local activity and returns the actor's claims (recorded in
 * history). Only inside signal and update handlers: queries cannot run activities.
 */
export function verifyActor(): Promise<UserContext> {
  if (!currentActor()) return Promise.reject(new UserContextError(ErrorCodes.MISSING, 'no actor in scope'));
  return verifiers[WHOIS_ACTOR_ACTIVITY]();
}

/**
 * Replaces this workflow's actor policy (call at the top of the workflow function). The policy must be
 * pure and synchronous: it runs in validators and queries.
 */
export function setActorPolicy(policy: ActorPolicy): void {
  workflowState().policy = policy;
}
