import { InterceptingCall, status, type Interceptor } from '@grpc/grpc-js';
import type { Payload } from '@temporalio/common';
// A CommonJS module whose exports Node's ESM loader cannot name: imported whole.
import proto from '@temporalio/proto';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { describeThrown } from '../audit/sanitize.js';
import { taskTokenRef } from '../audit/task-token.js';
import { equalBytes } from '../crypto/codec/bytes.js';
import { ENCODING_ENCRYPTED_BYTES, META_ENCODING, META_WORKFLOW_ID } from '../crypto/codec/format.js';

const service = proto.temporal.api.workflowservice.v1;

/**
 * What a call that carries no context acts on, in which namespace (the request's): a schedule (its id,
 * and what a patch asks), or an activity completed by its id or by its task token (named by digest).
 */
export type ControlTarget =
  | { kind: 'schedule'; namespace: string | undefined; id: string; detail?: string }
  | {
      kind: 'activity';
      namespace: string | undefined;
      workflowId?: string;
      runId?: string;
      activityId?: string;
      detail?: string;
    };

const METHOD = '/temporal.api.workflowservice.v1.WorkflowService/';

interface ActivityResponse {
  namespace?: string | null;
  taskToken?: Uint8Array | null;
  workflowId?: string | null;
  runId?: string | null;
  activityId?: string | null;
}

/** An activity completion's target: by id, or by task token (its digest: the token is a credential). */
function activityTarget(request: ActivityResponse, byId: boolean): ControlTarget {
  const namespace = request.namespace ?? undefined;
  if (!byId) return { kind: 'activity', namespace, detail: `by ${taskTokenRef(request.taskToken)}` };
  return {
    kind: 'activity',
    namespace,
    workflowId: request.workflowId ?? '',
    ...(request.runId ? { runId: request.runId } : {}),
    activityId: request.activityId ?? '',
    detail: 'by activity id',
  };
}

/**
 * How to read one call: its action, and its target. {@link controlCallsInterceptor}'s `refuseCaller` is
 * asked for schedule changes only: an activity that throws `CompleteAsyncError` may complete itself
 * from work it left running.
 */
interface Control {
  kind: ControlTarget['kind'];
  action: string;
  read: (bytes: Uint8Array) => ControlTarget;
  /**
   * By task token: the request decoded, to look for payloads encrypted bound to no workflow (see
   * {@link holdsUnboundCiphertext}).
   */
  byToken?: (bytes: Uint8Array) => unknown;
  /** Recorded only when refused (heartbeats: one per beat). */
  quiet?: boolean;
}

/** {@link holdsUnboundCiphertext} of a request; false for one that cannot be read (it goes on, as above). */
function unboundIn(decode: (bytes: Uint8Array) => unknown, bytes: Uint8Array): boolean {
  try {
    return holdsUnboundCiphertext(decode(bytes));
  } catch {
    return false;
  }
}

/**
 * Whether a decoded request holds a payload this package's codec encrypted bound to no workflow (its
 * metadata names none): what the codec makes without a serialization context, which is what SDK 1.24's
 * `AsyncCompletionClient` gives a call by task token unless told one. The activity's workflow refuses
 * such a payload (`USER_CONTEXT_PAYLOAD_TAMPERED`) in every workflow task for ever, and the next
 * attempt of an activity such heartbeat details reach fails before its code runs (found by review: the
 * call itself succeeded, and was audited as allowed). Walks the message's own fields, to a bounded depth.
 */
function holdsUnboundCiphertext(message: unknown, depth = 0): boolean {
  if (depth > 256 || typeof message !== 'object' || message === null || message instanceof Uint8Array)
    return false;
  if (Array.isArray(message)) return message.some((item) => holdsUnboundCiphertext(item, depth + 1));
  const metadata = (message as { metadata?: unknown }).metadata;
  if (typeof metadata === 'object' && metadata !== null) {
    const fields = metadata as Record<string, unknown>;
    const encoding = fields[META_ENCODING];
    if (encoding instanceof Uint8Array && equalBytes(encoding, ENCODING_ENCRYPTED_BYTES))
      return !Object.hasOwn(fields, META_WORKFLOW_ID);
  }
  return Object.values(message).some((value) => holdsUnboundCiphertext(value, depth + 1));
}

/** An `RespondActivityTask…` call, by task token and by id. */
function activityControls(name: 'Completed' | 'Failed' | 'Canceled', action: string): [string, Control][] {
  const byToken = service[`RespondActivityTask${name}Request`];
  const byId = service[`RespondActivityTask${name}ByIdRequest`];
  return [
    [
      `${METHOD}RespondActivityTask${name}`,
      {
        kind: 'activity',
        action,
        read: (bytes) => activityTarget(byToken.decode(bytes), false),
        byToken: (bytes) => byToken.decode(bytes),
      },
    ],
    [
      `${METHOD}RespondActivityTask${name}ById`,
      { kind: 'activity', action, read: (bytes) => activityTarget(byId.decode(bytes), true) },
    ],
  ];
}

