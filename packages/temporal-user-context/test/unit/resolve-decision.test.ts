// Found by mutation testing: the worker's pure decision helpers (resolve.ts, decision.ts) had no unit
// test of their allow paths, of the explicit-context check, or of the schedule token's server check.
import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import {
  Auditor,
  ErrorCodes,
  UserContextError,
  currentActor,
  currentUserContext,
  memoryAuditSink,
  resolveUserContext,
  systemPrincipal,
} from '../../src/index.js';
import type { ContextClaims } from '../../src/crypto/claims.js';
import type { ContextHeader } from '../../src/header/wire.js';
import { auditAllowed, auditFailure, confirmOriginator } from '../../src/worker/decision.js';
import type { ScheduledRunCheck } from '../../src/worker/scheduled-run.js';
import { runInNexusScope, type ActivityScope } from '../../src/worker/scope.js';
import type { Verified } from '../../src/worker/verifier.js';

const alice = Object.freeze({ userId: 'alice', workspaceId: 'ws-1', roles: Object.freeze(['member']) });
const ids = {
  namespace: 'ns',
  workflowId: 'wf-1',
  runId: 'run-1',
  activityType: 'act',
  activityId: '1',
  attempt: 1,
};

function claimsOf(extra: Partial<ContextClaims> = {}): ContextClaims {
  return {
    iss: 'edge',
    aud: 'ns',
    sub: 'alice',
    ws: 'ws-1',
    roles: ['member'],
    use: 'start',
    wf: 'wf-1',
    wsh: 'w'.repeat(22),
    subh: 's'.repeat(22),
    iat: 100,
    exp: 200,
    jti: 'jti-0001',
    ...extra,
  };
}

function scopeOf(fields: Partial<ActivityScope> = {}) {
  const memory = memoryAuditSink();
  const scope: ActivityScope = { allowedSystem: [], audit: ids, auditor: new Auditor([memory]), ...fields };
  return { scope, events: memory.events };
}

/** Runs `fn` in `scope`; returns its value or the refusal's code. */
async function inScope<T>(scope: ActivityScope, fn: () => T): Promise<T | string> {
  return runInNexusScope(scope, async () => {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof UserContextError)) throw err;
      return err.code;
    }
  });
}

const record = (e: { action: string; decision: string; source: string; reason: string }) => [
  e.action,
  e.decision,
  e.source,
  e.reason,
];

describe('resolveUserContext', () => {
  const verified = { context: alice, claims: claimsOf() };

  it('an explicit context must equal the verified one: same user, workspace and roles', async () => {
    for (const explicit of [
      { ...alice, userId: 'bob' },
      { ...alice, workspaceId: 'ws-2' },
      { ...alice, roles: ['member', 'admin'] },
    ]) {
      const { scope, events } = scopeOf(verified);
      expect(await inScope(scope, () => resolveUserContext({ explicit }))).toBe(ErrorCodes.EXPLICIT_MISMATCH);
      expect(events.map(record)).toEqual([
        ['activity.resolve', 'deny', 'explicit', ErrorCodes.EXPLICIT_MISMATCH],
      ]);
      expect(events[0]!.userId).toBe('alice');
    }
    const { scope, events } = scopeOf(verified);
    expect(
      await inScope(scope, () => resolveUserContext({ explicit: { ...alice, roles: ['member'] } })),
    ).toBe(alice);
    expect(events.map(record)).toEqual([['activity.resolve', 'allow', 'explicit', 'ok']]);
    expect(events[0]!.tokenId).toBe('jti-0001');
  });

  it('refuses a malformed explicit context as INVALID, and one without a verified context as MISSING', async () => {
    const malformed = scopeOf(verified);
    expect(await inScope(malformed.scope, () => resolveUserContext({ explicit: { userId: 'alice' } }))).toBe(
      ErrorCodes.INVALID,
    );
    expect(malformed.events.map(record)).toEqual([
      ['activity.resolve', 'deny', 'explicit', ErrorCodes.INVALID],
    ]);
    const none = scopeOf();
    expect(await inScope(none.scope, () => resolveUserContext({ explicit: alice }))).toBe(ErrorCodes.MISSING);
    expect(none.events.map(record)).toEqual([['activity.resolve', 'deny', 'explicit', ErrorCodes.MISSING]]);
  });

  it('returns the verified context, audited as the header’s, before any declared system principal', async () => {
    const { scope, events } = scopeOf({ ...verified, allowedSystem: ['nightly'] });
    const system = systemPrincipal('nightly', 'nightly cleanup');
    expect(await inScope(scope, () => resolveUserContext({ system }))).toBe(alice);
    expect(events.map(record)).toEqual([['activity.resolve', 'allow', 'header', 'ok']]);
    expect(events[0]).toMatchObject({ userId: 'alice', workspaceId: 'ws-1', tokenId: 'jti-0001' });
  });

  it('without a context: an allow-listed system principal, a forbidden one, a look-alike, or MISSING', async () => {
    const system = systemPrincipal('nightly', 'nightly cleanup');
    const allowed = scopeOf({ allowedSystem: ['nightly'] });
    expect(await inScope(allowed.scope, () => resolveUserContext({ system }))).toEqual(system);
    expect(allowed.events.map(record)).toEqual([['activity.resolve', 'allow', 'system', 'ok']]);
    expect(allowed.events[0]).toMatchObject({ principal: 'nightly', detail: 'nightly cleanup' });

    const forbidden = scopeOf({ allowedSystem: ['other'] });
    expect(await inScope(forbidden.scope, () => resolveUserContext({ system }))).toBe(
      ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
    );
    expect(forbidden.events.map(record)).toEqual([
      ['activity.resolve', 'deny', 'system', ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN],
    ]);

    const lookAlike = { kind: 'robot', name: 'nightly', reason: 'nightly cleanup' } as never;
    const invalid = scopeOf({ allowedSystem: ['nightly'] });
    expect(await inScope(invalid.scope, () => resolveUserContext({ system: lookAlike }))).toBe(
      ErrorCodes.INVALID,
    );

    const nothing = scopeOf({ allowedSystem: ['nightly'] });
    expect(await inScope(nothing.scope, () => resolveUserContext())).toBe(ErrorCodes.MISSING);
    expect(nothing.events.map(record)).toEqual([['activity.resolve', 'deny', 'header', ErrorCodes.MISSING]]);
  });

  it('currentUserContext: the verified context, and MISSING (audited) in an activity without a user', async () => {
    expect(await inScope(scopeOf(verified).scope, () => currentUserContext())).toBe(alice);
    const { scope, events } = scopeOf({ allowedSystem: ['nightly'] });
    expect(await inScope(scope, () => currentUserContext())).toBe(ErrorCodes.MISSING);
    expect(events.map(record)).toEqual([['activity.resolve', 'deny', 'header', ErrorCodes.MISSING]]);
  });

  it('currentActor: the verified actor, undefined without one, the refusal when it did not verify', async () => {
    const bob = { userId: 'bob', workspaceId: 'ws-1', roles: [] };
    expect(await inScope(scopeOf({ ...verified, actor: bob }).scope, () => currentActor())).toBe(bob);
    expect(await inScope(scopeOf(verified).scope, () => currentActor())).toBeUndefined();
    const actorRefusal = new UserContextError(ErrorCodes.TOKEN_EXPIRED, 'actor token expired');
    expect(await inScope(scopeOf({ ...verified, actorRefusal }).scope, () => currentActor())).toBe(
      ErrorCodes.TOKEN_EXPIRED,
    );
  });
});

