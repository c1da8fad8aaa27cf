// Runs that start after their token's start window for a reason of the server's own: a workflow retry
// after a first attempt that ran longer than the window, a cron run after the previous one ended. They
// run as the user who started the chain; a copy of the start header that starts a new chain does not.
import { randomUUID } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { ErrorCodes, runAsUser, type UserContext } from 'temporal-user-context';
import { alice, copiedStartHeaderClient, failureTypeOf } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

// A window of 1 s and no skew: a first attempt that runs 3 s ends past it.
const windowed = { startWindowSeconds: 1, verifier: { clockSkewSeconds: 0 } } as const;
const header = useFixtureHarness({ plugin: { ...windowed, activityLineage: 'header' } });
const server = useFixtureHarness({ plugin: { ...windowed, activityLineage: 'server' } });
// A 4 s window, for a test whose copy must start inside it even on a slow machine.
const wide = { startWindowSeconds: 4, verifier: { clockSkewSeconds: 0 } } as const;
const headerWide = useFixtureHarness({ plugin: { ...wide, activityLineage: 'header' } });
const serverWide = useFixtureHarness({ plugin: { ...wide, activityLineage: 'server' } });

// A 3 s actor window and no skew: an activity's retry 6 s on is past it. Not 1 s: a token's `iat` is
// in whole seconds, so the window is 1-2 s, and an update reached its activity's first scheduling up to
// 1.1 s after its issue on a loaded machine (found by a flakiness review: refused, 1 run in 6).
const actorWindowed = useFixtureHarness({
  plugin: { actorWindowSeconds: 3, verifier: { clockSkewSeconds: 0 } },
});

describe("an actor's activities", () => {
  it('act for the actor on a retry past the window, as on their first attempt (found by review)', async () => {
    const h = actorWindowed;
    const workflowId = `late-actor-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('actorInRetriedActivity', { taskQueue: h.taskQueue, workflowId }),
    );
    try {
      const actor = await runAsUser(alice, () => handle.executeUpdate<UserContext | null, []>('whoActs'));
      expect(actor).toEqual<UserContext>(alice);
      // The window is measured at the activity's first scheduling (the server's time): the retry, some
      // 6 s on, acted as the first attempt would have.
      expect(
        h.audit.events
          .filter((e) => e.workflowId === workflowId && e.action === 'activity.actor')
          .map((e) => [e.attempt, e.decision]),
      ).toEqual([
        [1, 'allow'],
        [2, 'allow'],
      ]);
    } finally {
      await runAsUser(alice, () => handle.signal('finish'));
    }
  });
});

describe('a delayed start', () => {
  it("lengthens its signal's actor token by the delay: the signal acts once the run starts (found by review)", async () => {
    const h = actorWindowed;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.signalWithStart('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `late-signal-${randomUUID()}`,
        signal: 'go',
        signalArgs: ['x'],
        // Twice the 3 s window.
        startDelay: '6 seconds',
      }),
    );
    const result = (await handle.result()) as { notes: string[]; actorVerified?: UserContext };
    expect(result.notes).toEqual(['signal:x']);
    expect(result.actorVerified).toEqual(alice);
  });
});

describe.each([
  ['header', header, headerWide],
  ['server', server, serverWide],
])('with lineage from the %s', (_, h, hWide) => {
  it("a workflow retry after the window still runs as the chain's user", async () => {
    const answer = await runAsUser(alice, () =>
      h.client.workflow.execute('failsFirstAttemptAfter', {
        taskQueue: h.taskQueue,
        workflowId: `late-retry-${randomUUID()}`,
        args: [3],
        retry: { initialInterval: '100ms', maximumAttempts: 2 },
      }),
    );
    expect(answer).toEqual<UserContext>(alice);
  });

  it('a copy of the start header that starts the id again after the window is refused at every attempt', async () => {
    const workflowId = `late-copy-${randomUUID()}`;
    const retry = { initialInterval: '100ms', maximumAttempts: 2 };
    await runAsUser(alice, () =>
      h.client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId, retry }),
    );
    // Past the 1 s window, whose bounds are whole seconds (`exp` is up to 1 s later than issue + 1 s).
    await new Promise((r) => setTimeout(r, 2500));
    const attacker = await copiedStartHeaderClient(h, workflowId);
    const copy = await attacker.workflow.start('viaActivity', { taskQueue: h.taskQueue, workflowId, retry });
    expect(await failureTypeOf(copy.result())).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // Both attempts of the new chain reached an activity; the server dated that chain late for each.
    const decisions = h.audit.events.filter(
      (e) => e.workflowId === workflowId && e.action === 'activity.execute' && e.runId !== undefined,
    );
    const refused = decisions.filter((e) => e.decision === 'deny');
    expect(new Set(refused.map((e) => e.runId)).size).toBe(2);
    expect(refused.every((e) => e.detail === 'lineage started after the token start window')).toBe(true);
    expect(decisions.filter((e) => e.decision === 'allow').map((e) => e.runId)).not.toContain(
      copy.firstExecutionRunId,
    );
  });

  it("a late retry is held to how its chain's first run started, not to its own type", async () => {
    // Within the window, a copy of alice's start header starts her workflow id again as another type,
    // which continues as new into the type her token binds, fails after the window, and is retried:
    // the retry states her type, the server the first run's.
    const h = hWide;
    const workflowId = `late-type-${randomUUID()}`;
    const retry = { initialInterval: '100ms', maximumAttempts: 2 };
    await runAsUser(alice, () =>
      h.client.workflow.start('failsFirstAttemptAfter', {
        taskQueue: h.taskQueue,
        workflowId,
        args: [10],
        retry,
      }),
    );
    const attacker = await copiedStartHeaderClient(h, workflowId);
    await attacker.workflow.start('continuesAsNewInto', {
      taskQueue: h.taskQueue,
      workflowId,
      args: ['failsFirstAttemptAfter', 6],
      retry,
      workflowIdConflictPolicy: 'TERMINATE_EXISTING',
    });
    expect(await failureTypeOf(h.rawClient.workflow.getHandle(workflowId).result())).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    const refused = h.audit.events.filter(
      (e) => e.workflowId === workflowId && e.action === 'activity.execute' && e.decision === 'deny',
    );
    expect(refused.map((e) => e.detail)).toContain(
      'the lineage root was started as another workflow type or on another task queue than its token binds',
    );
  });

  it("every run of a cron workflow runs as the chain's user, each started after the window", async () => {
    const workflowId = `late-cron-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('viaActivity', {
        taskQueue: h.taskQueue,
        workflowId,
        cronSchedule: '@every 2s',
      }),
    );
    try {
      const decisions = () =>
        h.audit.events.filter((e) => e.workflowId === workflowId && e.action === 'activity.execute');
      // Three runs: the first, then two whose start events the server wrote as the previous ended.
      await vi.waitFor(
        () => expect(new Set(decisions().map((e) => e.runId)).size).toBeGreaterThanOrEqual(3),
        { timeout: 20_000, interval: 200 },
      );
      expect(decisions().map((e) => [e.decision, e.userId])).toEqual(
        decisions().map(() => ['allow', alice.userId]),
      );
    } finally {
      await handle.terminate();
    }
  });
});
