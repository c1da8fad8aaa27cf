/**
 * `temporal server start-dev` flags for the benches that measure what a plugin costs the server.
 *
 * The dev server sets `system.forceSearchAttributesCacheRefreshOnRead`, so that a search attribute
 * created a moment ago is usable at once. The server describes it as a setting for tests that "should
 * not be turned on in production": every read of the search-attribute cache goes to persistence. On
 * Server 1.32 that is 8 cluster-metadata reads per workflow of the bare SDK, and 11 plus a second
 * namespace read when the start carries custom search attributes (`npm run bench:server`); with the
 * production value, a start with custom search attributes makes the persistence calls of one without.
 * The benches run with the production value, so that search attributes cost
 * what they cost a production server. `BENCH_SA_REFRESH=1` keeps the dev server's own; with
 * `TEMPORAL_ADDRESS` the server is whatever it is.
 */
export const SERVER_ARGS: readonly string[] =
  process.env.BENCH_SA_REFRESH === '1'
    ? []
    : ['--dynamic-config-value', 'system.forceSearchAttributesCacheRefreshOnRead=false'];

/** What the results record of that setting (an external server's is not known). */
export const SA_CACHE_SETTING = process.env.TEMPORAL_ADDRESS
  ? 'unknown (TEMPORAL_ADDRESS)'
  : SERVER_ARGS.length > 0
    ? 'production (no refresh on read)'
    : 'dev server default (refresh on every read)';
