/** A workspace's agents: listed and read by members, created, changed and deleted by admins. */
import type { FastifyInstance } from 'fastify';
import { AgentRepository, ScheduleRepository } from '../../data/repositories/index.js';
import type { RouteContext } from '../context.js';
import { ProblemError, notFound } from '../problems.js';
import { responses } from '../responses.js';
import { NAME, PAGE_CURSOR, TEXT, agentParams, errors, security, workspaceParams } from '../schemas.js';
import type { WorkspaceSchedules } from '../workspace-schedules.js';

export function registerAgentRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  schedules: WorkspaceSchedules,
): void {
  const { user, scoped, refused, changed, scheduleRowStaleMs } = ctx;
  const { workspaceSchedules } = schedules;
  const agentBody = {
    type: 'object',
    properties: {
      name: { ...NAME, minLength: 1, maxLength: 200 },
      instructions: { ...TEXT, maxLength: 10_000 },
      model: { ...NAME, minLength: 1, maxLength: 200 },
      tools: {
        type: 'array',
        items: { type: 'string', enum: ['searchWorkspaceDocuments'] },
        uniqueItems: true,
      },
    },
    additionalProperties: false,
  } as const;
  type AgentBody = { name: string; instructions?: string; model?: string; tools?: string[] };

  app.get<{ Params: { ws: string }; Querystring: { limit?: number; before?: string } }>(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'List agents, newest first, a page at a time (`before`: the `next` of the page before)',
        security,
        params: workspaceParams,
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 500 }, before: PAGE_CURSOR },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.agents },
      },
    },
    async (request) => {
      const { limit = 100, before } = request.query;
      const page = await scoped(request, (tx) =>
        new AgentRepository(tx).page(before === undefined ? { limit } : { limit, before }),
      );
      return { agents: page.items, ...(page.next === undefined ? {} : { next: page.next }) };
    },
  );
  app.post<{ Params: { ws: string }; Body: AgentBody }>(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'Create an agent (admins)',
        security,
        params: workspaceParams,
        body: { ...agentBody, required: ['name'] },
        response: { ...errors, ...responses.agentCreated },
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
      changed(request, 'agent.create', `agent ${agent.id}: tools ${agent.tools.join(', ') || '-'}`);
      return reply.status(201).send(agent);
    },
  );
  app.get<{ Params: { ws: string; agentId: string } }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Get an agent',
        security,
        params: agentParams,
        response: { ...errors, ...responses.agent },
      },
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
        // At least one field: an empty patch changed nothing yet was recorded as an update.
        body: { ...agentBody, minProperties: 1 },
        response: { ...errors, ...responses.agent },
      },
    },
    async (request) => {
      const agent = await scoped(
        request,
        (tx) => new AgentRepository(tx).update(request.params.agentId, request.body),
        'admin',
      );
      if (!agent) throw notFound('agent');
      // Which fields, not their values: instructions are the workspace's text, not the trail's.
      changed(request, 'agent.update', `agent ${agent.id}: ${Object.keys(request.body).sort().join(', ')}`);
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
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      // An admin's, checked live before the schedules are read.
      await scoped(request, async () => undefined, 'admin');
      // A schedule that names the agent would fail every run it starts: it goes first.
      const listedAt = Date.now();
      const scheduled = (await workspaceSchedules(user(request).workspaceId)).some(
        (s) => s.agentId === agentId,
      );
      if (scheduled)
        throw refused(
          request,
          'agent.delete',
          new ProblemError(409, 'AGENT_IN_USE', 'A schedule starts runs of this agent: delete it first'),
          agentId,
        );
      // A schedule created moments ago, which the listing does not show yet, names it in its row.
      const outcome = await scoped(
        request,
        async (tx) =>
          // Rows as recent as the listing's lag, counted from when the listing was read.
          (await new ScheduleRepository(tx).namesAgent(agentId, scheduleRowStaleMs + (Date.now() - listedAt)))
            ? ('scheduled' as const)
            : new AgentRepository(tx).delete(agentId),
        'admin',
      );
      if (outcome === 'scheduled')
        throw refused(
          request,
          'agent.delete',
          new ProblemError(
            409,
            'AGENT_IN_USE',
            'A schedule starts runs of this agent: delete it first',
            'a schedule created moments ago names it (or its create was undone): delete it, or try again in a few minutes',
          ),
          agentId,
        );
      if (outcome === 'missing') throw notFound('agent');
      if (outcome === 'in-use')
        throw refused(
          request,
          'agent.delete',
          new ProblemError(409, 'AGENT_IN_USE', 'The agent has runs; their records are kept'),
          agentId,
        );
      changed(request, 'agent.delete', `agent ${agentId}`);
      return reply.status(204).send();
    },
  );
}
