/**
 * What every route runs a request with: the caller (from the bearer JWT), its database scope, its
 * Temporal calls as that caller, and the API's own audit records. Made once per API by `createApi`.
 */
import type { Client } from '@temporalio/client';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { runAsUser, type Auditor, type MirrorQueryIds, type UserContext } from 'temporal-user-context';
import {
  withUserScope,
  type ScopeAuditFields,
  type ScopedTransaction,
  type SqlDatabase,
  type UserScopeOptions,
} from 'temporal-user-context/postgres';
import { AuthError } from '../auth/verify.js';
import { MembershipRepository } from '../data/repositories/workspaces.js';
import type { Quotas } from './quotas.js';
import type { UnfinishedWork } from './unfinished-work.js';

declare module 'fastify' {
  interface FastifyRequest {
    userContext?: UserContext;
    /** The bearer token's `iat` (epoch seconds). */
    tokenIssuedAt?: number;
  }
}

/** The helpers and settings the routes share. */
export interface RouteContext {
  readonly db: SqlDatabase;
  /** A Temporal client with the UserContextPlugin and the edge key ring. */
  readonly client: Client;
  readonly taskQueue: string;
  readonly limits: Quotas;
  readonly workerTimeoutMs: number;
  readonly temporalTimeoutMs: number;
  /** How long a schedule's row counts without Temporal's listing to confirm it (migration 0012). */
  readonly scheduleRowStaleMs: number;
  /** Options for every withUserScope call (auditor, app role). */
  readonly scope: Omit<UserScopeOptions, 'requireRole'> | undefined;
  /** How long before a role's grant a bearer token may be issued and still get it (`CreateApiOptions`). */
  readonly grantToleranceSeconds: number;
  /** The edge plugin's `mirrorQuery` (see `CreateApiOptions`). */
  readonly mirrorQuery: ((ids: MirrorQueryIds) => string) | undefined;
  readonly auditor: Auditor;
  /** The fields of every record the API writes: its identities come from the edge JWT. */
  readonly audit: ScopeAuditFields;
  /** Requests' work that closing waits for (late deletes of timed-out schedule creates among it). */
  readonly unfinished: UnfinishedWork;
  /** The caller, as the bearer JWT named them (authenticated before any route runs). */
  user(request: FastifyRequest): UserContext;
  /** `fn` in the caller's database scope (its membership checked live; `requireRole` if given). */
  scoped<T>(
    request: FastifyRequest,
    fn: (tx: ScopedTransaction) => Promise<T>,
    requireRole?: string,
  ): Promise<T>;
  /** `fn`'s Temporal calls as the caller, within the API's Temporal deadline. */
  asUser<T>(request: FastifyRequest, fn: () => Promise<T>): Promise<T>;
  /** Temporal calls in `fn` end at the deadline (`bounded` inside sets its own). */
  timely<T>(fn: () => Promise<T>): Promise<T>;
  /** Audits a refusal the API decides itself and returns it, marked as on record, for the route to throw. */
  refused<E extends Error>(
    request: FastifyRequest,
    action: string,
    refusal: E & { code: string },
    detail?: string,
  ): E;
  /** Audits a change the API made: who changed what. */
  changed(request: FastifyRequest, action: string, detail: string): void;
  /** Temporal calls that wait on a run or a worker, ended with their request (see below). */
  bounded<T>(reply: FastifyReply, timeoutMs: number, fn: () => Promise<T>, endsAtClose?: boolean): Promise<T>;
}

/** What `createApi` makes the route context from. */
export interface RouteContextParts extends Omit<
  RouteContext,
  'user' | 'scoped' | 'asUser' | 'timely' | 'refused' | 'changed' | 'bounded'
> {
  /** Refusals on record already: the error handler writes no second record for them. */
  readonly audited: WeakSet<object>;
  /** Aborted as the API begins to close: waits that only read (a result's long poll) end then. */
  readonly closing: AbortSignal;
}

