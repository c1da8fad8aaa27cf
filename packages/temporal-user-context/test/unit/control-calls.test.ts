// The client Connection's gRPC interceptor for calls no client interceptor sees (schedule changes,
// activities completed from outside them), against a fake next call: what it lets through to the
// server, in which order, and what the caller hears when it refuses.
import { createHash } from 'node:crypto';
import { Metadata, status, type InterceptingCall } from '@grpc/grpc-js';
import proto from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextError } from '../../src/context/errors.js';
import { controlCallsInterceptor, type UpdatedAction } from '../../src/client/control-calls.js';

const service = proto.temporal.api.workflowservice.v1;
const UPDATE = '/temporal.api.workflowservice.v1.WorkflowService/UpdateSchedule';
const DELETE = '/temporal.api.workflowservice.v1.WorkflowService/DeleteSchedule';

/** A next call that logs what reaches it (the server's side of the interceptor). */
function fakeNext() {
  const log: string[] = [];
  const call: Omit<InterceptingCall, 'requester'> & Record<string, unknown> = {
    cancelWithStatus: (code: number, details: string) => void log.push(`cancel ${code} ${details}`),
    getPeer: () => 'fake',
    start: () => void log.push('start'),
    sendMessageWithContext: () => void log.push('send'),
    sendMessage: () => void log.push('send'),
    startRead: () => undefined,
    halfClose: () => void log.push('halfClose'),
    getAuthContext: () => null,
  };
  return { log, call };
}

const updateBytes = (workflowId: string) =>
  service.UpdateScheduleRequest.encode({
    namespace: 'ns',
    scheduleId: 'sch-1',
    schedule: {
      action: { startWorkflow: { workflowId, workflowType: { name: 'T' }, taskQueue: { name: 'q' } } },
    },
  }).finish();

async function run(
  path: string,
  bytes: Uint8Array,
  check: (a: UpdatedAction) => Promise<UserContextError | undefined>,
  record: (action: string, target: unknown, refusal?: unknown) => void = () => undefined,
  refuseCaller?: (action: string, target: unknown) => UserContextError | undefined,
  refuseUnboundByToken = false,
) {
  const next = fakeNext();
  const interceptor = controlCallsInterceptor(
    record as never,
    { header: 'user-context', check },
    refuseCaller as never,
    refuseUnboundByToken,
  );
  const call = interceptor({ method_definition: { path } } as never, () => next.call as never);
  call.start(new Metadata(), {});
  call.sendMessage(bytes);
  call.halfClose();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return next.log;
}

