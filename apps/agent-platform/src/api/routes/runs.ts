/** Starting an agent run (`AgentExecutionWorkflow`) and listing a workspace's runs. */
import { randomUUID } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, isGrpcDeadlineError } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { AgentRepository, AgentRunRepository } from '../../data/repositories/index.js';
import { WORKFLOW_TYPE, type AgentExecutionInput } from '../../workflows/agent-execution.js';
import { MAX_TOTAL_STEPS_LIMIT, RunErrorCodes } from '../../workflows/run-policy.js';
import type { RouteContext } from '../context.js';
import { keyedRequest, runRequestDigest } from '../idempotency.js';
import { ProblemError, notFound, publicErrorCode, quotaExceeded, toProblem } from '../problems.js';
import { responses } from '../responses.js';
import type { RunSettling } from '../run-settling.js';
import {
  IDEMPOTENCY_KEY,
  PAGE_CURSOR,
  TEXT,
  UUID,
  agentParams,
  errors,
  limitedErrors,
  problemResponse,
  security,
  workspaceParams,
} from '../schemas.js';

/** A run record whose start call failed (`START_FAILED`): its workflow may never have started. */
const isStartFailed = (run: { status: string; error: string | null }): boolean =>
  run.status === 'failed' && run.error === RunErrorCodes.START_FAILED;