/** A schedule change by gRPC method name: the schedule the request names, and what a patch asks. */
function scheduleControl(
  name: string,
  action: string,
  decode: (bytes: Uint8Array) => {
    namespace: string;
    scheduleId: string;
    patch?: proto.temporal.api.schedule.v1.ISchedulePatch | null;
  },
  /** A patch: its detail says what it asks (`empty patch` when nothing). */
  patched = false,
): [string, Control] {
  return [
    `${METHOD}${name}`,
    {
      kind: 'schedule',
      action,
      read: (bytes) => {
        const { namespace, scheduleId, patch } = decode(bytes);
        return {
          kind: 'schedule',
          namespace,
          id: scheduleId,
          ...(patched ? { detail: patchOf(patch) } : {}),
        };
      },
    },
  ];
}

/**
 * What the server is asked to do, by gRPC method, and how to read the request bytes: change a
 * schedule, or complete, fail or cancel an activity from outside it (`AsyncCompletionClient`; a
 * worker's own completions go through its native connection, not here). Heartbeats by task token are
 * checked (below), and recorded only when refused.
 */
const CONTROLS = new Map<string, Control>([
  scheduleControl('UpdateSchedule', 'schedule.update', (b) => service.UpdateScheduleRequest.decode(b)),
  scheduleControl('DeleteSchedule', 'schedule.delete', (b) => service.DeleteScheduleRequest.decode(b)),
  scheduleControl('PatchSchedule', 'schedule.patch', (b) => service.PatchScheduleRequest.decode(b), true),
  ...activityControls('Completed', 'activity.complete'),
  ...activityControls('Failed', 'activity.fail'),
  ...activityControls('Canceled', 'activity.cancel'),
  [
    `${METHOD}RecordActivityTaskHeartbeat`,
    {
      kind: 'activity',
      action: 'activity.heartbeat',
      read: (bytes) => activityTarget(service.RecordActivityTaskHeartbeatRequest.decode(bytes), false),
      byToken: (bytes) => service.RecordActivityTaskHeartbeatRequest.decode(bytes),
      quiet: true,
    },
  ],
]);

/** A patch in words: trigger, backfill, pause or unpause (with the operator's note, which is theirs). */
function patchOf(patch: proto.temporal.api.schedule.v1.ISchedulePatch | null | undefined): string {
  const parts: string[] = [];
  if (patch?.triggerImmediately) parts.push('trigger');
  if (patch?.backfillRequest?.length) parts.push(`backfill ×${patch.backfillRequest.length}`);
  if (patch?.pause) parts.push(`pause: ${patch.pause}`);
  if (patch?.unpause) parts.push(`unpause: ${patch.unpause}`);
  return parts.join('; ') || 'empty patch';
}

/** What an update asks a schedule's runs to start: the facts its creator's token binds, and the header. */
export interface UpdatedAction {
  /** The namespace and schedule the request names. */
  namespace: string;
  scheduleId: string;
  workflowId: string;
  workflowType: string;
  taskQueue: string;
  /** The action's context header, as the update carries it (the SDK copies the creator's). */
  header: Payload | undefined;
  /** The action's arguments, encoded as the request carries them. */
  input: Payload[];
  /** When the updated spec ends, and its jitter (epoch ms, ms; absent: no end, none). */
  endMs?: number;
  jitterMs?: number;
}

/** Milliseconds of a protobuf timestamp or duration whose `seconds` may be a number or a Long. */
function msOf(t: { seconds?: unknown; nanos?: number | null } | null | undefined): number | undefined {
  if (!t || (t.seconds == null && !t.nanos)) return undefined;
  return Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
}

/** The start-workflow action an `UpdateSchedule` request carries, if any. */
function updatedActionOf(bytes: Uint8Array, header: string): UpdatedAction | undefined {
  const request = service.UpdateScheduleRequest.decode(bytes);
  const start = request.schedule?.action?.startWorkflow;
  if (!start) return undefined;
  const payload = start.header?.fields?.[header];
  const spec = request.schedule?.spec;
  const endMs = msOf(spec?.endTime);
  const jitterMs = msOf(spec?.jitter);
  return {
    ...(endMs === undefined ? {} : { endMs }),
    ...(jitterMs === undefined ? {} : { jitterMs }),
    namespace: request.namespace ?? '',
    scheduleId: request.scheduleId ?? '',
    input: (start.input?.payloads ?? []).map((p) => ({
      metadata: p.metadata ?? {},
      data: p.data ?? undefined,
    })),
    workflowId: start.workflowId ?? '',
    workflowType: start.workflowType?.name ?? '',
    taskQueue: start.taskQueue?.name ?? '',
    header: payload ? { metadata: payload.metadata ?? {}, data: payload.data ?? undefined } : undefined,
  };
}

