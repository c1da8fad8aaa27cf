// Property 2, no permissive default: an activity with no user context runs only when the worker
// allow-lists its type, only as a principal allow-listed for it (resolveUserContext({ system })), and
// every one of these decisions is audited. The header-less activities are scheduled by a workflow on a
// second worker without the plugin: what a worker sees from any client that writes no header.
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import { alice, failureTypeOf, startHarness, type Harness } from '../../../../test-support/harness.js';
import * as fixtureActivities from '../fixtures/activities.js';
import * as systemActivities from '../fixtures/system-activities.js';

const workflowsPath = fileURLToPath(new URL('../fixtures/system-workflows.ts', import.meta.url));

const h = {} as Harness;
const plainTaskQueue = `tq-plain-${randomUUID()}`;
let plain: Worker;
let plainRunning: Promise<void>;

beforeAll(async () => {
  Object.assign(
    h,
    await startHarness({
      workflowsPath,
      // `constructor` as an activity type: a name an Object.prototype lookup would find.
      activities: { ...fixtureActivities, ...systemActivities, constructor: systemActivities.unguarded },
      plugin: {
        systemActivities: {
          nightlyCleanup: ['retention'],
          lookalikeCleanup: ['retention'],
          signalThroughWorkerClientAs: ['notifier'],
        },
      },
    }),
  );
  plain = await Worker.create({
    connection: h.nativeConnection,
    namespace: h.namespace,
    taskQueue: plainTaskQueue,
    workflowsPath,
    // The payload codec only: arguments stay readable to the plugin worker, headers stay absent.
    dataConverter: h.rawClient.options.dataConverter,
  });
  plainRunning = plain.run();
});

afterAll(async () => {
  plain?.shutdown();
  await plainRunning;
  await h.stop?.();
});

/** Runs `activityType(...args)` on the plugin worker with no context header. */
function headerless(workflowId: string, activityType: string, args: unknown[] = []): Promise<unknown> {
  return h.rawClient.workflow.execute('headerless', {
    taskQueue: plainTaskQueue,
    workflowId,
    args: [h.taskQueue, activityType, args],
  });
}

const eventsOf = (workflowId: string) => h.audit.events.filter((e) => e.workflowId === workflowId);

describe('system principals (property 2)', () => {
  it('an allow-listed activity runs as the allow-listed principal it declares; both decisions are audited', async () => {
    const workflowId = `sys-${randomUUID()}`;
    expect(await headerless(workflowId, 'nightlyCleanup', ['retention'])).toEqual({
      kind: 'system',
      name: 'retention',
    });
    expect(eventsOf(workflowId)).toEqual([
      expect.objectContaining({
        action: 'activity.execute',
        decision: 'allow',
        source: 'system',
        reason: 'ok',
        activityType: 'nightlyCleanup',
        attempt: 1,
        detail: 'no user context; allow-listed principals: retention',
      }),
      expect.objectContaining({
        action: 'activity.resolve',
        decision: 'allow',
        source: 'system',
        reason: 'ok',
        principal: 'retention',
        detail: 'nightly retention job',
      }),
    ]);
    for (const e of eventsOf(workflowId)) expect(e.userId).toBeUndefined();
  });

  it('a system activity cannot act for a user through an edge scope around its client calls', async () => {
    // It acts for nobody: a runAsUser scope around its call must not make its worker's client send (or,
    // where the worker holds the issuing key, mint) a context for that user. Refused before the server.
    const workflowId = `sys-${randomUUID()}`;
    const target = `nowhere-${randomUUID()}`;
    expect(await headerless(workflowId, 'signalThroughWorkerClientAs', [target, alice])).toBe(
      ErrorCodes.EXPLICIT_MISMATCH,
    );
    expect(
      h.audit.events
        .filter((e) => e.action === 'client.signal' && e.workflowId === target)
        .map((e) => [e.decision, e.reason, e.userId]),
    ).toEqual([['deny', ErrorCodes.EXPLICIT_MISMATCH, alice.userId]]);
  });

  it('a principal not allow-listed for the activity is refused: USER_CONTEXT_SYSTEM_PRINCIPAL_FORBIDDEN, once, audited', async () => {
    const workflowId = `sys-${randomUUID()}`;
    expect(await failureTypeOf(headerless(workflowId, 'nightlyCleanup', ['exporter']))).toBe(
      ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
    );
    const denials = eventsOf(workflowId).filter((e) => e.decision === 'deny');
    expect(denials).toEqual([
      expect.objectContaining({
        action: 'activity.resolve',
        source: 'system',
        reason: ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
        attempt: 1, // not retried
      }),
    ]);
  });

  it.each([true, false])(
    'a look-alike of an allow-listed principal (kind given: %s), without the mandatory reason, is refused: USER_CONTEXT_INVALID, audited',
    async (withKind) => {
      const workflowId = `sys-${randomUUID()}`;
      expect(await failureTypeOf(headerless(workflowId, 'lookalikeCleanup', ['retention', withKind]))).toBe(
        ErrorCodes.INVALID,
      );
      expect(eventsOf(workflowId).filter((e) => e.action === 'activity.resolve')).toEqual([
        expect.objectContaining({
          decision: 'deny',
          source: 'system',
          reason: ErrorCodes.INVALID,
          attempt: 1,
        }),
      ]);
    },
  );

  it.each(['whoami', 'unguarded', 'constructor'])(
    'an activity type the worker does not allow-list (%s) is refused before it runs: USER_CONTEXT_MISSING',
    async (activityType) => {
      const workflowId = `sys-${randomUUID()}`;
      expect(await failureTypeOf(headerless(workflowId, activityType))).toBe(ErrorCodes.MISSING);
      expect(eventsOf(workflowId)).toEqual([
        expect.objectContaining({
          action: 'activity.execute',
          decision: 'deny',
          reason: ErrorCodes.MISSING,
          activityType,
          attempt: 1,
        }),
      ]);
    },
  );

  it('with a user context, resolveUserContext({ system }) resolves the user: the principal is no fallback around it', async () => {
    const workflowId = `sys-${randomUUID()}`;
    const resolved = await runAsUser(alice, () =>
      h.client.workflow.execute('cleanupAsUser', { taskQueue: h.taskQueue, workflowId, args: ['retention'] }),
    );
    expect(resolved).toEqual({ kind: 'user', name: alice.userId });
    expect(eventsOf(workflowId).filter((e) => e.action === 'activity.resolve')).toEqual([
      expect.objectContaining({ decision: 'allow', source: 'header', userId: alice.userId }),
    ]);
    expect(eventsOf(workflowId).some((e) => e.source === 'system')).toBe(false);
  });
});
