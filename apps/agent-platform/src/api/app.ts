import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Client } from '@temporalio/client';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { runAsUser, type UserContext } from 'temporal-user-context';
import {
  queryAuditTrail,
  withUserScope,
  type ScopedTransaction,
  type SqlDatabase,
  type UserScopeOptions,
} from 'temporal-user-context/postgres';
import { AuthError, type VerifyBearer } from '../auth/verify.js';
import {
  AgentRepository,
  AgentRunRepository,
  MembershipRepository,
  type AgentRun,
} from '../data/repositories/index.js';
import type { AgentExecutionInput, AgentExecutionResult, Progress } from '../workflows/agent-execution.js';
import { ProblemError, failureCode, problem, toProblem } from './problems.js';

export const WORKFLOW_TYPE = 'AgentExecutionWorkflow';
const DEFAULT_TASK_QUEUE = 'agent-tasks';

declare module 'fastify' {
  interface FastifyRequest {
    userContext?: UserContext;
  }
}

export interface CreateApiOptions {
  db: SqlDatabase;
  /** A Temporal client with the UserContextPlugin and the edge key ring. */
  client: Client;
  verify: VerifyBearer;
  taskQueue?: string;
  logger?: boolean;
  /** Options for every withUserScope call (auditor, app role). */
  scope?: Omit<UserScopeOptions, 'requireRole'>;
}

const ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$' } as const;
const UUID = { type: 'string', format: 'uuid' } as const;
const ROLES = {
  type: 'array',
  items: { type: 'string', pattern: '^[a-z][a-z0-9_.:-]{0,47}$' },
  maxItems: 16,
  uniqueItems: true,
} as const;
const problemSchema = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string' },
    detail: { type: 'string' },
  },
} as const;
const errors = { 400: problemSchema, 401: problemSchema, 403: problemSchema, 404: problemSchema };
const security = [{ bearerAuth: [] }];

function notFound(what: string): ProblemError {
  return new ProblemError(
    404,
    `${what.toUpperCase()}_NOT_FOUND`,
    `${what[0]?.toUpperCase()}${what.slice(1)} not found`,
  );
}

/**
 * The agent platform's HTTP API. Every handler authenticates a bearer JWT, runs Temporal client calls
 * inside `runAsUser(user, ...)` and database work inside `withUserScope(db, user, ...)`.
 */
