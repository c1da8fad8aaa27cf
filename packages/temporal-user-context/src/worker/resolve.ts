import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { parseUserContext, sameUserContext, type UserContext } from '../context/schema.js';
import { isSystemPrincipal, systemPrincipal, type SystemPrincipal } from '../context/system-principal.js';
import { currentScope, settledScope, type ActivityScope } from './scope.js';
import { markRecorded } from '../audit/recorded.js';
import { defaultAuditor } from '../audit/sinks.js';

function scope(): ActivityScope {
  const current = currentScope();
  if (current) return current;
  // Work an activity or Nexus handler left running once it settled: refused on that handler's own
  // trail, as its user's, as the worker's client and withUserScope record it (found by review: the
  // process's default auditor recorded it as a call from outside any activity).
  const settled = settledScope();
  if (settled) {
    const err = new UserContextError(
      ErrorCodes.MISSING,
      'called from work an activity or Nexus handler left running after it settled',
    );
    settled.auditor.emit({
      ...settled.audit,
      action: 'activity.resolve',
      decision: 'deny',
      source: settled.context ? 'header' : 'system',
      reason: err.code,
      userId: settled.context?.userId,
      workspaceId: settled.context?.workspaceId,
      detail: err.reason,
    });
    throw markRecorded(err);
  }
  const err = new UserContextError(
    ErrorCodes.MISSING,
    'not inside an activity run by a UserContextPlugin worker',
  );
  // No plugin's auditor here: the process's default records it.
  defaultAuditor().emit({
    action: 'activity.resolve',
    decision: 'deny',
    source: 'none',
    reason: err.code,
    detail: err.reason,
  });
  throw markRecorded(err);
}

function refuse(
  s: ActivityScope,
  err: UserContextError,
  source: 'header' | 'explicit' | 'system',
  principal?: string,
): never {
  s.auditor.emit({
    ...s.audit,
    action: 'activity.resolve',
    decision: 'deny',
    source,
    reason: err.code,
    // Whose activity refused (e.g. an explicit context that differs from it), when it has a user.
    userId: s.context?.userId,
    workspaceId: s.context?.workspaceId,
    tokenId: s.claims?.jti,
    // A validated principal's name that was refused: a query by principal finds refused attempts too.
    principal,
    detail: err.reason,
  });
  throw markRecorded(err);
}

/**
 * The verified user context of the running activity (the original design's approach 2: no signature change).
 * Throws `USER_CONTEXT_MISSING` outside an activity or in a system activity that has no user.
 */
export function currentUserContext(): UserContext {
  const s = scope();
  if (!s.context)
    refuse(s, new UserContextError(ErrorCodes.MISSING, 'activity has no user context'), 'header');
  return s.context;
}

/**
 * The verified user of the activity or Nexus handler running now, or `undefined`: outside one, in a
 * system activity, or in work a handler left running after it settled. Never throws and never audits:
 * for what only describes the work (log attributes, metric labels, span attributes), in code that may
 * run outside the plugin's guard, such as an application's activity interceptor listed before this
 * plugin's (the SDK runs the first listed outermost). Found by review: `currentUserContext()` there
 * wrote a `deny` record for each log line, which `metricsAuditSink` alerts count. Decide with
 * {@link currentUserContext} or {@link resolveUserContext}, which refuse and audit.
 *
 * @example
 * // An application's activity outbound interceptor: the user on every log line, when there is one.
 * getLogAttributes(input, next) {
 *   const user = peekUserContext();
 *   return next(user ? { ...input, userId: user.userId, workspaceId: user.workspaceId } : input);
 * }
 */
export function peekUserContext(): UserContext | undefined {
  return currentScope()?.context;
}

/**
 * The verified actor (signal/update sender) when the activity was scheduled from a handler, or
 * `undefined`. Throws the refusal when the handler's actor header did not verify.
 */
export function currentActor(): UserContext | undefined {
  const s = scope();
  if (s.actorRefusal) throw s.actorRefusal;
  return s.actor;
}

