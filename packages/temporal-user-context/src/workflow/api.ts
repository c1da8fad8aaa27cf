import { CancellationScope, patched, proxyLocalActivities } from '@temporalio/workflow';
import { ErrorCodes } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import { refusal } from './interceptors.js';
import { WHOAMI_ACTIVITY, WHOIS_ACTOR_ACTIVITY } from './activity-names.js';
import {
  SERIAL_VERIFICATION_PATCH,
  SHARED_VERIFICATION_PATCH,
  WHOLE_ACTOR_VERIFICATION_PATCH,
} from './patches.js';
import {
  currentActor,
  runAsActor,
  workflowState,
  type ActorPolicy,
  type ActorRef,
  type Originator,
  type WorkflowContextState,
} from './state.js';

// The originator's verification is bounded by time, not by a count: failures that are no verdict (a
// revocation store's outage, a scheduled run its schedule has not recorded yet, a lookup the server
// refused the worker) are retryable because they may pass, and three attempts (7.5 s) gave up before
// the worker's own window for them (30 s for a fresh scheduled run), failing a run that would have
// verified. Refusals are final at once.
const originatorVerifier = proxyLocalActivities<{ [WHOAMI_ACTIVITY]: () => Promise<UserContext> }>({
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '2m',
  retry: {
    initialInterval: '1s',
    backoffCoefficient: 2,
    maximumInterval: '10s',
    nonRetryableErrorTypes: Object.values(ErrorCodes),
  },
});

// An actor's verification fails fast instead: it runs in a signal or update handler, whose code decides
// what an outage means (wait and verify again with a timer, drop the call, refuse the update), and an
// update's caller is waiting for the answer.
const actorVerifier = proxyLocalActivities<{ [WHOIS_ACTOR_ACTIVITY]: () => Promise<UserContext> }>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 3, nonRetryableErrorTypes: Object.values(ErrorCodes) },
});

const settled = (): void => undefined;

/**
 * Runs `verify` (a local activity) once every verification queued before it has ended, under
 * `SERIAL_VERIFICATION_PATCH`: live, two local activities in flight together may end in two
 * activations, the run acting in between, while a replay delivers both in one (SDK 1.24), and the run's
 * commands come out in another order. One at a time, each ends alone, live as in replay.
 */
function serially<T>(state: WorkflowContextState, verify: () => Promise<T>): Promise<T> {
  const previous = state.verifying;
  const serial = patched(SERIAL_VERIFICATION_PATCH);
  // Without the patch (a run that verified before it), at once as before; still counted, so that a
  // run going live on this code mid-verification queues its next one behind it (found by review).
  const mine = serial && previous ? previous.then(verify) : verify();
  const ended = mine.then(settled, settled);
  state.verifying = !serial && previous ? Promise.all([previous, ended]).then(settled) : ended;
  return mine;
}

/**
 * The originator of this workflow lineage (who started it), verified by the worker.
 *
 * The first call runs one local activity that opens and verifies the sealed token outside the sandbox;
 * its result is recorded in history, so replay never needs keys and stays deterministic after key
 * rotation. Later calls in the same run return the memoised result. Only a success is memoised: after
 * a rejection (a transient failure, or a refusal) the next call verifies again in a new local activity
 * — a refusal is then normally refused again. The verification is shared and not cancellable: a caller
 * whose cancellation scope is cancelled is rejected with `CancelledFailure`, and the others still get
 * the result.
 *
 * Rejects with a non-retryable `ApplicationFailure` whose `type` is the `USER_CONTEXT_*` code when the
 * context does not verify (the worker's refusal of the local activity reaches workflow code as that
 * failure itself); recognise it with `userContextFailureCode`. Left uncaught, it fails the run
 * with that code. Failures that are no verdict (a revocation hook's outage, a scheduled run its
 * schedule has not recorded yet) are retried for up to 2 minutes (1 s doubling to 10 s) before the
 * call rejects with a retryable `ActivityFailure`.
 */