describe('confirmOriginator, auditAllowed, auditFailure', () => {
  const header: ContextHeader = {
    v: 1,
    tok: 'a.b.c.d.e',
    ws: 'w'.repeat(22),
    sub: 's'.repeat(22),
    lin: { root: 'wf-sched-2026-01-01T00:00:00Z', start: 123_000, wf: 'wf-sched-2026-01-01T00:00:00Z' },
  };
  const client = {} as Client;

  function checks(revoked = false) {
    const calls: unknown[][] = [];
    const scheduledRuns = {
      confirm: async (...args: unknown[]) => {
        calls.push(args);
      },
    } as unknown as ScheduledRunCheck;
    return { calls, checks: { scheduledRuns, isRevoked: () => revoked } };
  }

  it("a schedule token's run is confirmed with the server, with its binding; a start token's is not", async () => {
    const schedule: Verified = {
      context: alice,
      claims: claimsOf({
        use: 'schedule',
        sch: 'sched',
        wf: 'wf-sched',
        wt: 'T',
        tq: 'Q',
        ad: 'a'.repeat(43),
      }),
    };
    const { calls, checks: c } = checks();
    await confirmOriginator(schedule, header, c, () => ({ client, runKey: 'run-key' }));
    expect(calls).toEqual([
      [
        client,
        'sched',
        header.lin!.root,
        123_000,
        100,
        'run-key',
        { workflowType: 'T', taskQueue: 'Q', argsDigest: 'a'.repeat(43) },
      ],
    ]);
    const unbound: Verified = {
      context: alice,
      claims: claimsOf({ use: 'schedule', sch: 'sched', wf: 'wf-sched' }),
    };
    const second = checks();
    await confirmOriginator(unbound, header, second.checks, () => ({ client, runKey: 'run-key' }));
    expect(second.calls).toEqual([[client, 'sched', header.lin!.root, 123_000, 100, 'run-key', undefined]]);
    const start = checks();
    await confirmOriginator({ context: alice, claims: claimsOf() }, header, start.checks, () => {
      throw new Error('a start token asks the server nothing here');
    });
    expect(start.calls).toEqual([]);
  });

  it('a revoked token is refused as REVOKED before the server is asked', async () => {
    const schedule: Verified = {
      context: alice,
      claims: claimsOf({ use: 'schedule', sch: 'sched', wf: 'wf-sched' }),
    };
    const { calls, checks: c } = checks(true);
    await expect(
      confirmOriginator(schedule, header, c, () => ({ client, runKey: 'k' })),
    ).rejects.toMatchObject({
      code: ErrorCodes.REVOKED,
    });
    expect(calls).toEqual([]);
  });

  it('audits an allow as an allow from the header, and a failure by its kind, with the qualifier first', () => {
    const memory = memoryAuditSink();
    const auditor = new Auditor([memory]);
    const verified: Verified = { context: alice, claims: claimsOf() };
    auditAllowed(auditor, ids, 'activity.execute', verified, 'note');
    const outage = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(() => auditFailure(auditor, ids, 'activity.execute', outage, { qualifier: 'forwarded' })).toThrow(
      outage,
    );
    const refusal = new UserContextError(ErrorCodes.REVOKED, 'context revoked');
    expect(
      auditFailure(auditor, ids, 'activity.execute', refusal, { qualifier: 'forwarded', verified }),
    ).toBe(refusal);
    expect(memory.events.map((e) => [...record(e), e.detail, e.userId, e.tokenId])).toEqual([
      ['activity.execute', 'allow', 'header', 'ok', 'note', 'alice', 'jti-0001'],
      [
        'activity.execute',
        'deny',
        'header',
        'ERROR',
        'forwarded: error: Error code=ECONNREFUSED',
        undefined,
        undefined,
      ],
      [
        'activity.execute',
        'deny',
        'header',
        ErrorCodes.REVOKED,
        'forwarded: context revoked',
        'alice',
        'jti-0001',
      ],
    ]);
  });
});
