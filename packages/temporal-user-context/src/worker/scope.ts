import { AsyncLocalStorage } from 'node:async_hooks';
import type { UserContextError } from '../context/errors.js';
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

export const activityScope = new AsyncLocalStorage<ActivityScope>();