export function getUserContext(): Promise<UserContext> {
  const state = workflowState();
  if (!state.originator) {
    return Promise.reject(
      refusal(
        'workflow.getUserContext',
        state.originatorError?.code ?? ErrorCodes.MISSING,
        'no originator context',
      ),
    );
  }
  const shared = patched(SHARED_VERIFICATION_PATCH);
  if (!state.verified) {
    // One verification for every caller, so it is no caller's to cancel: in the caller's scope, a
    // cancelled caller (a handler's `withTimeout`) would fail every other caller awaiting it.
    const pending = serially(state, () =>
      shared
        ? CancellationScope.nonCancellable(() => originatorVerifier[WHOAMI_ACTIVITY]())
        : originatorVerifier[WHOAMI_ACTIVITY](),
    );
    state.verified = pending;
    // Registered before the caller's own handlers, so it has run by the time the caller sees the
    // rejection: a retry from a `catch` starts a new verification.
    pending.catch(() => {
      if (state.verified === pending) state.verified = undefined;
    });
  }
  const verification = state.verified as Promise<UserContext>;
  const scope = CancellationScope.current();
  if (!shared || !scope.cancellable) return verification;
  // Each caller is cancelled with its own scope, as an activity it scheduled itself would be.
  return new Promise<UserContext>((resolve, reject) => {
    verification.then(resolve, reject);
    scope.cancelRequested.catch(reject);
  });
}

/**
 * The originator as the workflow carries it (opaque header and lineage), without verification. Frozen:
 * what every activity, child and continued run of the workflow is sent is made from it.
 */
export function getOriginator(): Originator | undefined {
  return workflowState().originator;
}

/**
 * Who sent the signal, update or query being handled (pseudonyms only), or `undefined` outside a
 * handler, also in work a handler started and left running once it has returned (a loop it did not
 * await, a timer): that work no longer acts for the sender. The default policy already refused actors
 * of another workspace before the handler ran.
 */
export function getActor(): ActorRef | undefined {
  return currentActor();
}

/**
 * Verifies the current actor's token in a local activity and returns the actor's `UserContext` (recorded in
 * history). Only inside signal and update handlers: queries cannot run activities. Not memoised. The
 * run's verifications (this and {@link getUserContext}'s) run one at a time: a call may wait for those
 * before it (each bounded by its own timeouts), and that wait counts against the actor token's window
 * (the edge's `actorWindowSeconds`, 5 minutes by default), checked when its own verification runs. Not
 * cancelled with the caller's scope, whatever cancels it (a run cancelled through Temporal, a
 * `CancellationScope.withTimeout` around the call): the verification ends within its own timeouts (30 s
 * an attempt, three attempts, about 93 s at most), and the handler then sees the run's state.
 *
 * Rejects like {@link getUserContext}: a non-retryable `ApplicationFailure` whose `type` is the code
 * (`USER_CONTEXT_MISSING` outside a handler, the worker's code when the actor's token does not verify).
 * Left uncaught in an update handler, it rejects the update; in a signal handler or the workflow
 * function, it fails the run. A failure that is no verdict is tried three times (1 s and 2 s apart),
 * then rejects retryable: the handler decides what an outage means (wait and verify again, or not).
 */
export function verifyActor(): Promise<UserContext> {
  const actor = currentActor();
  if (!actor) return Promise.reject(refusal('workflow.verifyActor', ErrorCodes.MISSING, 'no actor in scope'));
  const whole = patched(WHOLE_ACTOR_VERIFICATION_PATCH);
  // The actor of the call, as it was made: a verification queued behind another starts later, maybe
  // once its handler has returned and its actor ended (found by review: it went without one).
  return serially(workflowState(), () =>
    runAsActor(actor, () =>
      whole
        ? CancellationScope.nonCancellable(() => actorVerifier[WHOIS_ACTOR_ACTIVITY]())
        : actorVerifier[WHOIS_ACTOR_ACTIVITY](),
    ),
  );
}

/**
 * Replaces this workflow's actor policy (call at the top of the workflow function). The policy must be
 * pure and synchronous: it runs in validators and queries. A policy that throws, or answers anything but
 * `true` or `false` (a promise: an `async` policy), refuses the call with `USER_CONTEXT_POLICY_FAILED`.
 * A policy decides which calls reach their handlers, not who may act: workers refuse an actor of
 * another workspace than the originator's wherever it would act (`verifyActor()`, an activity's actor),
 * whatever the policy admitted (`USER_CONTEXT_ACTOR_FORBIDDEN`).
 */
export function setActorPolicy(policy: ActorPolicy): void {
  workflowState().policy = policy;
}