export async function createApi(options: CreateApiOptions): Promise<FastifyInstance> {
  const { db, client } = options;
  const taskQueue = options.taskQueue ?? DEFAULT_TASK_QUEUE;
  const app = Fastify({
    logger: options.logger ?? false,
    ajv: { customOptions: { removeAdditional: false } },
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Agent platform',
        version: '0.1.0',
        description: 'Agents run as Temporal workflows that carry the caller as a signed user context.',
      },
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.setErrorHandler((err, request, reply) => {
    const body = toProblem(err);
    if (body.status >= 500) request.log.error({ err }, 'request failed');
    void reply.status(body.status).type('application/problem+json').send(body);
  });
  app.setNotFoundHandler((_request, reply) => {
    void reply
      .status(404)
      .type('application/problem+json')
      .send(problem(404, 'NOT_FOUND', 'Not found'));
  });

  app.addHook('onRequest', async (request) => {
    const url = request.routeOptions.url;
    if (url === undefined || url === '/healthz' || url.startsWith('/docs')) return;
    const header = request.headers.authorization;
    const match = header ? /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(header) : null;
    if (!match?.[1]) throw new AuthError('AUTH_MISSING', 'bearer token required');
    request.userContext = await options.verify(match[1]);
  });
  app.addHook('preHandler', async (request) => {
    const ws = (request.params as { ws?: string } | undefined)?.ws;
    if (ws !== undefined && ws !== user(request).workspaceId) {
      throw new ProblemError(403, 'WORKSPACE_MISMATCH', 'Token is for another workspace');
    }
  });

  const user = (request: FastifyRequest): UserContext => {
    if (!request.userContext) throw new AuthError('AUTH_MISSING', 'bearer token required');
    return request.userContext;
  };
  const scoped = <T>(
    request: FastifyRequest,
    fn: (tx: ScopedTransaction) => Promise<T>,
    requireRole?: string,
  ): Promise<T> =>
    withUserScope(db, user(request), fn, {
      ...options.scope,
      ...(requireRole ? { requireRole } : {}),
    });
  const asUser = <T>(request: FastifyRequest, fn: () => Promise<T>): Promise<T> =>
    runAsUser(user(request), fn);

  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));

  // ---- members (workspace admins) ----
  app.get(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary: 'List members (admins)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        response: errors,
      },
    },
    async (request) => ({
      members: await scoped(request, (tx) => new MembershipRepository(tx).list(), 'admin'),
    }),
  );
  app.post<{ Params: { ws: string }; Body: { userId: string; roles: string[] } }>(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary: 'Add or change a member (admins)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        body: {
          type: 'object',
          properties: { userId: ID, roles: { ...ROLES, minItems: 1 } },
          required: ['userId', 'roles'],
          additionalProperties: false,
        },
        response: errors,
      },
    },
    async (request, reply) => {
      const { userId, roles } = request.body;
      await scoped(request, (tx) => new MembershipRepository(tx).upsert(userId, roles), 'admin');
      return reply.status(201).send({ workspaceId: request.params.ws, userId, roles });
    },
  );
  app.delete<{ Params: { ws: string; userId: string } }>(
    '/workspaces/:ws/members/:userId',
    {
      schema: {
        tags: ['members'],
        summary: 'Remove a member (admins); their running agents are refused at the next step',
        security,
        params: { type: 'object', properties: { ws: ID, userId: ID }, required: ['ws', 'userId'] },
        response: errors,
      },
    },
    async (request, reply) => {
      const removed = await scoped(
        request,
        (tx) => new MembershipRepository(tx).remove(request.params.userId),
        'admin',
      );
      if (!removed) throw notFound('member');
      return reply.status(204).send();
    },
  );

  // ---- agents ----
  const agentBody = {
    type: 'object',
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 200 },
      instructions: { type: 'string', maxLength: 10_000 },
      model: { type: 'string', minLength: 1, maxLength: 200 },
      tools: {
        type: 'array',
        items: { type: 'string', enum: ['searchWorkspaceDocuments'] },
        uniqueItems: true,
      },
    },
    additionalProperties: false,
  } as const;
  const agentParams = { type: 'object', properties: { ws: ID, agentId: UUID }, required: ['ws', 'agentId'] };
  type AgentBody = { name: string; instructions?: string; model?: string; tools?: string[] };

  app.get(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'List agents',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        response: errors,
      },
    },
    async (request) => ({ agents: await scoped(request, (tx) => new AgentRepository(tx).list()) }),
  );
  app.post<{ Params: { ws: string }; Body: AgentBody }>(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'Create an agent (admins)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        body: { ...agentBody, required: ['name'] },
        response: errors,
      },
    },
    async (request, reply) => {
      const { name, instructions, model, tools } = request.body;
      const agent = await scoped(
        request,
        (tx) =>
          new AgentRepository(tx).create({
            name,
            model: model ?? 'local',
            ...(instructions !== undefined ? { instructions } : {}),
            tools: tools ?? ['searchWorkspaceDocuments'],
          }),
        'admin',
      );
      return reply.status(201).send(agent);
    },
  );
  app.get<{ Params: { ws: string; agentId: string } }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: { tags: ['agents'], summary: 'Get an agent', security, params: agentParams, response: errors },
    },
    async (request) => {
      const agent = await scoped(request, (tx) => new AgentRepository(tx).get(request.params.agentId));
      if (!agent) throw notFound('agent');
      return agent;
    },
  );
  app.patch<{ Params: { ws: string; agentId: string }; Body: Partial<AgentBody> }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Update an agent (admins)',
        security,
        params: agentParams,
        body: agentBody,
        response: errors,
      },
    },
    async (request) => {
      const agent = await scoped(
        request,
        (tx) => new AgentRepository(tx).update(request.params.agentId, request.body),
        'admin',
      );
      if (!agent) throw notFound('agent');
      return agent;
    },
  );
  app.delete<{ Params: { ws: string; agentId: string } }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Delete an agent (admins)',
        security,
        params: agentParams,
        response: errors,
      },
    },
    async (request, reply) => {
      const deleted = await scoped(
        request,
        (tx) => new AgentRepository(tx).delete(request.params.agentId),
        'admin',
      );
      if (!deleted) throw notFound('agent');
      return reply.status(204).send();
    },
  );

  // ---- runs ----
  type RunBody = { input: string; followUpSeconds?: number; maxStepsPerRun?: number };
  const runBody = {
    type: 'object',
    properties: {
      input: { type: 'string', minLength: 1, maxLength: 10_000 },
      followUpSeconds: { type: 'integer', minimum: 0, maximum: 3600 },
      maxStepsPerRun: { type: 'integer', minimum: 1, maximum: 200 },
    },
    required: ['input'],
    additionalProperties: false,
  } as const;

  app.post<{ Params: { ws: string; agentId: string }; Body: RunBody }>(
    '/workspaces/:ws/agents/:agentId/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'Start an agent run (AgentExecutionWorkflow)',
        security,
        params: agentParams,
        body: runBody,
        response: errors,
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const workflowId = `agent-run-${randomUUID()}`;
      const run = await scoped(request, async (tx) => {
        if (!(await new AgentRepository(tx).get(agentId))) throw notFound('agent');
        return new AgentRunRepository(tx).create({
          agentId,
          workflowId,
          input: { input: request.body.input },
        });
      });
      const args: AgentExecutionInput = {
        agentId,
        input: request.body.input,
        runRecordId: run.id,
        ...(request.body.followUpSeconds !== undefined
          ? { followUpSeconds: request.body.followUpSeconds }
          : {}),
        ...(request.body.maxStepsPerRun !== undefined ? { maxStepsPerRun: request.body.maxStepsPerRun } : {}),
      };
      try {
        await asUser(request, () =>
          client.workflow.start(WORKFLOW_TYPE, { taskQueue, workflowId, args: [args] }),
        );
      } catch (err) {
        await scoped(request, (tx) =>
          new AgentRunRepository(tx).setStatus(run.id, 'failed', { error: 'start failed' }),
        );
        throw err;
      }
      return reply.status(202).send({ runId: run.id, workflowId, agentId, status: 'running' });
    },
  );

  app.get<{ Params: { ws: string }; Querystring: { agentId?: string; limit?: number } }>(
    '/workspaces/:ws/runs',
    {
      schema: {
        tags: ['runs'],
        summary: "List the workspace's runs, newest first (optionally of one agent)",
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: { agentId: UUID, limit: { type: 'integer', minimum: 1, maximum: 500 } },
          additionalProperties: false,
        },
        response: errors,
      },
    },
    async (request) => {
      const { agentId, limit = 50 } = request.query;
      const runs = await scoped(request, (tx) => {
        const repo = new AgentRunRepository(tx);
        return agentId ? repo.listForAgent(agentId, limit) : repo.list(limit);
      });
      return {
        runs: runs.map((r) => ({
          runId: r.id,
          agentId: r.agentId,
          workflowId: r.workflowId,
          status: r.status,
          createdBy: r.createdBy,
          createdAt: r.createdAt,
          updatedAt: r.updatedAt,
          ...(r.error ? { error: r.error } : {}),
        })),
      };
    },
  );

  const runParams = { type: 'object', properties: { runId: UUID }, required: ['runId'] } as const;
  const loadRun = async (
    request: FastifyRequest<{ Params: { runId: string } }>,
  ): Promise<AgentRun & { workflowId: string }> => {
    const run = await scoped(request, (tx) => new AgentRunRepository(tx).get(request.params.runId));
    if (!run?.workflowId) throw notFound('run');
    return run as AgentRun & { workflowId: string };
  };

  app.get<{ Params: { runId: string } }>(
    '/runs/:runId',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run status and progress (query `progress`)',
        security,
        params: runParams,
        response: errors,
      },
    },
    async (request) => {
      const run = await loadRun(request);
      const handle = client.workflow.getHandle(run.workflowId);
      const description = await asUser(request, () => handle.describe());
      const temporalStatus = description.status.name;
      let progress: Progress | undefined;
      if (temporalStatus === 'RUNNING')
        progress = await asUser(request, () => handle.query<Progress>('progress'));
      return {
        runId: run.id,
        agentId: run.agentId,
        workflowId: run.workflowId,
        status: temporalStatus.toLowerCase(),
        ...(progress ? { progress } : {}),
        record: {
          status: run.status,
          createdBy: run.createdBy,
          createdAt: run.createdAt,
          updatedAt: run.updatedAt,
        },
      };
    },
  );
  app.get<{ Params: { runId: string }; Querystring: { waitSeconds?: number } }>(
    '/runs/:runId/result',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run result (optionally wait for it)',
        security,
        params: runParams,
        querystring: {
          type: 'object',
          properties: { waitSeconds: { type: 'integer', minimum: 0, maximum: 60 } },
        },
        response: errors,
      },
    },
    async (request) => {
      const run = await loadRun(request);
      const handle = client.workflow.getHandle(run.workflowId);
      const wait = (request.query.waitSeconds ?? 0) * 1000;
      const outcome = await asUser(request, async () => {
        try {
          const pending = handle.result() as Promise<AgentExecutionResult>;
          pending.catch(() => undefined);
          const description = await handle.describe();
          if (description.status.name === 'RUNNING' && wait === 0) return { status: 'running' };
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<undefined>((resolve) => {
            timer = setTimeout(() => resolve(undefined), wait);
          });
          const result = await Promise.race([pending, timeout]).finally(() => clearTimeout(timer));
          if (result === undefined) return { status: 'running' };
          return { status: result.status, result };
        } catch (err) {
          if (
            (err as Error).name === 'WorkflowFailedError' ||
            (err as Error).name === 'WorkflowContinuedAsNewError'
          )
            return { status: 'failed', error: { code: failureCode(err) ?? 'RUN_FAILED' } };
          throw err;
        }
      });
      return { runId: run.id, ...outcome };
    },
  );
  app.post<{ Params: { runId: string }; Body: { reason?: string } | undefined }>(
    '/runs/:runId/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a run (signal `cancel`)',
        security,
        params: runParams,
        response: errors,
      },
    },
    async (request, reply) => {
      const run = await loadRun(request);
      await asUser(request, () => client.workflow.getHandle(run.workflowId).signal('cancel', 'api'));
      return reply.status(202).send({ runId: run.id, status: 'cancelling' });
    },
  );
  app.post<{ Params: { runId: string }; Body: { instruction: string } }>(
    '/runs/:runId/instructions',
    {
      schema: {
        tags: ['runs'],
        summary: 'Add an instruction to a running agent (update `addInstruction`)',
        security,
        params: runParams,
        body: {
          type: 'object',
          properties: { instruction: { type: 'string', minLength: 1, maxLength: 2000 } },
          required: ['instruction'],
          additionalProperties: false,
        },
        response: { ...errors, 409: problemSchema },
      },
    },
    async (request) => {
      const run = await loadRun(request);
      const outcome = await asUser(request, () =>
        client.workflow
          .getHandle(run.workflowId)
          .executeUpdate<{ accepted: true; pending: number }, [string]>('addInstruction', {
            args: [request.body.instruction],
          }),
      );
      return { runId: run.id, ...outcome };
    },
  );

  // ---- schedules ----
  app.post<{ Params: { ws: string; agentId: string }; Body: { everySeconds: number; input: string } }>(
    '/workspaces/:ws/agents/:agentId/schedules',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run an agent on a schedule (every N seconds) as the caller',
        security,
        params: agentParams,
        body: {
          type: 'object',
          properties: {
            everySeconds: { type: 'integer', minimum: 60, maximum: 31_536_000 },
            input: { type: 'string', minLength: 1, maxLength: 10_000 },
          },
          required: ['everySeconds', 'input'],
          additionalProperties: false,
        },
        response: errors,
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const found = await scoped(request, (tx) => new AgentRepository(tx).get(agentId));
      if (!found) throw notFound('agent');
      const scheduleId = `agent-schedule-${randomUUID()}`;
      const args: AgentExecutionInput = { agentId, input: request.body.input };
      await asUser(request, () =>
        client.schedule.create({
          scheduleId,
          spec: { intervals: [{ every: `${request.body.everySeconds}s` }] },
          action: {
            type: 'startWorkflow',
            workflowType: WORKFLOW_TYPE,
            taskQueue,
            args: [args],
            workflowId: `${scheduleId}-run`,
          },
        }),
      );
      return reply.status(201).send({ scheduleId, agentId, everySeconds: request.body.everySeconds });
    },
  );

  // ---- audit (workspace admins) ----
  app.get<{ Params: { ws: string }; Querystring: { limit?: number } }>(
    '/workspaces/:ws/audit',
    {
      schema: {
        tags: ['audit'],
        summary: "The workspace's audit trail (admins)",
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000 } },
        },
        response: errors,
      },
    },
    async (request) => ({
      events: await queryAuditTrail(db, user(request), {
        ...(options.scope?.auditor ? { auditor: options.scope.auditor } : {}),
        ...(request.query.limit ? { limit: request.query.limit } : {}),
      }),
    }),
  );

  return app;
}
