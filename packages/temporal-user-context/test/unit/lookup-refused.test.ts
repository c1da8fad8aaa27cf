// A worker whose own lookups the server refuses (no permission to describe workflows or read history,
// credentials expired) is misconfigured, not facing a forged context: the activity fails its attempt
// retryable with a named error (no code of this library, which a `nonRetryableErrorTypes` list would make
// final) and an audit record, so that an operator can grant the permission while the run waits.
// Outside Temporal: a dev server authorises every call, so the refusal comes from a stand-in client.
import { asyncLocalStorage } from '@temporalio/activity';
import { ServiceError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { ActivityInboundCallsInterceptor, WorkerOptions } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  LookupRefusedError,
  UserContextPlugin,
  currentUserContext,
  generateKeySet,
  issueContextToken,
  memoryAuditSink,
} from 'temporal-user-context';
import { ORIGINATOR_HEADER, encodeHeader } from '../../src/header/wire.js';
import { lookupDeadlines } from './lookup-deadline.js';

const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const keys = generateKeySet('lookups');
const grpcError = (code: number) =>
  Object.assign(new Error(`grpc ${code}`), { code, details: `grpc ${code}`, metadata: {} });

/** A worker with the server's lineage whose client's describe fails with `error`. */
async function activityRefusedLookup(error: Error) {
  const audit = memoryAuditSink();
  const plugin = new UserContextPlugin({
    keys: KeyRing.fromJSON(keys.worker),
    audit,
    codec: false,
    activityLineage: 'server',
  });
  const factory = plugin.configureWorker({ namespace: 'default', taskQueue: 'lookups' } as WorkerOptions)
    .interceptors!.activity![0]!;
  const client = {
    options: { namespace: 'default' },
    withDeadline: lookupDeadlines().withDeadline,
    workflowService: {
      describeWorkflowExecution: async () => {
        throw error;
      },
    },
  } as unknown as Client;
  const { context } = new MockActivityEnvironment(
    { activityType: 'report', workflowExecution: { workflowId: 'wf-1', runId: 'run-1' }, inWorkflow: true },
    { client },
  );
  const { header } = await issueContextToken(KeyRing.fromJSON(keys.edge), alice, {
    namespace: 'default',
    use: 'start',
    workflowId: 'wf-1',
  });
  const lin = { root: 'wf-1', start: Date.now(), wf: 'wf-1' };
  const headers = { [ORIGINATOR_HEADER]: encodeHeader({ ...header, lin }) };
  const guard = factory(context).inbound as ActivityInboundCallsInterceptor;
  let ran = false;
  const outcome = await asyncLocalStorage
    .run(context, () =>
      guard.execute!({ args: [], headers }, async () => {
        ran = currentUserContext().userId === 'alice';
        return 'done';
      }),
    )
    .catch((err: unknown) => err);
  return { outcome, ran, audit };
}

describe("a lookup the server refuses the worker (activityLineage: 'server')", () => {
  for (const [status, name] of [
    [7, 'PERMISSION_DENIED'],
    [16, 'UNAUTHENTICATED'],
  ] as const) {
    it(`${name}: a retryable LookupRefusedError, audited, and the activity does not run`, async () => {
      // As the worker's native client throws it, and wrapped as the SDK's higher-level clients do.
      for (const error of [
        grpcError(status),
        new ServiceError('describe failed', { cause: grpcError(status) }),
      ]) {
        const { outcome, ran, audit } = await activityRefusedLookup(error);
        expect(ran).toBe(false);
        expect(outcome).toBeInstanceOf(LookupRefusedError);
        expect(outcome).toMatchObject({ name: 'LookupRefusedError', status: name });
        expect((outcome as Error).cause).toBe(error);
        expect(audit.events.map((e) => [e.action, e.decision, e.reason, e.userId])).toEqual([
          ['activity.execute', 'deny', 'ERROR', 'alice'],
        ]);
        // Its kind and status: the message stays in the worker's log.
        expect(audit.events[0]?.detail).toBe(`error: LookupRefusedError code=${status}`);
      }
    });
  }

  it('NOT_FOUND stays a non-retryable refusal, and an outage the error as it is (retried)', async () => {
    const missing = await activityRefusedLookup(grpcError(5));
    expect(missing.outcome).toMatchObject({ type: ErrorCodes.LINEAGE_MISMATCH, nonRetryable: true });
    const outage = await activityRefusedLookup(grpcError(14));
    expect(outage.outcome).not.toBeInstanceOf(ApplicationFailure);
    expect((outage.outcome as Error).message).toBe('grpc 14');
    expect(outage.audit.events.map((e) => [e.decision, e.reason])).toEqual([['deny', 'ERROR']]);
  });
});
