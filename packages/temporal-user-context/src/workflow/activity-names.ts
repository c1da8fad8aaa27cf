// The names of the local activities behind getUserContext() and verifyActor(), in a module of their own
// with no imports: the plugin registers them on every worker (worker/verification-activities.ts) and workflow code calls them
// (api.ts). Imported from api.ts, the plugin loaded the workflow SDK and ran its module-level proxies
// in every client and worker process (found by review).

/**
 * The activity type of the local activity behind `getUserContext()` (the plugin registers it on every
 * worker): an `isRevoked` hook, or a log, can tell it from the application's activities by it.
 */
export const WHOAMI_ACTIVITY = 'temporalUserContext.whoami';
/**
 * The activity type of the local activity behind `verifyActor()`: it runs in the originator's lineage
 * to verify who sent a signal or update. An `isRevoked` hook that refuses the originator here also
 * refuses every sender's verification, and with it their cancels.
 */
export const WHOIS_ACTOR_ACTIVITY = 'temporalUserContext.whoisActor';
