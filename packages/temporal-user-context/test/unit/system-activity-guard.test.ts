// The activity guard's system path, outside Temporal: an allow-listed activity type runs without a user
// only when a workflow scheduled it (SDK 1.24 also runs standalone activities, which any client starts).
import { asyncLocalStorage } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { ActivityInboundCallsInterceptor, WorkerOptions } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
  resolveUserContext,
  systemPrincipal,
} from 'temporal-user-context';

const cleanup = systemPrincipal('nightly-cleanup', 'deletes expired drafts');

function guarded(info: ConstructorParameters<typeof MockActivityEnvironment>[0]) {
  const audit = memoryAuditSink();
  const plugin = new UserContextPlugin({
    keys: KeyRing.fromJSON(generateKeySet('guard').worker),
    audit,
    codec: false,
    systemActivities: { nightlyCleanup: ['nightly-cleanup'] },
  });
  const factory = plugin.configureWorker({ namespace: 'default', taskQueue: 'guard' } as WorkerOptions)
    .interceptors!.activity![0]!;
  const { context } = new MockActivityEnvironment({ activityType: 'nightlyCleanup', ...info });
  const guard = factory(context).inbound as ActivityInboundCallsInterceptor;
  const run = () =>
    asyncLocalStorage.run(context, () =>
      guard.execute!({ args: [], headers: {} }, async () => resolveUserContext({ system: cleanup })),
    );
  return { run, audit };
}

describe('system activities', () => {
  it('run as the allow-listed principal when a workflow scheduled them without a user', async () => {
    const { run } = guarded({ workflowExecution: { workflowId: 'wf', runId: 'r' }, inWorkflow: true });
    expect(await run()).toMatchObject({ kind: 'system', name: 'nightly-cleanup' });
  });

  it('are refused as standalone activities (no workflow), and the refusal is audited', async () => {
    const { run, audit } = guarded({ workflowExecution: undefined, inWorkflow: false });
    await expect(run()).rejects.toMatchObject({ type: ErrorCodes.MISSING, nonRetryable: true });
    expect(audit.events.map((e) => [e.action, e.decision, e.reason])).toEqual([
      ['activity.execute', 'deny', ErrorCodes.MISSING],
    ]);
  });
});