describe('controlCallsInterceptor', () => {
  it('an update its check refuses never reaches the server: no message, no half-close, one status', async () => {
    const seen: UpdatedAction[] = [];
    const log = await run(UPDATE, updateBytes('moved'), async (a) => {
      seen.push(a);
      return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'moved');
    });
    expect(seen.map((a) => [a.namespace, a.scheduleId, a.workflowId, a.workflowType, a.taskQueue])).toEqual([
      ['ns', 'sch-1', 'moved', 'T', 'q'],
    ]);
    expect(log).toEqual([
      'start',
      `cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.LINEAGE_MISMATCH}: moved`,
    ]);
  });

  it('an update its check passes goes on whole, the half-close after the message', async () => {
    expect(await run(UPDATE, updateBytes('same'), async () => undefined)).toEqual([
      'start',
      'send',
      'halfClose',
    ]);
  });

  it('a check or a record that throws neither strands the call nor leaves a rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      // A check that fails refuses the update (found by review: it let through one it would refuse).
      expect(await run(UPDATE, updateBytes('x'), () => Promise.reject(new Error('check failed')))).toEqual([
        'start',
        `cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.MISCONFIGURED}: the schedule update could not be checked (check failed)`,
      ]);
      const refused = await run(
        UPDATE,
        updateBytes('x'),
        async () => new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'moved'),
        () => {
          throw new Error('record failed');
        },
      );
      expect(refused).toEqual([
        'start',
        `cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.LINEAGE_MISMATCH}: moved`,
      ]);
      await new Promise((r) => setTimeout(r, 10));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('other schedule calls and unreadable updates go on as before, unchecked', async () => {
    let checked = 0;
    const check = async () => {
      checked++;
      return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'no');
    };
    const deleted = service.DeleteScheduleRequest.encode({ namespace: 'ns', scheduleId: 's' }).finish();
    expect(await run(DELETE, deleted, check)).toEqual(['start', 'send', 'halfClose']);
    expect(await run(UPDATE, new Uint8Array([0xff, 0xff, 0xff]), check)).toEqual([
      'start',
      'send',
      'halfClose',
    ]);
    expect(checked).toBe(0);
  });

  // Found by review: work a settled activity left running changed schedules (recorded as asked by no
  // one); the plugin's caller check now refuses it before any message, update or not.
  it('a caller refused by the caller check sends nothing, is checked and recorded no further, and hears why', async () => {
    const asked: unknown[][] = [];
    let checked = 0;
    let recorded = 0;
    const refuse = (action: string, target: unknown) => {
      asked.push([action, target]);
      return new UserContextError(ErrorCodes.MISSING, 'leftover work');
    };
    const cancelled = `cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.MISSING}: leftover work`;
    const deleted = service.DeleteScheduleRequest.encode({ namespace: 'ns', scheduleId: 's' }).finish();
    const patched = service.PatchScheduleRequest.encode({
      namespace: 'ns',
      scheduleId: 's',
      patch: { triggerImmediately: {} },
    }).finish();
    const PATCH = '/temporal.api.workflowservice.v1.WorkflowService/PatchSchedule';
    const check = async () => void checked++;
    const record = () => void recorded++;
    expect(await run(UPDATE, updateBytes('same'), check, record, refuse)).toEqual(['start', cancelled]);
    expect(await run(DELETE, deleted, check, record, refuse)).toEqual(['start', cancelled]);
    expect(await run(PATCH, patched, check, record, refuse)).toEqual(['start', cancelled]);
    expect([checked, recorded]).toEqual([0, 0]);
    expect(asked).toEqual([
      ['schedule.update', { kind: 'schedule', namespace: 'ns', id: 'sch-1' }],
      ['schedule.delete', { kind: 'schedule', namespace: 'ns', id: 's' }],
      ['schedule.patch', { kind: 'schedule', namespace: 'ns', id: 's', detail: 'trigger' }],
    ]);
    // A caller check that throws refuses (fail closed); one that answers nothing lets the call go on.
    const thrown = () => {
      throw new Error('no scope');
    };
    expect(await run(DELETE, deleted, check, record, thrown)).toEqual([
      'start',
      `cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.MISCONFIGURED}: the schedule change's caller could not be checked (no scope)`,
    ]);
    // That refusal is the interceptor's own, and on record (the caller check records its own).
    expect(recorded).toBe(1);
    expect(await run(DELETE, deleted, check, record, () => undefined)).toEqual([
      'start',
      'send',
      'halfClose',
    ]);
  });

  it('an activity completed, failed or cancelled from outside it is recorded, by id or by task-token digest, never refused by the caller check', async () => {
    const METHOD = '/temporal.api.workflowservice.v1.WorkflowService/';
    const token = new Uint8Array([1, 2, 3, 4]);
    const digest = createHash('sha256').update(token).digest('hex').slice(0, 16);
    const seen: unknown[][] = [];
    const record = (action: string, target: unknown) => void seen.push([action, target]);
    const refuse = () => new UserContextError(ErrorCodes.MISSING, 'leftover work');
    const none = async () => undefined;
    const calls: [string, Uint8Array][] = [
      [
        'RespondActivityTaskCompletedById',
        service.RespondActivityTaskCompletedByIdRequest.encode({
          namespace: 'ns',
          workflowId: 'wf',
          runId: 'r1',
          activityId: '7',
        }).finish(),
      ],
      [
        'RespondActivityTaskFailed',
        service.RespondActivityTaskFailedRequest.encode({ namespace: 'ns', taskToken: token }).finish(),
      ],
      [
        'RespondActivityTaskCanceledById',
        service.RespondActivityTaskCanceledByIdRequest.encode({
          namespace: 'ns',
          workflowId: 'wf',
          activityId: '7',
        }).finish(),
      ],
      ['RespondActivityTaskCompleted', new Uint8Array([0xff, 0xff, 0xff])],
    ];
    for (const [method, bytes] of calls)
      expect(await run(`${METHOD}${method}`, bytes, none, record, refuse), method).toEqual([
        'start',
        'send',
        'halfClose',
      ]);
    expect(seen).toEqual([
      [
        'activity.complete',
        {
          kind: 'activity',
          namespace: 'ns',
          workflowId: 'wf',
          runId: 'r1',
          activityId: '7',
          detail: 'by activity id',
        },
      ],
      ['activity.fail', { kind: 'activity', namespace: 'ns', detail: `by task token sha256:${digest}` }],
      [
        'activity.cancel',
        { kind: 'activity', namespace: 'ns', workflowId: 'wf', activityId: '7', detail: 'by activity id' },
      ],
      ['activity.complete', { kind: 'activity', namespace: undefined, detail: 'request not readable' }],
    ]);
    // Heartbeats are not recorded.
    seen.length = 0;
    const beat = service.RecordActivityTaskHeartbeatRequest.encode({
      namespace: 'ns',
      taskToken: token,
    }).finish();
    await run(`${METHOD}RecordActivityTaskHeartbeat`, beat, none, record, refuse);
    expect(seen).toEqual([]);
  });

  it('by task token, refuses payloads of the codec bound to no workflow, wherever the request holds them', async () => {
    const METHOD = '/temporal.api.workflowservice.v1.WorkflowService/';
    const token = new Uint8Array([1, 2, 3, 4]);
    const digest = createHash('sha256').update(token).digest('hex').slice(0, 16);
    const bytes = (text: string) => new TextEncoder().encode(text);
    const encrypted = (bound: boolean) => ({
      metadata: {
        encoding: bytes('binary/encrypted'),
        'encryption-key-id': bytes('k1'),
        ...(bound ? { 'encryption-workflow-id': bytes('wf') } : {}),
      },
      data: new Uint8Array([1, 2, 3]),
    });
    const completed = (payload: object) =>
      service.RespondActivityTaskCompletedRequest.encode({
        namespace: 'ns',
        taskToken: token,
        result: { payloads: [payload] },
      }).finish();
    // A failure's message moved into its encoded attributes, in a cause.
    const failed = service.RespondActivityTaskFailedRequest.encode({
      namespace: 'ns',
      taskToken: token,
      failure: { message: 'x', cause: { message: 'y', encodedAttributes: encrypted(false) } },
    }).finish();
    const beat = service.RecordActivityTaskHeartbeatRequest.encode({
      namespace: 'ns',
      taskToken: token,
      details: { payloads: [encrypted(false)] },
    }).finish();
    const refusedOf = (action: string) => [
      action,
      { kind: 'activity', namespace: 'ns', detail: `by task token sha256:${digest}` },
      ErrorCodes.MISCONFIGURED,
    ];
    const none = async () => undefined;
    const cases: [string, Uint8Array, boolean, boolean][] = [
      // method, request, whether the check is on, whether refused
      ['RespondActivityTaskCompleted', completed(encrypted(false)), true, true],
      ['RespondActivityTaskFailed', failed, true, true],
      ['RecordActivityTaskHeartbeat', beat, true, true],
      ['RespondActivityTaskCompleted', completed(encrypted(true)), true, false],
      [
        'RespondActivityTaskCompleted',
        completed({ metadata: { encoding: bytes('json/plain') } }),
        true,
        false,
      ],
      ['RespondActivityTaskCompleted', completed(encrypted(false)), false, false],
    ];
    for (const [method, request, on, refused] of cases) {
      const seen: unknown[][] = [];
      const record = (action: string, target: unknown, refusal?: unknown) =>
        void seen.push([action, target, (refusal as UserContextError | undefined)?.code]);
      const log = await run(`${METHOD}${method}`, request, none, record, undefined, on);
      const action =
        method === 'RecordActivityTaskHeartbeat'
          ? 'activity.heartbeat'
          : method.includes('Failed')
            ? 'activity.fail'
            : 'activity.complete';
      if (refused) {
        expect(log, method).toEqual([
          'start',
          expect.stringMatching(`^cancel ${status.FAILED_PRECONDITION} ${ErrorCodes.MISCONFIGURED}: `),
        ]);
        expect(seen).toEqual([refusedOf(action)]);
      } else {
        expect(log, method).toEqual(['start', 'send', 'halfClose']);
      }
    }
  });
});
