// `temporal-user-context/testing`: activities unit-tested as a user, through the plugin's real guard.
import { Context } from '@temporalio/activity';
import { describe, expect, it, vi } from 'vitest';
import {
  ErrorCodes,
  currentActor,
  currentUserContext,
  defaultAuditor,
  generateKeySet,
  peekUserContext,
  recordDecision,
  resolveUserContext,
  systemPrincipal,
  userContextFailureCode,
} from 'temporal-user-context';
import { userActivityEnvironment } from 'temporal-user-context/testing';

const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };

// The activities under test, written as in an application.
async function whoAmI(greeting: string): Promise<string> {
  const me = currentUserContext();
  return `${greeting}, ${me.userId} of ${me.workspaceId} (${Context.current().info.workflowExecution?.workflowId})`;
}
async function withExplicit(passed: unknown) {
  return resolveUserContext({ explicit: passed });
}

async function claimRun(runId: string): Promise<never> {
  recordDecision({ action: 'run.claim', decision: 'deny', reason: 'RUN_NOT_FOUND', detail: `run ${runId}` });
  throw new Error("not this workflow's run");
}

describe('recordDecision', () => {
  it("puts an application's refusal in the trail with the activity's ids, user and token", async () => {
    const { env, audit } = await userActivityEnvironment({
      user: alice,
      info: { workflowExecution: { workflowId: 'order-42', runId: 'r1' }, activityType: 'claimRun' },
    });
    await expect(env.run(claimRun, 'run-7')).rejects.toThrow("not this workflow's run");
    const [guard, app] = audit.events;
    expect(app).toMatchObject({
      action: 'run.claim',
      decision: 'deny',
      source: 'header',
      reason: 'RUN_NOT_FOUND',
      detail: 'run run-7',
      userId: 'alice',
      workspaceId: 'ws-acme',
      workflowId: 'order-42',
      runId: 'r1',
      activityType: 'claimRun',
      tokenId: guard!.tokenId,
    });
    expect(app!.tokenId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("refuses outside a plugin worker's handler, and actions that could pass for the library's", async () => {
    expect(() => recordDecision({ action: 'run.claim', decision: 'deny', reason: 'X' })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISSING }),
    );
    const { env, audit } = await userActivityEnvironment({ user: alice });
    for (const action of [
      'activity.execute',
      'db.scope',
      'audit.coalesced',
      'Run.Claim',
      'run..claim',
      '',
      'r'.repeat(65),
    ]) {
      await expect(
        env.run(async () => recordDecision({ action, decision: 'allow', reason: 'ok' })),
      ).rejects.toMatchObject({ type: ErrorCodes.MISCONFIGURED });
    }
    expect(audit.events.filter((e) => e.action !== 'activity.execute')).toEqual([]);
  });
});

describe('peekUserContext', () => {
  it('is the verified user inside an activity and undefined elsewhere, without a record either way', async () => {
    const emitted = vi.spyOn(defaultAuditor(), 'emit');
    try {
      expect(peekUserContext()).toBeUndefined();
      expect(emitted).not.toHaveBeenCalled();
      // The control: currentUserContext() outside an activity is a refusal, on record.
      expect(() => currentUserContext()).toThrow(expect.objectContaining({ code: ErrorCodes.MISSING }));
      expect(emitted).toHaveBeenCalledTimes(1);
    } finally {
      emitted.mockRestore();
    }
    const { env, audit } = await userActivityEnvironment({ user: alice });
    expect(await env.run(async () => peekUserContext())).toEqual(alice);
    const system = await userActivityEnvironment({
      system: true,
      info: { activityType: 'cleanup' },
      plugin: { systemActivities: { cleanup: ['janitor'] } },
    });
    expect(await system.env.run(async () => peekUserContext() ?? 'none')).toBe('none');
    expect([...audit.events, ...system.audit.events].filter((e) => e.decision === 'deny')).toEqual([]);
  });
});

describe('a token ahead of the worker clock', () => {
  it('fails the attempt retryable, to be tried again once the clock has caught up (found by review)', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      // The token is issued now; the worker's clock is then a minute behind (30 s of skew tolerated).
      const { env, audit } = await userActivityEnvironment({ user: alice });
      vi.setSystemTime(Date.now() - 60_000);
      const failure = await env.run(async () => currentUserContext()).catch((err: unknown) => err);
      expect(failure).toMatchObject({ type: 'TokenIssuedAheadError', nonRetryable: false });
      // Tried again when the token is no longer ahead: ~30 s on, not at once.
      const delay = (failure as { nextRetryDelay?: unknown }).nextRetryDelay;
      expect(delay).toBe('31s');
      expect(audit.events.map((e) => [e.action, e.decision, e.reason])).toEqual([
        ['activity.execute', 'deny', 'ERROR'],
      ]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('userActivityEnvironment', () => {
  it('runs an activity as the user, verified and audited by the real guard', async () => {
    const { env, audit } = await userActivityEnvironment({
      user: alice,
      info: { workflowExecution: { workflowId: 'order-42', runId: 'r1' }, activityType: 'whoAmI' },
    });
    expect(await env.run(whoAmI, 'hello')).toBe('hello, alice of ws-acme (order-42)');
    expect(audit.events.map((e) => [e.action, e.decision, e.userId, e.workflowId])).toEqual([
      ['activity.execute', 'allow', 'alice', 'order-42'],
    ]);
  });

  it("keeps the plugin's checks: an explicit context that differs is refused", async () => {
    const { env } = await userActivityEnvironment({ user: alice });
    expect(await env.run(withExplicit, alice)).toEqual(alice);
    await expect(env.run(withExplicit, { ...alice, workspaceId: 'ws-globex' })).rejects.toMatchObject({
      type: ErrorCodes.EXPLICIT_MISMATCH,
      nonRetryable: true,
    });
  });

  it('refuses an explicit context that throws when read, or names unknown keys, typed and audited', async () => {
    const { env, audit } = await userActivityEnvironment({ user: alice });
    const throwing = {
      ...alice,
      get roles(): string[] {
        throw new Error('boom');
      },
    };
    const injected = { ...alice, ['x\n2030-01-01 [INFO] forged line']: 1 };
    for (const passed of [throwing, injected]) {
      const failure = await env.run(withExplicit, passed).catch((err: unknown) => err);
      expect(failure).toMatchObject({ type: ErrorCodes.INVALID, nonRetryable: true });
      expect((failure as Error).message).not.toMatch(/[\r\n]|forged/);
    }
    expect(
      audit.events
        .filter((e) => e.action === 'activity.resolve')
        .map((e) => [e.decision, e.reason, e.source]),
    ).toEqual([
      ['deny', ErrorCodes.INVALID, 'explicit'],
      ['deny', ErrorCodes.INVALID, 'explicit'],
    ]);
  });

  it("takes the plugin's worker options, and a given key set must be an edge set", async () => {
    const keys = generateKeySet('unit');
    const { env } = await userActivityEnvironment({
      user: alice,
      keys: keys.edge,
      info: { activityType: 'cleanup' },
      plugin: { systemActivities: { cleanup: ['janitor'] } },
    });
    // A user context is there: the system principal is not used.
    expect(
      await env.run(async () => resolveUserContext({ system: systemPrincipal('janitor', 'tests') })),
    ).toEqual(alice);
    await expect(userActivityEnvironment({ user: alice, keys: keys.worker })).rejects.toMatchObject({
      code: ErrorCodes.MISCONFIGURED,
    });
  });

  it('sends a token bound to its start, which a plugin requiring bound tokens takes', async () => {
    const { env, audit } = await userActivityEnvironment({
      user: alice,
      plugin: { verifier: { requireBoundTokens: true } },
    });
    expect(await env.run(async () => currentUserContext())).toEqual(alice);
    expect(audit.events.map((e) => [e.action, e.decision])).toEqual([['activity.execute', 'allow']]);
  });

  it("without a user, runs a worker's allow-listed system activity as its principal, and refuses others", async () => {
    const janitor = systemPrincipal('janitor', 'nightly cleanup');
    const { env, audit } = await userActivityEnvironment({
      system: true,
      info: { activityType: 'cleanup' },
      plugin: { systemActivities: { cleanup: ['janitor'] } },
    });
    expect(await env.run(async () => resolveUserContext({ system: janitor }))).toEqual(janitor);
    expect(audit.events.map((e) => [e.action, e.decision, e.source])).toEqual([
      ['activity.execute', 'allow', 'system'],
      ['activity.resolve', 'allow', 'system'],
    ]);
    const unlisted = await userActivityEnvironment({ system: true, info: { activityType: 'report' } });
    const err = await unlisted.env.run(async () => 'ran').catch((e: unknown) => e);
    expect(userContextFailureCode(err)).toBe(ErrorCodes.MISSING);
  });

  it('hands its logger to the mock environment, which logs a refused activity there', async () => {
    const logged: string[] = [];
    const logger = {
      log: (level: string, message: string) => void logged.push(`${level} ${message}`),
      trace: () => undefined,
      debug: () => undefined,
      info: () => undefined,
      warn: (message: string) => void logged.push(`WARN ${message}`),
      error: (message: string) => void logged.push(`ERROR ${message}`),
    };
    const { env } = await userActivityEnvironment({ system: true, info: { activityType: 'report' }, logger });
    await expect(env.run(async () => 'ran')).rejects.toThrow(ErrorCodes.MISSING);
    expect(logged.some((line) => /fail/i.test(line))).toBe(true);
  });

  it("gives the activity an actor, verified by the real guard: the sender of the handler's call", async () => {
    const carol = { userId: 'carol', workspaceId: 'ws-acme', roles: ['admin', 'member'] };
    const { env, audit } = await userActivityEnvironment({
      user: alice,
      actor: carol,
      call: 'update:addInstruction',
      plugin: { verifier: { requireBoundTokens: true } },
    });
    expect(await env.run(async () => [currentUserContext().userId, currentActor()?.userId])).toEqual([
      'alice',
      'carol',
    ]);
    expect(audit.events.map((e) => [e.action, e.decision, e.userId])).toEqual([
      ['activity.actor', 'allow', 'carol'],
      ['activity.execute', 'allow', 'alice'],
    ]);
    // One of another workspace is refused by the guard, as on a worker.
    const stranger = await userActivityEnvironment({
      user: alice,
      actor: { userId: 'bob', workspaceId: 'ws-globex', roles: ['member'] },
    });
    const err = await stranger.env.run(async () => currentActor()).catch((e: unknown) => e);
    expect(userContextFailureCode(err)).toBe(ErrorCodes.ACTOR_FORBIDDEN);
    await expect(userActivityEnvironment({ system: true, actor: carol })).rejects.toMatchObject({
      code: ErrorCodes.MISCONFIGURED,
    });
  });

  it('needs a user or system: true, not both, not neither', async () => {
    for (const options of [{}, { user: undefined }, { user: alice, system: true }])
      await expect(userActivityEnvironment(options), JSON.stringify(options)).rejects.toMatchObject({
        code: ErrorCodes.MISCONFIGURED,
      });
  });

  it('refuses an invalid user before running anything', async () => {
    await expect(
      userActivityEnvironment({ user: { userId: 'bad id', workspaceId: 'ws', roles: [] } }),
    ).rejects.toMatchObject({ code: ErrorCodes.INVALID });
  });
});
