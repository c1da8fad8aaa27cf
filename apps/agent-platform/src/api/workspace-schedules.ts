/**
 * A workspace's schedules as the API sees them: Temporal holds them, and the memo the API writes at
 * creation says whose they are (a schedule still runs only as the creator its signed header names,
 * whatever a memo says). Listing them, forgetting a deleted one's row, pausing a removed member's.
 */
import { ScheduleNotFoundError, isGrpcDeadlineError } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { decodeOptionalSinglePayload } from '@temporalio/common/lib/internal-non-workflow/index.js';
import type { FastifyRequest } from 'fastify';
import { WORKSPACE_ID_ATTRIBUTE } from 'temporal-user-context';
import { ScheduleRepository } from '../data/repositories/index.js';
import type { RouteContext } from './context.js';

export const SCHEDULE_PREFIX = 'agent-schedule-';
/** Memo key of the API's own record of a schedule: which workspace, agent and user it belongs to. */
export const SCHEDULE_MEMO = 'agentPlatform';

/** What the API records in a schedule's memo when it creates it. */
export interface ScheduleRecord {
  workspaceId: string;
  agentId: string;
  createdBy: string;
  everySeconds: number;
  createdAt: string;
}

export function scheduleRecord(value: unknown): ScheduleRecord | undefined {
  const r = value as Partial<ScheduleRecord> | null | undefined;
  return typeof r?.workspaceId === 'string' &&
    typeof r.agentId === 'string' &&
    typeof r.createdBy === 'string' &&
    typeof r.everySeconds === 'number' &&
    typeof r.createdAt === 'string'
    ? (r as ScheduleRecord)
    : undefined;
}

/** A schedule of the workspace, as listed. */
export type WorkspaceSchedule = ScheduleRecord & { scheduleId: string; paused: boolean; endsAt?: string };

/** What kind of error a Temporal call failed with, for an audit record: a gRPC status, no text. */
function temporalErrorKind(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  const code = e?.code ?? e?.cause?.code;
  return typeof code === 'number' ? `gRPC status ${code}` : 'an error (see the API log)';
}

/** What the routes do with a workspace's schedules. */
export interface WorkspaceSchedules {
  /** The workspace's schedules, as their memo records name them (unsorted). */
  workspaceSchedules(workspaceId: string): Promise<WorkspaceSchedule[]>;
  /** Marks a schedule's row deleted, best effort. */
  forgetSchedule(request: FastifyRequest, scheduleId: string): Promise<void>;
  /** Pauses the schedules a removed (or re-added) member created in the workspace. */
  pauseSchedulesOf(
    request: FastifyRequest,
    userId: string,
    why: 'removed' | 'added again',
    recent: readonly string[],
    since?: number,
  ): Promise<void>;
  /** Logs and audits a schedule that could not be paused or deleted. */
  pauseFailed(
    request: FastifyRequest,
    member: string,
    scheduleId: string | undefined,
    err: unknown,
    action?: 'schedule.pause' | 'schedule.delete',
  ): void;
}

