import { InterceptingCall, type Interceptor } from '@grpc/grpc-js';
// A CommonJS module whose exports Node's ESM loader cannot name: imported whole.
import proto from '@temporalio/proto';

const service = proto.temporal.api.workflowservice.v1;

/** What the server is asked to do to a schedule, and how to read which one from the request bytes. */
const CONTROLS: Record<
  string,
  { action: string; read: (bytes: Uint8Array) => { id: string; detail?: string } }
> = {
  UpdateSchedule: {
    action: 'schedule.update',
    read: (bytes) => ({ id: service.UpdateScheduleRequest.decode(bytes).scheduleId }),
  },
  DeleteSchedule: {
    action: 'schedule.delete',
    read: (bytes) => ({ id: service.DeleteScheduleRequest.decode(bytes).scheduleId }),
  },
  PatchSchedule: {
    action: 'schedule.patch',
    read: (bytes) => {
      const request = service.PatchScheduleRequest.decode(bytes);
      return { id: request.scheduleId, detail: patchOf(request.patch) };
    },
  },
};

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
 * client interceptors cover only `create`. `record` gets the action, the schedule id and a detail, once
 * per call (this interceptor sits outside the SDK's retry interceptor). Requests it cannot read go on
 * unrecorded as such: `record` then gets the id `unknown`.
 */
export function scheduleControlInterceptor(
  record: (action: string, scheduleId: string, detail: string | undefined) => void,
): Interceptor {
  return (options, nextCall) => {
    const method = options.method_definition.path.slice(options.method_definition.path.lastIndexOf('/') + 1);
    const control = CONTROLS[method];
    if (!control) return new InterceptingCall(nextCall(options));
    return new InterceptingCall(nextCall(options), {
      sendMessage(message: unknown, next) {
        let target: { id: string; detail?: string };
        try {
          target = control.read(message as Uint8Array);
        } catch {
          target = { id: 'unknown', detail: 'request not readable' };
        }
        record(control.action, target.id, target.detail);
        next(message);
      },
    });
  };
}
