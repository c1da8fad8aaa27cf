// The names of the local activities behind getUserContext() and verifyActor(), in a module of their own
// with no imports: the plugin registers them on every worker (plugin.ts) and workflow code calls them
// (api.ts). Imported from api.ts, the plugin loaded the workflow SDK and ran its module-level proxies
// in every client and worker process (found by review).

/** Activity names the plugin registers on every worker; workflow code reaches them through the APIs in api.ts. */
export const WHOAMI_ACTIVITY = 'temporalUserContext.whoami';
export const WHOIS_ACTOR_ACTIVITY = 'temporalUserContext.whoisActor';
