import { AsyncLocalStorage } from 'node:async_hooks';
import { markRecorded } from '../audit/recorded.js';
import { defaultAuditor } from '../audit/sinks.js';
import { isUserContextError } from '../context/errors.js';
import { parseUserContext, type UserContext } from '../context/schema.js';
import { currentScope } from '../worker/scope.js';

const edgeScope = new AsyncLocalStorage<UserContext>();

/**
 * Runs `fn` as `user` at the edge: every Temporal client call inside (start, signal, update, query,
 * schedule create) carries a context issued for that user. The context is validated first, before
 * `fn` runs: an invalid one throws `USER_CONTEXT_INVALID` synchronously, not as a rejected promise
 * (`await runAsUser(…)` in a try block catches both; a bare `runAsUser(…).catch(…)` does not). That
 * refusal is recorded: as the handler's by a plugin worker's guard inside an activity or Nexus handler,
 * else as `client.scope` by `defaultAuditor()`.
 *
 * @example
 * await runAsUser(request.user, () => client.workflow.start(agentExecution, { ... }));
 */
export function runAsUser<T>(user: UserContext, fn: () => T): T {
  let context: UserContext;
  try {
    context = parseUserContext(user);
  } catch (err) {
    // Inside a plugin worker's activity or Nexus handler its guard records the refusal as the
    // handler's; elsewhere no plugin is at hand, and the process's default auditor records it.
    if (isUserContextError(err) && currentScope() === undefined) {
      defaultAuditor().emit({
        action: 'client.scope',
        decision: 'deny',
        source: 'none',
        reason: err.code,
        detail: err.reason,
      });
      markRecorded(err);
    }
    throw err;
  }
  return edgeScope.run(context, fn);
}

/**
 * Disables the edge scope's AsyncLocalStorage until the next `runAsUser` (which enables it again). On
 * Node 20 every enabled store costs every promise of the process a little: for benchmarks that run a
 * variant without this plugin after one with it, in one process. Not exported from the package.
 */
export function disableEdgeScope(): void {
  edgeScope.disable();
}

/** The edge user in scope, if any. */
export function edgeUser(): UserContext | undefined {
  return edgeScope.getStore();
}
