// Runs that start after their token's start window for a reason of the server's own: a workflow retry
// after a first attempt that ran longer than the window, a cron run after the previous one ended. They
// run as the user who started the chain; a copy of the start header that starts a new chain does not.
import { randomUUID } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { runAsUser, type UserContext } from 'temporal-user-context';
import { alice } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

// A window of 1 s and no skew: a first attempt that runs 3 s ends past it.
const windowed = { startWindowSeconds: 1, verifier: { clockSkewSeconds: 0 } } as const;
const header = useFixtureHarness({ plugin: { ...windowed, activityLineage: 'header' } });
const server = useFixtureHarness({ plugin: { ...windowed, activityLineage: 'server' } });

describe.each([
  ['header', header],
  ['server', server],
])('with lineage from the %s', (_, h) => {
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
