// Determinism across versions: histories of AgentExecutionWorkflow recorded on a real server by earlier
// versions of the code (committed under histories/) replay without non-determinism errors under the
// current workflow code, with the plugin installed and after a key rotation. Runs without a server.
//
// Labels: `pre-failure-record` was recorded by the workflow as it was before it recorded failed runs
// (commit 7d1ae87), so its failed runs have no `record-failed-runs` patch marker and must replay down
// the unpatched branch; `pre-run-policy` by the workflow before the run-record claim, the total step cap
// and the other patches of commit "agent platform: run policy" (its failures took `record-failed-runs`);
// `pre-member-instructions` by the workflow before members' instructions became `instruction` messages
// (its instructions went in as system messages, with no `member-instructions` marker);
// `pre-retry-cancel-verification` by the workflow before a cancel whose sender's verification got no
// answer (the database down) was verified again (it was dropped, and the run completed);
// `pre-carry-task-once` by the workflow before continue-as-new carried the task once;
// `pre-step-before-suggested-continue` by the workflow before Temporal's suggestion waited for a model
// step (on a dev server suggesting it after five events: the first two generations of a run that
// continued as new without a step, the lineage then terminated); `pre-settle-handlers-on-failure` is
// the `current` recorded at commit 1efa398, before the patches from `settle-handlers-on-failure` to
// `check-run-input`; `current` by
// the code at the time of its recording (refresh with
// `RECORD_HISTORIES=1 npx vitest run apps/agent-platform/test/e2e/platform.test.ts`; keep the old ones).
import type { History } from '@temporalio/common/lib/proto-utils.js';
import { describe, expect, it } from 'vitest';
import { rotateKeySet, workerKeySet } from 'temporal-user-context';
import { patchIds, readFixtureHistories, readFixtureKeys, replayErrors } from './fixtures.js';

const events = (history: History) => history.events ?? [];
const failed = (h: History) => events(h).some((e) => e.workflowExecutionFailedEventAttributes);
const completed = (h: History) => events(h).some((e) => e.workflowExecutionCompletedEventAttributes);
const continued = (h: History) => events(h).some((e) => e.workflowExecutionContinuedAsNewEventAttributes);
// The app cancels through its `cancel` signal: the run then completes with status `cancelled`.
const cancelled = (h: History) =>
  completed(h) && events(h).some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'cancel');
const updated = (h: History) => events(h).some((e) => e.workflowExecutionUpdateAcceptedEventAttributes);
// By id: since `claim-run-record` every run records a patch marker, failed or not.
const patchedFailure = (h: History) =>
  patchIds(h).some((id) => id === 'record-failed-runs' || id === 'record-every-failure');
const has = (id: string) => (h: History) => patchIds(h).includes(id);

