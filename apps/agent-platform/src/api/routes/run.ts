/**
 * One run, by its record id: its status and progress, its result (optionally waited for), and what its
 * creator's workspace may send it: a cancel, an instruction.
 */
import {
  WorkflowNotFoundError,
  WorkflowUpdateRPCTimeoutOrCancelledError,
  isGrpcCancelledError,
  isGrpcDeadlineError,
} from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import type { AgentRun } from '../../data/repositories/index.js';
import type { AgentExecutionResult, Progress } from '../../workflows/agent-execution.js';
import { RunErrorCodes } from '../../workflows/run-policy.js';
import type { RouteContext } from '../context.js';
import { idempotencyKey, instructionUpdateId } from '../idempotency.js';
import {
  ProblemError,
  isFailedPrecondition,
  isRunStalled,
  outsideEnding,
  publicErrorCode,
  recordEndingOf,
  recordedEnding,
  runEnding,
  throwIfRunEnded,
  type RunEnding,
} from '../problems.js';
import { responses } from '../responses.js';
import { FINAL_STATUSES, type RunSettling } from '../run-settling.js';
import {
  IDEMPOTENCY_KEY,
  INSTRUCTION_PATTERN,
  TEXT,
  UUID,
  errors,
  problemResponse,
  security,
} from '../schemas.js';

type RunOutcome = { status: 'running' } | { status: string; result: AgentExecutionResult } | RunEnding;
const runParams = { type: 'object', properties: { runId: UUID }, required: ['runId'] } as const;

