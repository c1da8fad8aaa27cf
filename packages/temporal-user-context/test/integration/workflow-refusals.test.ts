// Refusals raised in workflow code (getUserContext, verifyActor) must reach it as Temporal failures
// with the code as `type`: anything else fails the workflow task, which the SDK retries forever. And a
// failed verification must not stick to the run.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser, type UserContext, type Verified } from 'temporal-user-context';
import { alice, failureTypeOf } from '../../../../test-support/harness.js';
import { fixtureWorkflowsPath, useFixtureHarness } from '../fixtures/harness.js';
import type { Outcome } from '../fixtures/workflows.js';

/** Verification of dave's context hits a revocation store that is down for its first three calls. */
const dave = { userId: 'dave', workspaceId: 'ws-acme', roles: ['member'] };
/** erin's context is revoked. */
const erin = { userId: 'erin', workspaceId: 'ws-acme', roles: ['member'] };
/** frank's context is revoked at its first check only (revoked, then reinstated). */
const frank = { userId: 'frank', workspaceId: 'ws-acme', roles: ['member'] };

const revocationChecks = new Map<string, number>();
function isRevoked({ context }: Verified): boolean {
  const n = (revocationChecks.get(context.userId) ?? 0) + 1;
  revocationChecks.set(context.userId, n);
  if (context.userId === dave.userId && n <= 3) throw new Error('revocation store unavailable');
  if (context.userId === frank.userId) return n === 1;
  return context.userId === erin.userId;
}

const h = useFixtureHarness({ plugin: { isRevoked } });

function id(name: string): string {
  return `${name}-${Math.random().toString(36).slice(2)}`;
}

// Long enough for a run that completes; short enough that a run whose task fails in a loop (the bug)
// ends the test with a timeout instead of hanging it.
const executionTimeout = '15s';

async function runAs<T>(user: UserContext, type: string, workflowId = id(type)): Promise<T> {
  return runAsUser(user, () =>
    h.client.workflow.execute(type, {
      taskQueue: h.taskQueue,
      workflowId,
      workflowExecutionTimeout: executionTimeout,
    }),
  );
}

const refusal = (code: string): Outcome => ({
  error: 'ApplicationFailure',
  type: code,
  nonRetryable: true,
  code,
});

describe('refusals in workflow code fail the run, not its task', () => {
  it('verifyActor() outside a handler, uncaught: the run fails non-retryably with USER_CONTEXT_MISSING', async () => {
    const workflowId = id('verifyActorOutsideHandler');
    const err = await runAs(alice, 'verifyActorOutsideHandler', workflowId).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failure = (err as WorkflowFailedError).cause;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: ErrorCodes.MISSING, nonRetryable: true });
    expect(
      h.audit.events.some(
        (e) =>
          e.workflowId === workflowId &&
          e.action === 'workflow.verifyActor' &&
          e.decision === 'deny' &&
          e.reason === ErrorCodes.MISSING,
      ),
    ).toBe(true);
  });

  it('verifyActor() outside a handler, caught: an ApplicationFailure whose type is the code', async () => {
    expect(await runAs<Outcome>(alice, 'verifyActorOutsideHandlerCaught')).toEqual(
      refusal(ErrorCodes.MISSING),
    );
  });

  it('getUserContext() with no originator in the workflow (no plugin on the worker) fails the run', async () => {
    // The only way workflow code runs without an originator: the interceptors that refuse such runs
    // before the workflow function are missing.
    const taskQueue = `${h.taskQueue}-bare`;
    const worker = await Worker.create({
      connection: h.nativeConnection,
      namespace: h.namespace,
      taskQueue,
      workflowsPath: fixtureWorkflowsPath,
      activities: {},
      dataConverter: { payloadCodecs: h.rawClient.options.dataConverter.payloadCodecs },
    });
    const failure = await worker.runUntil(
      failureTypeOf(
        runAsUser(alice, () =>
          h.client.workflow.execute('viaGetUserContext', {
            taskQueue,
            workflowId: id('bare'),
            workflowExecutionTimeout: executionTimeout,
          }),
        ),
      ),
    );
    expect(failure).toBe(ErrorCodes.MISSING);
  });

  it('a refusal by the verifying local activity arrives with the code as its own type', async () => {
    // SDK 1.24 hands a local activity's failure to workflow code unwrapped (no ActivityFailure).
    const [first] = await runAs<Outcome[]>(erin, 'getUserContextTwice');
    expect(first).toEqual(refusal(ErrorCodes.REVOKED));
  });

  it("a refusal of the workflow's own activity is recognised through its cause chain", async () => {
    expect(await runAs<Outcome>(erin, 'activityRefusalCaught')).toEqual({
      error: 'ActivityFailure',
      code: ErrorCodes.REVOKED,
    });
  });
});

describe('getUserContext() memoises successes only', () => {
  it('a brief outage is outlasted within the call (retried for a time, not three attempts); the success sticks', async () => {
    const [first, second] = await runAs<Outcome[]>(dave, 'getUserContextTwice');
    // Four attempts of the local activity (1 + 2 + 4 s apart): three failed by the hook's outage.
    expect(first).toEqual({ user: dave });
    expect(second).toEqual({ user: dave });
    expect(revocationChecks.get(dave.userId)).toBe(4);
  }, 30_000);

  it('a refusal does not stick: the next call verifies again, and succeeds once it passes', async () => {
    const [first, second] = await runAs<Outcome[]>(frank, 'getUserContextTwice');
    expect(first).toEqual(refusal(ErrorCodes.REVOKED));
    expect(second).toEqual({ user: frank });
    expect(revocationChecks.get(frank.userId)).toBe(2);
  });

  it('a cancellation does not stick', async () => {
    const [first, second] = await runAs<Outcome[]>(alice, 'getUserContextAfterCancel');
    expect(first).toMatchObject({ error: 'CancelledFailure' });
    expect(first?.code).toBeUndefined();
    expect(second).toEqual({ user: alice });
  });

  it("one caller's cancellation fails that caller only, not the others awaiting the same verification", async () => {
    const [cancelled, other] = await runAs<Outcome[]>(alice, 'getUserContextSharedWithCancelled');
    expect(cancelled).toMatchObject({ error: 'CancelledFailure' });
    expect(other).toEqual({ user: alice });
  });

  it('a refusal is verified again on the next call, and refused again', async () => {
    const before = revocationChecks.get(erin.userId) ?? 0;
    const outcomes = await runAs<Outcome[]>(erin, 'getUserContextTwice');
    expect(outcomes).toEqual([refusal(ErrorCodes.REVOKED), refusal(ErrorCodes.REVOKED)]);
    expect(revocationChecks.get(erin.userId)).toBe(before + 2);
  });
});
