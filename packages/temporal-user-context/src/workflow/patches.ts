// The patches of this package's workflow-side code, in a module of their own: workflow code uses them
// (api.ts), and the plugin keeps them on whatever a worker's `patchActivationCallback` says (plugin.ts).

/**
 * The patch under which getUserContext() shares one verification that no caller cancels: runs that
 * verified before it (each cancelled caller cancelling the local activity, the next call starting
 * another) replay as they ran.
 */
export const SHARED_VERIFICATION_PATCH = 'temporal-user-context:shared-verification';

/**
 * The patch under which verifyActor()'s local activity is not cancelled with its caller's scope. A run
 * cancelled through Temporal cancels its handlers' local activities, and Core places a cancelled local
 * activity's marker among the other commands of its workflow task by timing: a replay could order them
 * otherwise and fail with a nondeterminism error (an activity cancelled in the same task). Runs that
 * verified before it replay as they ran.
 */
export const WHOLE_ACTOR_VERIFICATION_PATCH = 'temporal-user-context:whole-actor-verification';

/**
 * The patch under which this package's verifications (getUserContext(), verifyActor()) run one at a
 * time in a run, each local activity after the last one ended. SDK 1.24 delivers local activities that
 * were in flight together, when it replays them, in one activation, although live they may have ended
 * in two with the run acting in between (two senders' updates, each verified in its handler): the
 * replay then orders the run's commands otherwise, and fails with a nondeterminism error. Runs that
 * verified before it replay as they ran.
 */
export const SERIAL_VERIFICATION_PATCH = 'temporal-user-context:serial-verification';

/** Every patch of this package: a worker's `patchActivationCallback` does not decide these. */
export const OWN_PATCHES: ReadonlySet<string> = new Set([
  SHARED_VERIFICATION_PATCH,
  WHOLE_ACTOR_VERIFICATION_PATCH,
  SERIAL_VERIFICATION_PATCH,
]);