export function registerRunByIdRoutes(app: FastifyInstance, ctx: RouteContext, runs: RunSettling): void {
  const { client, workerTimeoutMs, temporalTimeoutMs, user, scoped, asUser, bounded } = ctx;
  const { loadRun, settleRecord, reconcile } = runs;
  app.get<{ Params: { runId: string } }>(
    '/runs/:runId',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run status and progress (query `progress`; absent when no worker answers in time)',
        security,
        params: runParams,
        response: { ...errors, ...responses.run },
      },
    },
    async (request, reply) => {
      const loaded = await loadRun(request);
      const handle = client.workflow.getHandle(loaded.workflowId);
      const recordOf = (run: AgentRun) => ({
        status: run.status,
        ...(run.error ? { error: publicErrorCode(run.error) } : {}),
        createdBy: run.createdBy,
        createdAt: run.createdAt,
        updatedAt: run.updatedAt,
      });
      let description: Awaited<ReturnType<typeof handle.describe>>;
      try {
        description = await asUser(request, () => handle.describe());
      } catch (err) {
        // Past retention Temporal no longer has the run: a closed record still says how it ended. One
        // whose start failed and that no workflow claimed (no Temporal run id) was never retained.
        const ended = err instanceof WorkflowNotFoundError ? recordedEnding(loaded) : undefined;
        if (!ended) throw err;
        return {
          runId: loaded.id,
          agentId: loaded.agentId,
          workflowId: loaded.workflowId,
          status: ended.status,
          ...(loaded.error === RunErrorCodes.START_FAILED && !loaded.runId ? {} : { retained: false }),
          record: recordOf(loaded),
        };
      }
      const temporalStatus = description.status.name;
      const run = await settleRecord(request, loaded, temporalStatus);
      let progress: Progress | undefined;
      let stalled = false;
      if (temporalStatus === 'RUNNING') {
        try {
          progress = await asUser(request, () =>
            bounded(reply, workerTimeoutMs, () => handle.query<Progress>('progress')),
          );
        } catch (err) {
          // A run whose workflow task keeps failing answers no query (found by review: a 500); its
          // status still stands, and says so. So it does for the server's other FAILED_PRECONDITION
          // answers (a namespace failing over), and without a worker to answer.
          if (isRunStalled(err)) stalled = true;
          else if (!isFailedPrecondition(err) && !isGrpcDeadlineError(err) && !isGrpcCancelledError(err))
            throw err;
        }
      }
      return {
        runId: run.id,
        agentId: run.agentId,
        workflowId: run.workflowId,
        status: temporalStatus.toLowerCase(),
        ...(stalled ? { stalled } : {}),
        ...(progress ? { progress } : {}),
        record: recordOf(run),
      };
    },
  );
  app.get<{ Params: { runId: string }; Querystring: { waitSeconds?: number } }>(
    '/runs/:runId/result',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run result (optionally wait for it)',
        description:
          '`status`: `running`, `completed` or `cancelled` (with `result`), or `failed`, `cancelled`, ' +
          '`terminated`, `timed_out` (with `error.code`). A closed run always gives its ending; ' +
          '`waitSeconds` only matters while the run is open.',
        security,
        params: runParams,
        querystring: {
          type: 'object',
          properties: { waitSeconds: { type: 'integer', minimum: 0, maximum: 60 } },
          additionalProperties: false,
        },
        response: { ...responses.runResult, ...errors, 504: problemResponse('TEMPORAL_TIMEOUT') },
      },
    },
    async (request, reply) => {
      const run = await loadRun(request);
      const handle = client.workflow.getHandle(run.workflowId);
      const waitMs = (request.query.waitSeconds ?? 0) * 1000;
      const outcome = await asUser(request, async (): Promise<RunOutcome> => {
        let status;
        try {
          ({ status } = await handle.describe());
        } catch (err) {
          // Past retention: the record's ending and result, when it is closed (see GET /runs/:runId).
          const ended = err instanceof WorkflowNotFoundError ? recordedEnding(run) : undefined;
          if (!ended) throw err;
          return ended;
        }
        // A terminated or timed-out run's ending is known from its status: written before its result is
        // read (which a disconnect or a deadline may cut short).
        const outside = outsideEnding(status.name);
        if (outside) await reconcile(request, run, recordEndingOf(outside));
        const open = !FINAL_STATUSES.has(status.name);
        if (open && waitMs === 0) return { status: 'running' };
        // After waiting, the caller's membership is checked again before the ending is given: it was
        // checked as the request began, up to a minute before (found by review: a member removed while
        // waiting got the answer). A record still open is written by `reconcile` below, whose scope
        // checks it; a record closed already (a start reported failed that took effect) is not.
        const recordOpen = run.status === 'pending' || run.status === 'running';
        const stillMember = () =>
          open && !recordOpen ? scoped(request, async () => undefined) : Promise.resolve();
        // Written on the record when it still says pending or running: a run terminated or timed out
        // (before or while this request waited), or one whose workflow could not write its ending.
        try {
          // A long poll ends as the API begins to close (answered `running`), not after it.
          const result = await bounded(
            reply,
            open ? waitMs : temporalTimeoutMs,
            () => handle.result() as Promise<AgentExecutionResult>,
            open,
          );
          await stillMember();
          await reconcile(request, run, recordEndingOf({ status: result.status, result }));
          return { status: result.status, result };
        } catch (err) {
          if (open && (isGrpcDeadlineError(err) || isGrpcCancelledError(err))) return { status: 'running' };
          const ending = runEnding(err);
          if (!ending) throw err;
          await stillMember();
          await reconcile(request, run, recordEndingOf(ending));
          return ending;
        }
      });
      return { runId: run.id, ...outcome };
    },
  );
  app.post<{ Params: { runId: string }; Body: Record<string, never> | undefined }>(
    '/runs/:runId/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a run (signal `cancel`)',
        security,
        params: runParams,
        description: 'No body, or an empty JSON object.',
        response: { ...errors, ...responses.cancelling },
      },
    },
    async (request, reply) => {
      // No body, or an empty object (found by review: any body passed, a `reason` among it ignored). Not
      // a body schema: Fastify would refuse a request with no body at all.
      const body: unknown = request.body;
      if (
        body !== undefined &&
        (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length > 0)
      )
        throw new ProblemError(
          400,
          'VALIDATION_FAILED',
          'Request validation failed',
          'a cancel takes no body',
        );
      const run = await loadRun(request);
      await asUser(request, () => client.workflow.getHandle(run.workflowId).signal('cancel', 'api')).catch(
        (err: unknown) => {
          throwIfRunEnded(err);
          throw err;
        },
      );
      return reply.status(202).send({ runId: run.id, status: 'cancelling' });
    },
  );
  app.post<{
    Params: { runId: string };
    Body: { instruction: string };
    Headers: { 'idempotency-key'?: string };
  }>(
    '/runs/:runId/instructions',
    {
      schema: {
        tags: ['runs'],
        summary: 'Add an instruction to a running agent (update `addInstruction`)',
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key and instruction, by the ' +
          'same user, to the same run) is the same update: applied once, its answer given again. The same ' +
          'key with another instruction is another instruction.',
        security,
        params: runParams,
        headers: { type: 'object', properties: { 'idempotency-key': IDEMPOTENCY_KEY } },
        body: {
          type: 'object',
          // Something to say: not empty, not only white space (the workflow's validator would refuse it).
          properties: {
            instruction: { ...TEXT, pattern: INSTRUCTION_PATTERN, minLength: 1, maxLength: 2000 },
          },
          required: ['instruction'],
          additionalProperties: false,
        },
        response: {
          ...responses.instructionAccepted,
          ...errors,
          409: problemResponse('RUN_NOT_RUNNING, INSTRUCTION_REJECTED'),
          504: problemResponse('INSTRUCTION_TIMEOUT, TEMPORAL_TIMEOUT'),
        },
      },
    },
    async (request, reply) => {
      const run = await loadRun(request);
      const key = idempotencyKey(request.headers['idempotency-key']);
      try {
        const outcome = await asUser(request, () =>
          bounded(reply, workerTimeoutMs, () =>
            client.workflow
              .getHandle(run.workflowId)
              .executeUpdate<{ accepted: true; pending: number }, [string]>('addInstruction', {
                args: [request.body.instruction],
                // Temporal applies an update id once per run, and answers a repeat with its outcome
                // (found by review: a retry after a 504 that "may still be applied" applied it twice).
                ...(key === undefined
                  ? {}
                  : { updateId: instructionUpdateId(user(request), key, request.body.instruction) }),
              }),
          ),
        );
        return { runId: run.id, ...outcome };
      } catch (err) {
        // The server accepts an update only once a worker has run the workflow's handler for it; with
        // no worker polling, the call would wait for one forever.
        throwIfRunEnded(err);
        if (isRunStalled(err))
          throw new ProblemError(
            503,
            'RUN_STALLED',
            'The run is stalled',
            'its workflow task keeps failing: the instruction was not taken; try again once the run is mended',
          );
        // Cancelled too when its client went away before the call (bounded): answered as the SDK's own.
        if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError || isGrpcCancelledError(err))
          throw new ProblemError(
            504,
            'INSTRUCTION_TIMEOUT',
            'Instruction not taken in time',
            `no worker took it within ${Math.ceil(workerTimeoutMs / 1000)} s; it may still be applied when one does`,
          );
        throw err;
      }
    },
  );
}