/**
 * A gRPC interceptor for the client's Connection that reports the calls that act without a context and
 * that no SDK client interceptor sees: every change of an existing schedule (`update`, `delete`, and
 * `trigger`, `backfill`, `pause`, `unpause`, which are patches; SDK 1.24's client interceptors cover
 * only `create`), and every completion, failure or cancellation of an activity from outside it
 * (`AsyncCompletionClient`, by task token or by id). `record` gets the action and the target once per
 * call (this interceptor sits outside the SDK's retry interceptor), with the namespace the request
 * names, and the refusal when the call was refused. A request it cannot read goes on, recorded with the
 * id `unknown` (a schedule) or no ids (an activity).
 *
 * `checkUpdate`, given the action an update asks for, answers a refusal or nothing: a refused update
 * never reaches the server and fails with `FAILED_PRECONDITION`, its message the refusal's code and
 * reason. (An update that moves the action to another workflow id leaves every later run unable to read
 * the previous run's result, which the codec bound to the old id: each such run's first workflow task
 * would fail for ever.)
 */
export function controlCallsInterceptor(
  record: (action: string, target: ControlTarget, refusal?: UserContextError) => void,
  checkUpdate?: { header: string; check: (action: UpdatedAction) => Promise<UserContextError | undefined> },
  /**
   * Asked first, for every schedule change: whether its caller may change schedules at all. It
   * answers a refusal it has recorded (the plugin's: work a settled activity left running), which the
   * call fails with as an update's check's, or nothing.
   */
  refuseCaller?: (action: string, target: ControlTarget) => UserContextError | undefined,
  /**
   * Refuse an activity's completion, failure, cancellation or heartbeat by task token that carries a
   * payload of this package's codec bound to no workflow ({@link holdsUnboundCiphertext}): on when the
   * codec is on and does not accept namespace-bound payloads in workflows.
   */
  refuseUnboundByToken = false,
): Interceptor {
  return (options, nextCall) => {
    const control = CONTROLS.get(options.method_definition.path);
    if (!control) return new InterceptingCall(nextCall(options));
    const isUpdate = options.method_definition.path === `${METHOD}UpdateSchedule`;
    // Whether the message went on, once the update's check answered: the call's end waits for it.
    let forwarded: Promise<boolean> | undefined;
    const call: InterceptingCall = new InterceptingCall(nextCall(options), {
      sendMessage(message: unknown, next) {
        let target: ControlTarget;
        let updated: UpdatedAction | undefined;
        try {
          target = control.read(message as Uint8Array);
          if (isUpdate && checkUpdate) updated = updatedActionOf(message as Uint8Array, checkUpdate.header);
        } catch {
          const detail = 'request not readable';
          target =
            control.kind === 'schedule'
              ? { kind: 'schedule', namespace: undefined, id: 'unknown', detail }
              : { kind: 'activity', namespace: undefined, detail };
        }
        let refused: UserContextError | undefined;
        try {
          if (control.kind === 'schedule') refused = refuseCaller?.(control.action, target);
          else if (
            refuseUnboundByToken &&
            control.byToken &&
            unboundIn(control.byToken, message as Uint8Array)
          ) {
            refused = new UserContextError(
              ErrorCodes.MISCONFIGURED,
              `${control.action} by task token carries payloads encrypted for no workflow, which the activity's workflow would refuse in every task: call it by activity id, or pass the activity's serializationContext ({ type: 'activity', namespace, workflowId, activityId, isLocal: false })`,
            );
            record(control.action, target, refused);
          }
        } catch (err) {
          // Fail closed: a caller that cannot be told apart is not let through, and on record.
          refused = new UserContextError(
            ErrorCodes.MISCONFIGURED,
            `the schedule change's caller could not be checked (${describeThrown(err)})`,
          );
          try {
            record(control.action, target, refused);
          } catch {
            // An auditor never throws; were a record to, the call must still be answered.
          }
        }
        if (refused) {
          forwarded = Promise.resolve(false);
          call.cancelWithStatus(status.FAILED_PRECONDITION, `${refused.code}: ${refused.reason}`);
          return;
        }
        if (!updated || !checkUpdate) {
          if (!control.quiet) record(control.action, target);
          next(message);
          return;
        }
        const recorded = (refusal?: UserContextError) => {
          try {
            record(control.action, target, refusal);
          } catch {
            // An auditor never throws; were a record to, the call must still be answered.
          }
        };
        forwarded = checkUpdate
          .check(updated)
          // The check itself failing (it never should: it answers refusals) refuses the update: found by
          // review, a check that threw let through an update it would have refused.
          .catch(
            (err: unknown) =>
              new UserContextError(
                ErrorCodes.MISCONFIGURED,
                `the schedule update could not be checked (${describeThrown(err)})`,
              ),
          )
          .then((refusal) => {
            recorded(refusal);
            if (refusal) {
              call.cancelWithStatus(status.FAILED_PRECONDITION, `${refusal.code}: ${refusal.reason}`);
              return false;
            }
            next(message);
            return true;
          })
          .catch(() => {
            call.cancelWithStatus(status.INTERNAL, 'the schedule update could not be sent');
            return false;
          });
      },
      halfClose(next) {
        if (!forwarded) return next();
        void forwarded.then((ok) => {
          if (ok) next();
        });
      },
    });
    return call;
  };
}
