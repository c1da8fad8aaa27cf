// Two senders' updates verified at once, their verifications ending apart while the run acts between
// them: the history replays. Found by review (the agent platform's instructions from two members): on
// replay the SDK resolves local activities that were in flight together in one activation, although
// they ended in two when the run was live, and the run's commands came out in another order (a
// nondeterminism error, the run stuck at its next replay).
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowUpdateStage } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { UserContextPlugin, memoryAuditSink, runAsUser, type Verified } from 'temporal-user-context';
import { alice, carol } from '../../../../test-support/harness.js';
import { fixtureWorker, fixtureWorkflowsPath, useFixtureHarness } from '../fixtures/harness.js';

const h = useFixtureHarness();

describe('verifications in flight together', () => {
  it("two senders' updates, verified apart, leave a history that replays", async () => {
    // carol's verification ends well after alice's: live, alice's handler and the run's reaction to it
    // (a timer cancelled, another started) come before carol's handler ends.
    const slowFor = async ({ context }: Verified) => {
      await sleep(context.userId === 'carol' ? 1500 : 100);
      return false;
    };
    const plugin = () =>
      new UserContextPlugin({ keys: h.workerRing, audit: memoryAuditSink(), isRevoked: slowFor });
    const taskQueue = `concurrent-${randomUUID()}`;
    const workflowId = `concurrent-notes-${randomUUID()}`;
    // Started with no worker polling: both updates reach its first workflow task together, so that
    // both verifications are in flight at once.
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('concurrentNotes', { taskQueue, workflowId }),
    );
    const accepted = Promise.all([
      runAsUser(alice, () =>
        handle.startUpdate('concurrentNote', { args: ['a'], waitForStage: WorkflowUpdateStage.ACCEPTED }),
      ),
      runAsUser(carol, () =>
        handle.startUpdate('concurrentNote', { args: ['c'], waitForStage: WorkflowUpdateStage.ACCEPTED }),
      ),
    ]);
    await sleep(1000);
    const worker = await fixtureWorker(h, taskQueue, plugin());
    const notes = await worker.runUntil(async () => {
      const updates = await accepted;
      await Promise.all(updates.map((update) => update.result()));
      await runAsUser(alice, () => handle.signal('finish'));
      return handle.result();
    });
    expect([...notes].sort()).toEqual(['alice:a', 'carol:c']);
    const history = await handle.fetchHistory();
    // The case itself: both updates were in flight at once (accepted before either completed: with the
    // second arriving late, the sequence would not be this and the test would prove nothing; found by
    // a flakiness review), and the run acted (its memo) between the two updates' completions.
    const kinds = (history.events ?? []).map((e) =>
      e.workflowExecutionUpdateAcceptedEventAttributes
        ? 'accepted'
        : e.workflowExecutionUpdateCompletedEventAttributes
          ? 'completed'
          : e.workflowPropertiesModifiedEventAttributes
            ? 'acted'
            : '',
    );
    expect(kinds.filter(Boolean).join(' ')).toMatch(/^accepted accepted completed acted completed/);
    await expect(
      Worker.runReplayHistory(
        { workflowsPath: fixtureWorkflowsPath, plugins: [plugin()] },
        history,
        workflowId,
      ),
    ).resolves.toBeUndefined();
  });

  it('a verification queued behind another keeps the actor of the call, once its handler has returned', async () => {
    // Found by review: the queued local activity was scheduled after the handler's actor ended, without
    // an actor header, and refused USER_CONTEXT_MISSING.
    const taskQueue = `queued-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('actorVerifiedAfterHandler', {
        taskQueue,
        workflowId: `queued-${randomUUID()}`,
      }),
    );
    // Sent before any worker polls: the signal and the start reach the first workflow task together.
    await runAsUser(carol, () => handle.signal('ping'));
    const worker = await fixtureWorker(
      h,
      taskQueue,
      new UserContextPlugin({ keys: h.workerRing, audit: memoryAuditSink() }),
    );
    expect(await worker.runUntil(handle.result())).toEqual(['originator:alice', 'actor:carol']);
  });
});