/** The route context: the helpers over `parts`. */
export function createRouteContext(parts: RouteContextParts): RouteContext {
  const { db, client, scope, auditor, audit, audited, closing, temporalTimeoutMs } = parts;
  const timely = <T>(fn: () => Promise<T>): Promise<T> =>
    client.withDeadline(Date.now() + temporalTimeoutMs, fn);
  const user = (request: FastifyRequest): UserContext => {
    if (!request.userContext) throw new AuthError('AUTH_MISSING', 'bearer token required');
    return request.userContext;
  };
  /** The roles the request's last scope found the caller still holds (claimed ∩ stored), each granted before its token. */
  const effectiveRoles = new WeakMap<FastifyRequest, readonly string[]>();
  const scoped = <T>(
    request: FastifyRequest,
    fn: (tx: ScopedTransaction) => Promise<T>,
    requireRole?: string,
  ): Promise<T> =>
    withUserScope(
      db,
      user(request),
      async (tx) => {
        // A token issued before a role it names was granted (a member removed and added again, an admin
        // demoted and promoted again) is refused, whole: its holder signs in again (found by review).
        // Once per request for the roles it found: a request's later scopes (a start makes two or three)
        // find the same ones, or fewer.
        const issuedAt = request.tokenIssuedAt;
        const checked = effectiveRoles.get(request);
        const late =
          issuedAt === undefined
            ? tx.effectiveRoles
            : checked !== undefined && tx.effectiveRoles.every((role) => checked.includes(role))
              ? []
              : await new MembershipRepository(tx).grantedAfter(
                  tx.effectiveRoles,
                  issuedAt,
                  parts.grantToleranceSeconds,
                );
        if (late.length > 0)
          throw refused(
            request,
            'api.auth',
            new AuthError('AUTH_STALE', 'token issued before the membership or role it needs: sign in again'),
            `roles granted after the token was issued: ${late.join(',')}`,
          );
        effectiveRoles.set(request, tx.effectiveRoles);
        return fn(tx);
      },
      { ...scope, auditor, audit, ...(requireRole ? { requireRole } : {}) },
    );
  /**
   * Runs `fn` as the caller for Temporal: the context its tokens carry names the roles the caller's
   * membership still has, not the identity provider's claim (found by review: a demoted admin's runs
   * and schedules carried `admin` for their tokens' lives, and a token's roles the store never gave
   * reached workflow code as `getUserContext().roles`). A request that ran no scope yet runs one.
   */
  const asUser = async <T>(request: FastifyRequest, fn: () => Promise<T>): Promise<T> => {
    if (!effectiveRoles.has(request)) await scoped(request, async () => undefined);
    const roles = effectiveRoles.get(request) ?? [];
    return runAsUser({ ...user(request), roles: [...roles] }, () => timely(fn));
  };
  /**
   * Audits a refusal the API decides itself, after its database scope was allowed (without this record
   * the trail would show that scope's `allow` and nothing of the refusal), and returns `refusal`,
   * marked as on record, for the route to throw.
   */
  const refused = <E extends Error>(
    request: FastifyRequest,
    action: string,
    refusal: E & { code: string },
    detail?: string,
  ): E => {
    record(request, action, 'deny', refusal.code, detail);
    audited.add(refusal);
    return refusal;
  };
  /** One record of a decision the API made itself, as the caller (`source: 'edge'`). */
  const record = (
    request: FastifyRequest,
    action: string,
    decision: 'allow' | 'deny',
    reason: string,
    detail: string | undefined,
  ): void => {
    const { userId, workspaceId } = user(request);
    auditor.emit({
      action,
      decision,
      ...audit,
      source: 'edge',
      reason,
      userId,
      workspaceId,
      ...(detail ? { detail } : {}),
    });
  };
  /**
   * Audits a change the API made (its database scope's `allow` names no target): who changed what, for
   * changes of who may do what (memberships and their roles) and of what agents do (their instructions
   * and tools), which the trail must show whoever reads it later.
   */
  const changed = (request: FastifyRequest, action: string, detail: string): void =>
    record(request, action, 'allow', 'ok', detail);
  /**
   * Runs Temporal calls that wait on a run or a worker so that none outlives its request: they are
   * cancelled at the deadline, and as soon as the HTTP client goes away. With `endsAtClose` (a wait
   * that only reads), also as soon as the API begins to close.
   */
  const bounded = <T>(
    reply: FastifyReply,
    timeoutMs: number,
    fn: () => Promise<T>,
    endsAtClose = false,
  ): Promise<T> => {
    // The SDK cancels a call when the signal fires, not one started after it fired: a client gone, or
    // a closing begun, before the call is answered as the SDK's cancelled call is, without a call.
    if (reply.raw.destroyed || (endsAtClose && closing.aborted)) return Promise.reject(cancelledCall());
    const gone = new AbortController();
    const abort = () => gone.abort();
    reply.raw.once('close', abort);
    if (endsAtClose) closing.addEventListener('abort', abort, { once: true });
    // The deadline also ends a call started after the signal fired (the next page of a result() that
    // follows a continue-as-new).
    return client
      .withAbortSignal(gone.signal, () => client.withDeadline(Date.now() + timeoutMs, fn))
      .finally(() => {
        reply.raw.off('close', abort);
        closing.removeEventListener('abort', abort);
      });
  };
  return { ...parts, user, scoped, asUser, timely, refused, changed, bounded };
}

/**
 * What the SDK's client rejects a call with when its abort signal cancelled it (gRPC status 1,
 * CANCELLED, as @grpc/grpc-js makes it): for a call not made because the signal had fired already.
 */
function cancelledCall(): Error {
  const details = 'Cancelled before the call';
  return Object.assign(new Error(`1 CANCELLED: ${details}`), { code: 1, details, metadata: {} });
}