/** Options of {@link resolveUserContext}: an explicit context and a declared system principal. */
export interface ResolveOptions {
  /** A context passed as an activity argument (approach 1). Must equal the propagated one. */
  explicit?: unknown;
  /**
   * A system principal this activity declares it may run as when it has no user. Used only when the
   * activity has no propagated context and the worker allow-lists the principal's name.
   */
  system?: SystemPrincipal;
}

/**
 * Resolves who the activity acts for (the original design's approach 3: one resolver over every source), with no permissive fallback:
 * 1. an explicit context must equal the verified, propagated one (`USER_CONTEXT_EXPLICIT_MISMATCH`);
 * 2. the propagated, verified context;
 * 3. a declared and allow-listed system principal;
 * otherwise `USER_CONTEXT_MISSING`. Every outcome is audited. An `explicit` of `null` counts as none.
 *
 * @throws {@link UserContextError} `USER_CONTEXT_EXPLICIT_MISMATCH` (above); `USER_CONTEXT_INVALID` for a
 *   malformed `explicit` or a principal not made by `systemPrincipal()`; `USER_CONTEXT_MISSING` for an
 *   `explicit` without a propagated context, no context and no usable principal, or a call outside an
 *   activity run by a `UserContextPlugin` worker; `USER_CONTEXT_SYSTEM_PRINCIPAL_FORBIDDEN` for a
 *   principal the worker does not allow-list for this activity type.
 */
export function resolveUserContext(options: ResolveOptions = {}): UserContext | SystemPrincipal {
  const s = scope();
  if (options.explicit !== undefined && options.explicit !== null) {
    let explicit: UserContext;
    try {
      explicit = parseUserContext(options.explicit);
    } catch (err) {
      if (!isUserContextError(err)) throw err;
      return refuse(s, err, 'explicit');
    }
    if (!s.context)
      return refuse(
        s,
        new UserContextError(ErrorCodes.MISSING, 'explicit context without a propagated one'),
        'explicit',
      );
    if (!sameUserContext(explicit, s.context)) {
      return refuse(
        s,
        new UserContextError(ErrorCodes.EXPLICIT_MISMATCH, 'explicit context differs from the verified one'),
        'explicit',
      );
    }
    s.auditor.emit({
      ...s.audit,
      action: 'activity.resolve',
      decision: 'allow',
      source: 'explicit',
      reason: 'ok',
      userId: s.context.userId,
      workspaceId: s.context.workspaceId,
      tokenId: s.claims?.jti,
    });
    return s.context;
  }
  if (s.context) {
    s.auditor.emit({
      ...s.audit,
      action: 'activity.resolve',
      decision: 'allow',
      source: 'header',
      reason: 'ok',
      userId: s.context.userId,
      workspaceId: s.context.workspaceId,
      tokenId: s.claims?.jti,
    });
    return s.context;
  }
  if (options.system) {
    let principal: SystemPrincipal;
    try {
      // Held to what systemPrincipal() makes: a look-alike object must not skip the mandatory reason.
      if (!isSystemPrincipal(options.system))
        throw new UserContextError(ErrorCodes.INVALID, 'system principal: not made by systemPrincipal()');
      principal = systemPrincipal(options.system.name, options.system.reason);
    } catch (err) {
      // A getter or Proxy trap of a look-alike that throws is a malformed principal too: refused, audited.
      const refusal = isUserContextError(err)
        ? err
        : new UserContextError(ErrorCodes.INVALID, 'system principal: unreadable value');
      return refuse(s, refusal, 'system');
    }
    if (!s.allowedSystem.includes(principal.name)) {
      return refuse(
        s,
        new UserContextError(
          ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
          `system principal ${principal.name} not allow-listed for this activity`,
        ),
        'system',
        principal.name,
      );
    }
    s.auditor.emit({
      ...s.audit,
      action: 'activity.resolve',
      decision: 'allow',
      source: 'system',
      reason: 'ok',
      principal: principal.name,
      detail: principal.reason,
    });
    return principal;
  }
  return refuse(
    s,
    new UserContextError(ErrorCodes.MISSING, 'no context and no system principal declared'),
    'header',
  );
}
