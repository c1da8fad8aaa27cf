import { AsyncLocalStorage } from 'node:async_hooks';
import { asyncLocalStorage as activityStorage } from '@temporalio/activity';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import type { ContextClaims } from '../crypto/claims.js';
import type { ContextHeader } from '../header/wire.js';
import type { Auditor } from '../audit/sinks.js';
import type { AuditEvent } from '../audit/event.js';

/** What an activity (or Nexus handler) runs under, set by the inbound interceptor after verification. */
export interface ActivityScope {
  /** The verified originator, or undefined for an allow-listed system activity without one. */
  readonly context?: UserContext;
  readonly claims?: ContextClaims;
  /** The verified actor, when the activity was scheduled from a signal or update handler. */
  readonly actor?: UserContext;
  /** Why an actor header did not verify, when it did not (verifyActor() reports it). */
  readonly actorRefusal?: UserContextError;
  /** The header as received, forwarded by the worker's own client. */
  readonly header?: ContextHeader;
  /** Principal names this worker allows this activity to run as. */
  readonly allowedSystem: readonly string[];
  /** Execution ids for audit records. */
  readonly audit: Pick<
    AuditEvent,
    'namespace' | 'workflowId' | 'runId' | 'workflowType' | 'activityType' | 'activityId' | 'attempt'
  >;
  readonly auditor: Auditor;
}

/**
 * Activity scopes are keyed by the SDK's own activity `Context` of the execution they belong to, not
 * kept in an AsyncLocalStorage of our own: on Node 20 every enabled store adds a cost to every promise
 * the process creates, and the SDK already propagates exactly the object we need. Weak, so a finished
 * execution's scope goes with its context.
 */
const activityScopes = new WeakMap<object, ActivityScope>();

/**
 * Nexus handlers: the SDK does not export its handler context storage, so they get a store of their
 * own. An AsyncLocalStorage costs nothing until its first `run`, i.e. in processes that serve no Nexus.
 */
const nexusScope = new AsyncLocalStorage<ActivityScope>();

/**
 * Attaches a verified scope to the running activity: from here on, its code (and everything it
 * awaits) sees it through {@link currentScope}. Called by the activity interceptor only, after
 * verification. Throws `USER_CONTEXT_MISCONFIGURED` outside an activity.
 */
export function enterActivityScope(scope: ActivityScope): void {
  const owner = activityStorage.getStore();
  if (!owner) throw new UserContextError(ErrorCodes.MISCONFIGURED, 'no activity context to attach to');
  activityScopes.set(owner, scope);
}

/**
 * Scopes whose activity or handler has settled. Work it left running (a timer, a promise nobody awaits)
 * still carries its activity `Context` or Nexus store, and must not go on acting for its user: forwarding
 * its header, or, on a worker that holds the issuing key, minting tokens for that user indefinitely.
 */
const closedScopes = new WeakSet<ActivityScope>();

/** Ends a scope: {@link currentScope} no longer returns it (called by the interceptors, once settled). */
export function closeScope(scope: ActivityScope): void {
  closedScopes.add(scope);
}

/** Runs a Nexus handler under a verified scope, closed once it settles (Nexus interceptor only). */
export async function runInNexusScope<T>(scope: ActivityScope, fn: () => Promise<T>): Promise<T> {
  try {
    return await nexusScope.run(scope, fn);
  } finally {
    closeScope(scope);
  }
}

/** The scope attached to the activity or Nexus handler this code runs in, open or not. */
function attachedScope(): ActivityScope | undefined {
  const activity = activityStorage.getStore();
  return activity === undefined ? nexusScope.getStore() : activityScopes.get(activity);
}

/** The scope of the running activity or Nexus handler, if its interceptor attached one and it is open. */
export function currentScope(): ActivityScope | undefined {
  const scope = attachedScope();
  return scope === undefined || closedScopes.has(scope) ? undefined : scope;
}

/**
 * The scope of the activity or Nexus handler this code was started by, once it has settled: work it
 * left running is neither inside it ({@link currentScope}) nor outside every activity, and what treats
 * "no scope" as "not in an activity" (a database scope, which checks an activity's user only inside
 * one) must refuse it instead.
 */
export function settledScope(): ActivityScope | undefined {
  const scope = attachedScope();
  return scope !== undefined && closedScopes.has(scope) ? scope : undefined;
}
