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

function guarded(info: ConstructorParameters<typeof MockActivityEnvironment>[0], declared = cleanup) {
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
      guard.execute!({ args: [], headers: {} }, async () => resolveUserContext({ system: declared })),
    );
  return { run, audit };
}

describe('system activities', () => {
  it('run as the allow-listed principal when a workflow scheduled them without a user', async () => {
    const { run } = guarded({ workflowExecution: { workflowId: 'wf', runId: 'r' }, inWorkflow: true });
    expect(await run()).toMatchObject({ kind: 'system', name: 'nightly-cleanup' });
  });

  it('a principal the worker does not allow-list is refused, and the record names it', async () => {
    const other = systemPrincipal('reindexer', 'rebuilds the search index');
    const { run, audit } = guarded(
      { workflowExecution: { workflowId: 'wf', runId: 'r' }, inWorkflow: true },
      other,
    );
    await expect(run()).rejects.toMatchObject({
      type: ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
      nonRetryable: true,
    });
    expect(audit.events.at(-1)).toMatchObject({
      action: 'activity.resolve',
      decision: 'deny',
      source: 'system',
      reason: ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN,
      principal: 'reindexer',
    });
  });

  it('a look-alike principal that throws when read is refused as INVALID, audited, not thrown through', async () => {
    const hostile = {
      kind: 'system',
      get name(): string {
        throw new Error('boom');
      },
      reason: 'looks like one',
    } as unknown as typeof cleanup;
    const { run, audit } = guarded(
      { workflowExecution: { workflowId: 'wf', runId: 'r' }, inWorkflow: true },
      hostile,
    );
    await expect(run()).rejects.toMatchObject({ type: ErrorCodes.INVALID, nonRetryable: true });
    expect(audit.events.at(-1)).toMatchObject({
      action: 'activity.resolve',
      decision: 'deny',
      reason: ErrorCodes.INVALID,
      detail: 'system principal: unreadable value',
    });
  });

  it('are refused as standalone activities (no workflow), and the refusal is audited', async () => {
    const { run, audit } = guarded({ workflowExecution: undefined, inWorkflow: false });
    await expect(run()).rejects.toMatchObject({ type: ErrorCodes.MISSING, nonRetryable: true });
    expect(audit.events.map((e) => [e.action, e.decision, e.reason])).toEqual([
      ['activity.execute', 'deny', ErrorCodes.MISSING],
    ]);
  });
});