describe('committed AgentExecutionWorkflow histories', () => {
  const fixtures = readFixtureHistories();
  const byLabel = (label: string) => fixtures.filter((f) => f.label === label).map((f) => f.history);

  it('cover every way a run ends, before and after failed runs were recorded', () => {
    const current = byLabel('current');
    expect(current.some(completed)).toBe(true);
    expect(current.some(continued)).toBe(true);
    expect(current.some(cancelled)).toBe(true);
    expect(current.some(updated)).toBe(true);
    expect(current.some((h) => failed(h) && has('record-every-failure')(h))).toBe(true);
    // The first generation of every run claims its record (later generations continue it).
    const firstGeneration = (h: History) =>
      !events(h)[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId;
    expect(current.filter(firstGeneration).every(has('claim-run-record'))).toBe(true);
    // Since the twenty-seventh round every model step may be stopped by a cancel, and records so.
    const stepped = (h: History) =>
      events(h).some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'modelStep');
    expect(current.filter(stepped).length).toBeGreaterThan(0);
    expect(current.filter(stepped).every(has('cancel-stops-model-step'))).toBe(true);
    // Since then every run checks its input first, and records so; no older label does.
    expect(current.every(has('check-run-input'))).toBe(true);
    expect(fixtures.filter((f) => f.label !== 'current').some((f) => has('check-run-input')(f.history))).toBe(
      false,
    );
    const before = byLabel('pre-settle-handlers-on-failure');
    expect(before.length).toBeGreaterThan(0);
    for (const id of ['settle-handlers-on-failure', 'write-ending-whole', 'cancel-stops-model-step'])
      expect(before.some(has(id)), id).toBe(false);
    // A run that took an instruction records that it passes it as a member's message; the older ones
    // took theirs without the marker, and must replay down the system-message branch.
    expect(current.filter(updated).length).toBeGreaterThan(0);
    expect(current.filter(updated).every(has('member-instructions'))).toBe(true);
    const systemInstructions = byLabel('pre-member-instructions');
    expect(systemInstructions.some(updated)).toBe(true);
    expect(systemInstructions.some(has('member-instructions'))).toBe(false);
    expect(systemInstructions.some((h) => failed(h) && has('record-every-failure')(h))).toBe(true);
    // Before the run policy: no claim, failures recorded by the first failure branch, which replay must
    // keep taking.
    const policyless = byLabel('pre-run-policy');
    expect(policyless.some((h) => failed(h) && has('record-failed-runs')(h))).toBe(true);
    expect(policyless.some(has('claim-run-record'))).toBe(false);
    expect(policyless.some(continued)).toBe(true);
    // The older code failed runs without the marker: replay must take the unpatched branch there.
    const older = byLabel('pre-failure-record');
    expect(older.some((h) => failed(h) && !patchedFailure(h))).toBe(true);
    expect(older.some(completed)).toBe(true);
    // Before `retry-cancel-verification`, a cancel whose sender's verification failed without a refusal
    // (its local activity's marker records the failure) was dropped, and the run completed: replay must
    // take that branch again, without the patch marker and without a timer.
    const dropped = byLabel('pre-retry-cancel-verification');
    const failedVerification = (h: History) =>
      events(h).some(
        (e) =>
          e.markerRecordedEventAttributes?.markerName === 'core_local_activity' &&
          e.markerRecordedEventAttributes.failure,
      );
    expect(dropped.length).toBeGreaterThan(0);
    for (const h of dropped) {
      expect([cancelled(h), failedVerification(h), has('retry-cancel-verification')(h)]).toEqual([
        true,
        true,
        false,
      ]);
      expect(events(h).some((e) => e.timerStartedEventAttributes)).toBe(false);
    }
    // Before `carry-task-once`, continue-as-new carried the task twice (input and first message), with
    // no marker: replay takes the unpatched branch there; runs since carry it once, and say so.
    const twice = byLabel('pre-carry-task-once').filter(continued);
    expect(twice.length).toBeGreaterThan(0);
    expect(twice.some(has('carry-task-once'))).toBe(false);
    expect(current.filter(continued).length).toBeGreaterThan(0);
    expect(current.filter(continued).every(has('carry-task-once'))).toBe(true);
    // Before `step-before-suggested-continue`, a generation that Temporal suggested to continue as new
    // before its first model step did so at once (here, a namespace suggesting it after five events):
    // replay continues as new there again, without a step and without the marker.
    const early = byLabel('pre-step-before-suggested-continue');
    expect(early.length).toBeGreaterThan(0);
    const modelSteps = (h: History) =>
      events(h).filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'modelStep');
    for (const h of early)
      expect([continued(h), modelSteps(h).length, has('step-before-suggested-continue')(h)]).toEqual([
        true,
        0,
        false,
      ]);
  });

  it('replay deterministically under the current code, after a key rotation', async () => {
    // Replay needs the recording's codec key (kept decrypt-only by the rotation) and no token key:
    // workflow code never verifies.
    const rotated = workerKeySet(rotateKeySet(readFixtureKeys().edge));
    expect(await replayErrors(fixtures, rotated)).toEqual([]);
  });
});
