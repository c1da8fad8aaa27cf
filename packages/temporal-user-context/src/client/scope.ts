import { AsyncLocalStorage } from 'node:async_hooks';
import { parseUserContext, type UserContext } from '../context/schema.js';

const edgeScope = new AsyncLocalStorage<UserContext>();

/**
 * Runs `fn` as `user` at the edge: every Temporal client call inside (start, signal, update, query,
 * schedule create) carries a context issued for that user. The context is validated first, before
 * `fn` runs: an invalid one throws `USER_CONTEXT_INVALID` synchronously, not as a rejected promise
 * (`await runAsUser(…)` in a try block catches both; a bare `runAsUser(…).catch(…)` does not).
 *
 * @example
 * await runAsUser(request.user, () => client.workflow.start(agentExecution, { ... }));
 */
export function runAsUser<T>(user: UserContext, fn: () => T): T {
  return edgeScope.run(parseUserContext(user), fn);
}

/** The edge user in scope, if any. */
export function edgeUser(): UserContext | undefined {
  return edgeScope.getStore();
}