export function registerRunRoutes(app: FastifyInstance, ctx: RouteContext, runs: RunSettling): void {
  const { client, taskQueue, limits, scoped, asUser, refused } = ctx;
  const { settleOpenRuns, startedAfterAll, replayedRun } = runs;
  type RunBody = { input: string; followUpSeconds?: number; maxStepsPerRun?: number; maxTotalSteps?: number };
  const runBody = {
    type: 'object',
    properties: {
      input: { ...TEXT, minLength: 1, maxLength: 10_000 },
      followUpSeconds: { type: 'integer', minimum: 0, maximum: 3600 },
      maxStepsPerRun: { type: 'integer', minimum: 1, maximum: 200 },
      maxTotalSteps: { type: 'integer', minimum: 1, maximum: MAX_TOTAL_STEPS_LIMIT },
    },
    required: ['input'],
    additionalProperties: false,
  } as const;

  app.post<{
    Params: { ws: string; agentId: string };
    Body: RunBody;
    Headers: { 'idempotency-key'?: string };
  }>(
    '/workspaces/:ws/agents/:agentId/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'Start an agent run (AgentExecutionWorkflow)',
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key, agent and body, by the ' +
          'same user) answers the run the first one started (header `idempotent-replayed: true`), and starts ' +
          'it if the first attempt never could; the same key with another request is refused (422).',
        security,
        params: agentParams,
        headers: {
          type: 'object',
          properties: { 'idempotency-key': IDEMPOTENCY_KEY },
        },
        body: runBody,
        response: {
          ...responses.runStarted,
          ...limitedErrors,
          422: problemResponse('IDEMPOTENCY_KEY_REUSED'),
          504: problemResponse('TEMPORAL_TIMEOUT'),
        },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const idempotency = keyedRequest(request.headers['idempotency-key'], () =>
        runRequestDigest(agentId, request.body),
      );
      /**
       * The run's record, unless the workspace is at its limit of open runs; or the run this user started
       * with the same idempotency key (`replayed`), whatever the limit. A record of the key whose start
       * failed comes back as it is (`startFailed`) until `reopen`: its start may have taken effect.
       */
      const record = (reopen = false) =>
        scoped(request, async (tx) => {
          const runs = new AgentRunRepository(tx);
          // The lock this takes orders the workspace's starts: a retry sent while its first attempt is
          // still running waits for that attempt's record, and finds it.
          const open = await runs.countOpenLocked(limits.openRuns);
          const prior = idempotency ? await runs.findByIdempotencyKey(idempotency.key) : undefined;
          if (prior && prior.digest !== idempotency?.digest)
            throw refused(
              request,
              'runs.start',
              new ProblemError(
                422,
                'IDEMPOTENCY_KEY_REUSED',
                'Idempotency key already used',
                'this key started another request: send a new key for a new run',
              ),
              `run ${prior.run.id}`,
            );
          // A run started (or being started) answers as it is, whatever the limit.
          if (prior && !isStartFailed(prior.run)) return { run: prior.run, replayed: true };
          if (prior && !reopen) return { run: prior.run, replayed: true, startFailed: true };
          if (!(await new AgentRepository(tx).get(agentId))) throw notFound('agent');
          // A new run, or one whose start failed and that this retry starts: either counts from now on.
          if (open >= limits.openRuns) return undefined;
          if (prior) {
            // Its workflow may have claimed it meanwhile (a start that failed yet took effect): as it is then.
            const reopened = await runs.reopenStartFailed(prior.run.id);
            if (reopened) return { run: reopened, replayed: true, reopened: true };
            return { run: (await runs.get(prior.run.id)) ?? prior.run, replayed: true };
          }
          const workflowId = `agent-run-${randomUUID()}`;
          const run = await runs
            .create({
              agentId,
              workflowId,
              input: { input: request.body.input },
              ...(idempotency ? { idempotency } : {}),
            })
            .catch((err: unknown) => {
              // The agent was deleted after it was read (the insert waited for the workspace's lock): its
              // foreign key refuses the row. Not found, as it would have been a moment later.
              const fk = err as { code?: unknown; constraint?: unknown } | null;
              if (fk?.code === '23503' && fk.constraint === 'agent_runs_workspace_id_agent_id_fkey')
                throw notFound('agent');
              throw err;
            });
          return { run, replayed: false };
        });
      // At the limit, records of runs that ended without recording it (terminated, timed out, their
      // own write refused or failed, never started) may be what fills it: brought up to date, then
      // asked once more.
      const limited = async (reopen = false) =>
        (await record(reopen)) ?? ((await settleOpenRuns(request)) ? await record(reopen) : undefined);
      let recorded = await limited();
      if (recorded && 'startFailed' in recorded) {
        // Its start was reported failed, yet may have taken effect (a timeout after the server acted):
        // then the run is there, not yet claimed by a worker, and answers as it is, whatever the limit.
        const started = await startedAfterAll(request, recorded.run);
        if (started) {
          void reply.header('idempotent-replayed', 'true');
          const { id: runId, workflowId } = recorded.run;
          return reply.status(202).send({ runId, workflowId, agentId, status: started });
        }
        recorded = await limited(true);
      }
      if (!recorded)
        throw refused(request, 'runs.start', quotaExceeded('runs pending or running', limits.openRuns));
      const { replayed } = recorded;
      let { run } = recorded;
      const workflowId = run.workflowId ?? '';
      // A replay starts the run only if no attempt could: its record still pending (the first attempt
      // died, or is still starting it, or its start failed and the record was reopened above). The
      // workflow id makes that start the same run.
      const starts = !replayed || run.status === 'pending';
      // Whether the run this request answers was started by another attempt: it may be over already.
      let startedBefore = replayed && !starts;
      if (starts) {
        const args: AgentExecutionInput = {
          agentId,
          input: request.body.input,
          runRecordId: run.id,
          ...(request.body.followUpSeconds !== undefined
            ? { followUpSeconds: request.body.followUpSeconds }
            : {}),
          ...(request.body.maxStepsPerRun !== undefined
            ? { maxStepsPerRun: request.body.maxStepsPerRun }
            : {}),
          ...(request.body.maxTotalSteps !== undefined ? { maxTotalSteps: request.body.maxTotalSteps } : {}),
        };
        try {
          await asUser(request, () =>
            client.workflow.start(WORKFLOW_TYPE, {
              taskQueue,
              workflowId,
              args: [args],
              // Never a second run under this id: not while one runs (the server's default), nor after
              // it ended (a replay of a key whose run has finished).
              workflowIdReusePolicy: 'REJECT_DUPLICATE',
            }),
          );
        } catch (err) {
          // Another attempt with this key started it (a retry racing its first attempt, or a start that
          // timed out yet took effect): the run is there, as asked. A record this retry reopened goes
          // back to START_FAILED (only while still pending): its workflow moves it to running when it
          // claims it, and one that ended without claiming it must not leave it open for good.
          if (err instanceof WorkflowExecutionAlreadyStartedError) startedBefore = true;
          if (err instanceof WorkflowExecutionAlreadyStartedError && 'reopened' in recorded)
            run = await scoped(request, async (tx) => {
              const runs = new AgentRunRepository(tx);
              return (await runs.markStartFailed(run.id)) ?? (await runs.get(run.id)) ?? run;
            });
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) {
            // Only a record still pending: a start that timed out may have taken effect, and its workflow
            // may have marked the record running already.
            await scoped(request, (tx) => new AgentRunRepository(tx).markStartFailed(run.id));
            if (isGrpcDeadlineError(err))
              throw new ProblemError(
                504,
                'TEMPORAL_TIMEOUT',
                'Temporal did not answer in time',
                `run ${run.id} may have started: GET /runs/${run.id} tells`,
                { runId: run.id },
              );
            // Named too: a connection lost as the call was sent leaves it unsaid whether it arrived.
            if (toProblem(err).code === 'TEMPORAL_UNAVAILABLE')
              throw new ProblemError(
                503,
                'TEMPORAL_UNAVAILABLE',
                'Temporal is unavailable',
                `run ${run.id} most likely did not start: GET /runs/${run.id} tells`,
                { runId: run.id },
              );
            throw err;
          }
        }
      }
      if (replayed) void reply.header('idempotent-replayed', 'true');
      // A run another attempt started: Temporal is asked whether it is over, which its record may not
      // say yet (terminated or timed out, an ending its workflow could not write, or a run that ended
      // before it claimed its record).
      if (startedBefore && (run.status === 'running' || run.status === 'pending'))
        run = await replayedRun(request, run);
      // A replay says where the run's record is now (`running` until it ends, as for a new start; a
      // START_FAILED record whose workflow was already there, `failed` until that workflow claims it).
      const status = replayed && run.status !== 'pending' ? run.status : 'running';
      return reply.status(202).send({ runId: run.id, workflowId, agentId, status });
    },
  );

  app.get<{ Params: { ws: string }; Querystring: { agentId?: string; limit?: number; before?: string } }>(
    '/workspaces/:ws/runs',
    {
      schema: {
        tags: ['runs'],
        summary:
          "List the workspace's runs, newest first (optionally of one agent), a page at a time (`before`: the `next` of the page before)",
        security,
        params: workspaceParams,
        querystring: {
          type: 'object',
          properties: {
            agentId: UUID,
            limit: { type: 'integer', minimum: 1, maximum: 500 },
            before: PAGE_CURSOR,
          },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.runs },
      },
    },
    async (request) => {
      const { agentId, limit = 50, before } = request.query;
      const page = await scoped(request, (tx) =>
        new AgentRunRepository(tx).page(before === undefined ? { limit } : { limit, before }, agentId),
      );
      return {
        ...(page.next === undefined ? {} : { next: page.next }),
        runs: page.items.map((r) => ({
          runId: r.id,
          agentId: r.agentId,
          workflowId: r.workflowId,
          status: r.status,
          createdBy: r.createdBy,
          createdAt: r.createdAt,
          updatedAt: r.updatedAt,
          // Older workflow versions recorded an activity's error class here; only codes go out.
          ...(r.error ? { error: publicErrorCode(r.error) } : {}),
        })),
      };
    },
  );
}
