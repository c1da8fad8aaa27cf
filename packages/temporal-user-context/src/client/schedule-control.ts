import { InterceptingCall, type Interceptor } from '@grpc/grpc-js';
// A CommonJS module whose exports Node's ESM loader cannot name: imported whole.
import proto from '@temporalio/proto';

const service = proto.temporal.api.workflowservice.v1;

/** Which schedule a request names, in which namespace, and what it asks (patches). */
export interface ScheduleControlTarget {
  namespace: string | undefined;
  id: string;
  detail?: string;
}

const METHOD = '/temporal.api.workflowservice.v1.WorkflowService/';

/** What the server is asked to do to a schedule, by gRPC method, and how to read the request bytes. */
const CONTROLS = new Map<string, { action: string; read: (bytes: Uint8Array) => ScheduleControlTarget }>([
  [
    `${METHOD}UpdateSchedule`,
    {
      action: 'schedule.update',
      read: (bytes) => {
        const { namespace, scheduleId } = service.UpdateScheduleRequest.decode(bytes);
        return { namespace, id: scheduleId };
      },
    },
  ],
  [
    `${METHOD}DeleteSchedule`,
    {
      action: 'schedule.delete',
      read: (bytes) => {
        const { namespace, scheduleId } = service.DeleteScheduleRequest.decode(bytes);
        return { namespace, id: scheduleId };
      },
    },
  ],
  [
    `${METHOD}PatchSchedule`,
    {
      action: 'schedule.patch',
      read: (bytes) => {
        const { namespace, scheduleId, patch } = service.PatchScheduleRequest.decode(bytes);
        return { namespace, id: scheduleId, detail: patchOf(patch) };
      },
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

/**
 * A gRPC interceptor for the client's Connection that reports every call changing an existing schedule
 * (`update`, `delete`, and `trigger`, `backfill`, `pause`, `unpause`, which are patches): SDK 1.24's
 * client interceptors cover only `create`. `record` gets the action and the target once per call (this
 * interceptor sits outside the SDK's retry interceptor), with the namespace the request names. A
 * request it cannot read goes on, recorded with the id `unknown`.
 */
export function scheduleControlInterceptor(
  record: (action: string, target: ScheduleControlTarget) => void,
): Interceptor {
  return (options, nextCall) => {
    const control = CONTROLS.get(options.method_definition.path);
    if (!control) return new InterceptingCall(nextCall(options));
    return new InterceptingCall(nextCall(options), {
      sendMessage(message: unknown, next) {
        let target: ScheduleControlTarget;
        try {
          target = control.read(message as Uint8Array);
        } catch {
          target = { namespace: undefined, id: 'unknown', detail: 'request not readable' };
        }
        record(control.action, target);
        next(message);
      },
    });
  };
}
