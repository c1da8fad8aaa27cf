/** Members of a workspace and their roles: listed, added or changed, removed (workspace admins). */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  AdminChangedError,
  LastAdminError,
  MembershipRepository,
  ScheduleRepository,
} from '../../data/repositories/index.js';
import type { RouteContext } from '../context.js';
import { ProblemError, notFound } from '../problems.js';
import { responses } from '../responses.js';
import { ID, ROLES, errors, security, workspaceParams } from '../schemas.js';
import type { WorkspaceSchedules } from '../workspace-schedules.js';

export function registerMemberRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  schedules: WorkspaceSchedules,
): void {
  const { scoped, refused, changed, scheduleRowStaleMs } = ctx;
  const { pauseSchedulesOf } = schedules;
  /**
   * A membership change that would leave no admin is refused (409 LAST_ADMIN), and one by an admin
   * removed or demoted while it waited for its turn (403, the library's code); both audited.
   */
  const keepingAnAdmin = async <T>(request: FastifyRequest, change: () => Promise<T>): Promise<T> => {
    try {
      return await change();
    } catch (err) {
      if (err instanceof AdminChangedError) throw refused(request, 'members.change', err);
      if (!(err instanceof LastAdminError)) throw err;
      throw refused(
        request,
        'members.change',
        new ProblemError(409, err.code, 'The workspace must keep at least one admin'),
      );
    }
  };
  app.get<{ Params: { ws: string }; Querystring: { limit?: number; after?: string } }>(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary:
          'List members by user id (admins), a page at a time (`after`: the `next` of the page before)',
        security,
        params: workspaceParams,
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 500 }, after: ID },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.members },
      },
    },
    async (request) => {
      const { limit = 100, after } = request.query;
      const page = await scoped(
        request,
        (tx) => new MembershipRepository(tx).page(after === undefined ? { limit } : { limit, after }),
        'admin',
      );
      return { members: page.items, ...(page.next === undefined ? {} : { next: page.next }) };
    },
  );
  app.post<{ Params: { ws: string }; Body: { userId: string; roles: string[] } }>(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary: 'Add or change a member (admins)',
        security,
        params: workspaceParams,
        body: {
          type: 'object',
          properties: { userId: ID, roles: { ...ROLES, minItems: 1 } },
          required: ['userId', 'roles'],
          additionalProperties: false,
        },
        response: { ...errors, ...responses.memberChanged },
      },
    },
    async (request, reply) => {
      const { userId, roles } = request.body;
      // The member's recent schedules read in the same transaction, after the change (and its lock):
      // nothing the member creates once re-added is among them. Listed ones created since are skipped
      // by their creation time (`since`, this process's clock).
      const since = Date.now();
      const { added, recent } = await keepingAnAdmin(request, () =>
        scoped(
          request,
          async (tx) => {
            const added = await new MembershipRepository(tx).upsert(userId, roles);
            return { added, recent: await new ScheduleRepository(tx).createdBy(userId, scheduleRowStaleMs) };
          },
          'admin',
        ),
      );
      // Schedules from an earlier membership that escaped the pause at removal (created while it was
      // being removed) would act again as of now: paused, for an admin to resume.
      changed(request, 'members.change', `member ${userId}: roles ${[...roles].sort().join(', ')}`);
      if (added === 'added') await pauseSchedulesOf(request, userId, 'added again', recent, since);
      // 201 for a member added, 200 for a membership changed (found by review: both answered 201).
      return reply
        .status(added === 'added' ? 201 : 200)
        .send({ workspaceId: request.params.ws, userId, roles });
    },
  );
  app.delete<{ Params: { ws: string; userId: string } }>(
    '/workspaces/:ws/members/:userId',
    {
      schema: {
        tags: ['members'],
        summary:
          'Remove a member (admins); their running agents are refused at the next step, their schedules paused',
        security,
        params: { type: 'object', properties: { ws: ID, userId: ID }, required: ['ws', 'userId'] },
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      // The member's recent schedules read in the same transaction, after the removal took its lock (a
      // create racing it has written its row, or meets the removal in its own check): an admin who
      // removes themselves can read nothing once it commits.
      const { removed, recent } = await keepingAnAdmin(request, () =>
        scoped(
          request,
          async (tx) => {
            const removed = await new MembershipRepository(tx).remove(request.params.userId);
            return {
              removed,
              recent: await new ScheduleRepository(tx).createdBy(request.params.userId, scheduleRowStaleMs),
            };
          },
          'admin',
        ),
      );
      if (!removed) throw notFound('member');
      changed(request, 'members.change', `member ${request.params.userId} removed`);
      await pauseSchedulesOf(request, request.params.userId, 'removed', recent);
      return reply.status(204).send();
    },
  );
}