export function createWorkspaceSchedules(ctx: RouteContext): WorkspaceSchedules {
  const { client, auditor, audit, user, scoped, asUser, timely } = ctx;
  /**
   * Pauses the schedules a removed member created in the workspace: each run they start would act as
   * someone who is no longer a member, and be refused (two deny records per run, forever), and re-adding
   * the member would silently make them act again. Paused, an admin sees them in the list and deletes
   * or resumes them. Best effort: the membership is already gone, so a schedule that cannot be paused
   * now only leaves its runs refused; each failure is recorded. Besides those Temporal lists, `recent`:
   * the ones the API recorded as theirs lately (`agent_schedules`, read in the membership change's own
   * transaction). Found by review: a schedule created just before the removal, which the listing did not
   * show yet, escaped the pause (and again when they were re-added).
   */
  const pauseSchedulesOf = async (
    request: FastifyRequest,
    userId: string,
    why: 'removed' | 'added again',
    recent: readonly string[],
    /** Re-added: listed schedules created from this time on are the new membership's, not paused. */
    since?: number,
  ): Promise<void> => {
    const { workspaceId } = user(request);
    let listing: Awaited<ReturnType<typeof workspaceSchedules>> | undefined;
    try {
      listing = await workspaceSchedules(workspaceId);
    } catch (err) {
      pauseFailed(request, userId, undefined, err);
    }
    const listed = new Set(listing?.map((s) => s.scheduleId));
    const pause = (scheduleId: string) =>
      // The note is the schedule's state, in clear in Temporal (no payload, no codec): it names no one.
      asUser(request, () => client.schedule.getHandle(scheduleId).pause(`creator ${why}`));
    // At once: each call has its own deadline, so a Temporal that does not answer costs the request
    // one deadline, not one per schedule.
    await Promise.all([
      ...(listing ?? [])
        .filter(
          (s) =>
            s.createdBy === userId && !s.paused && (since === undefined || Date.parse(s.createdAt) < since),
        )
        .map(({ scheduleId }) =>
          pause(scheduleId).catch((err: unknown) => pauseFailed(request, userId, scheduleId, err)),
        ),
      // Recorded and not listed yet (or the listing failed); a create that never took effect leaves a
      // row with no schedule behind for a while, which is no failure.
      ...recent
        .filter((scheduleId) => !listed.has(scheduleId))
        .map((scheduleId) =>
          pause(scheduleId).catch((err: unknown) => {
            if (!(err instanceof ScheduleNotFoundError)) pauseFailed(request, userId, scheduleId, err);
          }),
        ),
    ]);
  };
  const pauseFailed = (
    request: FastifyRequest,
    member: string,
    scheduleId: string | undefined,
    err: unknown,
    action: 'schedule.pause' | 'schedule.delete' = 'schedule.pause',
  ) => {
    // The error itself goes to the log only: its text (hosts, ports) is not for the workspace's trail.
    request.log.warn({ err, scheduleId }, "could not pause or delete a member's schedule");
    auditor.emit({
      action,
      decision: 'deny',
      ...audit,
      source: 'edge',
      reason: 'ERROR',
      userId: user(request).userId,
      workspaceId: user(request).workspaceId,
      // A call that timed out may yet have taken effect.
      detail: `schedules of member ${member}${scheduleId ? `: ${scheduleId}` : ''} ${isGrpcDeadlineError(err) ? 'perhaps not paused or deleted: Temporal did not answer in time' : `not paused or deleted: ${temporalErrorKind(err)}`}`,
    });
  };

  /**
   * Marks a schedule's row deleted (the schedule is gone, or was never created), best effort: a row left
   * counted is dropped by a create once Temporal's listing has long stopped showing its schedule.
   */
  const forgetSchedule = (request: FastifyRequest, scheduleId: string) =>
    scoped(request, (tx) => new ScheduleRepository(tx).markDeleted(scheduleId)).catch((err: unknown) => {
      request.log.warn({ err, scheduleId }, 'could not mark a schedule row deleted');
    });

  /** The API's record in a raw memo field, or `undefined` when it cannot be read with our keys. */
  const readScheduleRecord = async (payload: Payload | null | undefined) => {
    if (!payload) return undefined;
    try {
      return scheduleRecord(await decodeOptionalSinglePayload(client.options.loadedDataConverter, payload));
    } catch {
      return undefined;
    }
  };

  /** The workspace's schedules, as their memo records name them (unsorted). */
  const workspaceSchedules = async (workspaceId: string) => {
    const schedules: WorkspaceSchedule[] = [];
    // Raw pages rather than client.schedule.list(): that decodes every memo it is given and stops at
    // the first it cannot (another application's, a plaintext one), failing every workspace. With the
    // search-attribute mirror the server narrows the list to the schedules mirrored as this
    // workspace's, and those mirrored as nobody's (created before the mirror, or cleared by an
    // update), so that none of the workspace's schedules drops out of sight. Anyone with namespace
    // access can set those attributes: the memo still decides.
    const mirrored = ctx.mirrorQuery?.({ workspaceId });
    const query =
      mirrored === undefined ? undefined : `(${mirrored}) OR ${WORKSPACE_ID_ATTRIBUTE.name} IS NULL`;
    let nextPageToken: Uint8Array | undefined;
    do {
      const token = nextPageToken;
      const page = await timely(() =>
        client.workflowService.listSchedules({
          namespace: client.options.namespace,
          maximumPageSize: 1000,
          ...(query ? { query } : {}),
          ...(token ? { nextPageToken: token } : {}),
        }),
      );
      for (const entry of page.schedules ?? []) {
        if (!entry.scheduleId?.startsWith(SCHEDULE_PREFIX)) continue;
        const record = await readScheduleRecord(entry.memo?.fields?.[SCHEDULE_MEMO]);
        if (record?.workspaceId !== workspaceId) continue;
        // When it stops starting runs: the library ends every schedule inside its creator's token window.
        const end = entry.info?.spec?.endTime;
        schedules.push({
          scheduleId: entry.scheduleId,
          ...record,
          paused: entry.info?.paused === true,
          ...(end?.seconds ? { endsAt: new Date(Number(end.seconds) * 1000).toISOString() } : {}),
        });
      }
      nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (nextPageToken);
    return schedules;
  };

  return { workspaceSchedules, forgetSchedule, pauseSchedulesOf, pauseFailed };
}
