/**
 * Running an agent on a schedule as the caller, listing a workspace's schedules and deleting one.
 * Temporal holds the schedules (./../workspace-schedules.ts says how the API reads them).
 */
import { randomUUID } from 'node:crypto';
import { ScheduleNotFoundError, isGrpcDeadlineError } from '@temporalio/client';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isUserContextError } from 'temporal-user-context';
import { AgentRepository, ScheduleRepository } from '../../data/repositories/index.js';
import { WORKFLOW_TYPE, type AgentExecutionInput } from '../../workflows/agent-execution.js';
import type { RouteContext } from '../context.js';
import { keyedRequest, scheduleRequestDigest } from '../idempotency.js';
import { ProblemError, notFound, quotaExceeded } from '../problems.js';
import { responses } from '../responses.js';
import {
  ID,
  IDEMPOTENCY_KEY,
  TEXT,
  agentParams,
  errors,
  limitedErrors,
  problemResponse,
  security,
  workspaceParams,
} from '../schemas.js';
import {
  SCHEDULE_MEMO,
  SCHEDULE_PREFIX,
  scheduleRecord,
  type ScheduleRecord,
  type WorkspaceSchedules,
} from '../workspace-schedules.js';

/** Shortest schedule interval: a tighter one is a load generator, not an agent schedule. */
export const MIN_SCHEDULE_SECONDS = 60;
/** Waits between the deletes of a schedule whose create timed out without a key (undoTimedOut). */
const LATE_DELETE_MS = [1000, 4000, 25_000] as const;
const SCHEDULE_ID = {
  type: 'string',
  pattern: `^${SCHEDULE_PREFIX}[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
} as const;

export function registerScheduleRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  schedules: WorkspaceSchedules,
): void {
  const { client, taskQueue, limits, scheduleRowStaleMs, unfinished, user, scoped, asUser, refused } = ctx;
  const { workspaceSchedules, forgetSchedule, pauseFailed } = schedules;
  // Temporal holds the schedules; the memo the API writes at creation says whose they are. A schedule
  // still runs only as the creator its signed header names, whatever a memo says.
  app.post<{
    Params: { ws: string; agentId: string };
    Body: { everySeconds: number; input: string };
    Headers: { 'idempotency-key'?: string };
  }>(
    '/workspaces/:ws/agents/:agentId/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: `Run an agent on a schedule (every N seconds, N ≥ ${MIN_SCHEDULE_SECONDS}) as the caller`,
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key, agent and body, by the ' +
          'same user) answers the schedule the first one created (header `idempotent-replayed: true`) while ' +
          'that schedule exists; the same key with another request is refused (422), and while the first ' +
          'attempt is still creating it, 409.',
        security,
        params: agentParams,
        headers: { type: 'object', properties: { 'idempotency-key': IDEMPOTENCY_KEY } },
        body: {
          type: 'object',
          properties: {
            everySeconds: { type: 'integer', minimum: MIN_SCHEDULE_SECONDS, maximum: 31_536_000 },
            input: { ...TEXT, minLength: 1, maxLength: 10_000 },
          },
          required: ['everySeconds', 'input'],
          additionalProperties: false,
        },
        response: {
          ...responses.scheduleCreated,
          ...limitedErrors,
          409: problemResponse('SCHEDULE_EXISTS, IDEMPOTENCY_KEY_IN_USE'),
          422: problemResponse('IDEMPOTENCY_KEY_REUSED'),
        },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const { everySeconds } = request.body;
      const { workspaceId } = user(request);
      const idempotency = keyedRequest(request.headers['idempotency-key'], () =>
        scheduleRequestDigest(agentId, request.body),
      );
      // Membership and the agent are checked live before anything is listed.
      if (!(await scoped(request, (tx) => new AgentRepository(tx).get(agentId)))) throw notFound('agent');
      const scheduleId = `${SCHEDULE_PREFIX}${randomUUID()}`;
      // Counted from the API's own schedule rows, written under the workspace's lock before each create
      // (creates at the same moment, in any API process, take turns and see each other), together with
      // Temporal's listing (schedules created before those rows, or by another path).
      const listed = (await workspaceSchedules(workspaceId)).map((s) => s.scheduleId);
      const reserved = await scoped(request, (tx) =>
        new ScheduleRepository(tx).reserve({
          scheduleId,
          agentId,
          limit: limits.schedules,
          listed,
          staleAfterMs: scheduleRowStaleMs,
          ...(idempotency ? { idempotency } : {}),
        }),
      );
      // Deleted since it was read above (its delete took the same lock).
      if (reserved === 'agent-missing') throw notFound('agent');
      if (typeof reserved === 'object') return replaySchedule(request, reply, reserved.prior);
      if (!reserved) throw refused(request, 'schedule.create', quotaExceeded('schedules', limits.schedules));
      const args: AgentExecutionInput = { agentId, input: request.body.input };
      const record: ScheduleRecord = {
        workspaceId,
        agentId,
        createdBy: user(request).userId,
        everySeconds,
        createdAt: new Date().toISOString(),
      };
      /** Deletes the schedule just created: `deleted`, `absent`, or the error. */
      const deleteCreated = () =>
        asUser(request, () => client.schedule.getHandle(scheduleId).delete()).then(
          () => 'deleted' as const,
          (deleteErr: unknown) =>
            deleteErr instanceof ScheduleNotFoundError ? ('absent' as const) : deleteErr,
        );
      /** Deletes the schedule just created, best effort (a failure is logged and audited). */
      const undo = async () => {
        const outcome = await deleteCreated();
        if (outcome !== 'deleted' && outcome !== 'absent')
          pauseFailed(request, user(request).userId, scheduleId, outcome, 'schedule.delete');
      };
      /**
       * {@link undo} for a keyless create that timed out: it may take effect after the delete that
       * follows it, which then finds nothing (or times out too), so the delete is tried again after the
       * answer, until one deletes the schedule or half a minute has passed (a failure audited at the
       * last try).
       */
      const undoTimedOut = async (retriesMs: readonly number[] = LATE_DELETE_MS): Promise<void> => {
        const outcome = await deleteCreated();
        if (outcome === 'deleted') return;
        const [wait, ...rest] = retriesMs;
        const failed = (err: unknown) =>
          pauseFailed(request, user(request).userId, scheduleId, err, 'schedule.delete');
        if (wait !== undefined)
          return unfinished.later(
            wait,
            () => undoTimedOut(rest),
            () => failed(new Error('the API closed before the schedule was known deleted')),
          );
        if (outcome !== 'absent') failed(outcome);
      };
      try {
        await asUser(request, () =>
          client.schedule.create({
            scheduleId,
            spec: { intervals: [{ every: `${everySeconds}s` }] },
            action: {
              type: 'startWorkflow',
              workflowType: WORKFLOW_TYPE,
              taskQueue,
              args: [args],
              workflowId: `${scheduleId}-run`,
            },
            memo: { [SCHEDULE_MEMO]: record },
          }),
        );
      } catch (err) {
        // A create that timed out may have taken effect, or take effect after the delete below: deleted
        // (and again after the answer, while it may still land: undoTimedOut), so that the client's
        // retry does not leave two schedules starting runs, and its row
        // kept (counted until Temporal has long not listed the schedule). With an idempotency key it is
        // not deleted: the client's retry with the key finds it if it took effect (a retry may already
        // have been told so), and is answered 409 until its row goes stale if it did not.
        if (!isGrpcDeadlineError(err)) await forgetSchedule(request, scheduleId);
        else if (idempotency) {
          // Kept for the retry, unless its creator was removed meanwhile (the check below, now): the
          // removal's pause may not have seen it.
          await scoped(request, async () => undefined).catch(async (recheck: unknown) => {
            if (!isUserContextError(recheck)) return;
            // Once: its key's row stays, and a retry with the key may yet answer the schedule, should
            // the create land later (re-adding the member pauses what escaped).
            await undo();
            throw recheck;
          });
          throw new ProblemError(
            504,
            'TEMPORAL_TIMEOUT',
            'Temporal did not answer in time',
            `schedule ${scheduleId} may have been created: send the request again with the same Idempotency-Key`,
            { scheduleId },
          );
        } else await undoTimedOut();
        throw err;
      }
      // The creator may have been removed while the schedule was being created, after the check above
      // and before the removal's pause could list it: checked again, and the schedule deleted if so
      // (its row, which the removed creator can no longer drop, goes with a later create).
      try {
        await scoped(request, async () => undefined);
      } catch (err) {
        // Removed (a refusal of the library), or, without a key to find it again by, not known either way.
        if (isUserContextError(err) || !idempotency) await undo();
        throw err;
      }
      return reply.status(201).send({ scheduleId, agentId, everySeconds });
    },
  );

  /**
   * The answer to a schedule create with an idempotency key its user gave an earlier create: that
   * create's schedule once it exists (201, as then), 409 while it does not yet (the first attempt is
   * still creating it, or died: its row stops counting, and the key is free, once it is stale), 422 for
   * another request with the key.
   */
  const replaySchedule = async (
    request: FastifyRequest<{ Params: { ws: string; agentId: string }; Body: { everySeconds: number } }>,
    reply: FastifyReply,
    prior: { scheduleId: string; sameRequest: boolean },
  ) => {
    const detail = `schedule ${prior.scheduleId}`;
    if (!prior.sameRequest)
      throw refused(
        request,
        'schedule.create',
        new ProblemError(
          422,
          'IDEMPOTENCY_KEY_REUSED',
          'Idempotency key already used',
          'this key created another schedule: send a new key for a new schedule',
        ),
        detail,
      );
    let record: ScheduleRecord | undefined;
    let paused = false;
    try {
      const description = await asUser(request, () => client.schedule.getHandle(prior.scheduleId).describe());
      record = scheduleRecord(description.memo?.[SCHEDULE_MEMO]);
      paused = description.state.paused;
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
    }
    // Not there yet, or not the one this user's create wrote (its memo says whose it is).
    const { userId, workspaceId } = user(request);
    if (
      record?.createdBy !== userId ||
      record.workspaceId !== workspaceId ||
      record.agentId !== request.params.agentId
    )
      throw refused(
        request,
        'schedule.create',
        new ProblemError(
          409,
          'IDEMPOTENCY_KEY_IN_USE',
          'A request with this key is still being handled',
          'retry shortly: its schedule is not there yet',
        ),
        detail,
      );
    void reply.header('idempotent-replayed', 'true');
    return reply.status(201).send({
      scheduleId: prior.scheduleId,
      agentId: record.agentId,
      everySeconds: record.everySeconds,
      // Paused since (its creator was removed, then added again): said, not answered as if running.
      ...(paused ? { paused: true } : {}),
    });
  };

  app.get<{ Params: { ws: string } }>(
    '/workspaces/:ws/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: "List the workspace's schedules, newest first",
        security,
        params: workspaceParams,
        response: { ...errors, ...responses.schedules },
      },
    },
    async (request) => {
      // Membership is checked live, as for every other route, before anything is read.
      await scoped(request, async () => undefined);
      const { workspaceId } = user(request);
      const schedules = await workspaceSchedules(workspaceId);
      schedules.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
      return {
        schedules: schedules.map(({ workspaceId: _ws, ...rest }) => rest),
      };
    },
  );
  app.delete<{ Params: { ws: string; scheduleId: string } }>(
    '/workspaces/:ws/schedules/:scheduleId',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Delete a schedule (its creator or a workspace admin): it starts no more runs',
        security,
        params: {
          type: 'object',
          properties: { ws: ID, scheduleId: SCHEDULE_ID },
          required: ['ws', 'scheduleId'],
        },
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      const roles = await scoped(request, async (tx) => tx.effectiveRoles);
      const me = user(request);
      const handle = client.schedule.getHandle(request.params.scheduleId);
      let record: ScheduleRecord | undefined;
      try {
        record = scheduleRecord((await asUser(request, () => handle.describe())).memo?.[SCHEDULE_MEMO]);
      } catch (err) {
        // Not decodable with our keys: not a schedule this API created.
        if (!isUserContextError(err)) throw err;
      }
      // Another workspace's schedule is as absent as a missing one.
      if (record?.workspaceId !== me.workspaceId) {
        throw refused(request, 'schedule.delete', notFound('schedule'), request.params.scheduleId);
      }
      if (record.createdBy !== me.userId && !roles.includes('admin')) {
        throw refused(
          request,
          'schedule.delete',
          new ProblemError(
            403,
            'SCHEDULE_FORBIDDEN',
            "Only the schedule's creator or a workspace admin may delete it",
          ),
          request.params.scheduleId,
        );
      }
      await asUser(request, () => handle.delete());
      await forgetSchedule(request, request.params.scheduleId);
      return reply.status(204).send();
    },
  );
}
