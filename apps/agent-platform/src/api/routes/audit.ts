/** A workspace's audit trail, newest first, a page at a time (workspace admins). */
import type { FastifyInstance } from 'fastify';
import { queryAuditTrail, type AuditTrailFilter } from 'temporal-user-context/postgres';
import type { RouteContext } from '../context.js';
import { responses } from '../responses.js';
import { ID, errors, security, workspaceParams } from '../schemas.js';

export function registerAuditRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { db, auditor, audit, scope, user } = ctx;
  app.get<{
    Params: { ws: string };
    Querystring: { limit?: number; before?: string } & AuditTrailFilter;
  }>(
    '/workspaces/:ws/audit',
    {
      schema: {
        tags: ['audit'],
        summary: "The workspace's audit trail (admins)",
        security,
        params: workspaceParams,
        querystring: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            // The id of the last record of the previous page: the records older than it.
            before: {
              type: 'string',
              pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
            },
            // Only the records that match every one given.
            userId: ID,
            action: { type: 'string', pattern: '^[a-z][A-Za-z0-9._-]{0,127}$' },
            decision: { type: 'string', enum: ['allow', 'deny'] },
            reason: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,128}$' },
            workflowId: { type: 'string', minLength: 1, maxLength: 1000 },
          },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.audit },
      },
    },
    async (request) => {
      const limit = request.query.limit ?? 100;
      // The token's grants first (found by review: the trail's own scope skipped them, and an admin token
      // of before a demotion and promotion read the trail); the trail's scope checks the admin role again.
      await ctx.scoped(request, async () => undefined, 'admin');
      const events = await queryAuditTrail(db, user(request), {
        auditor,
        ...(scope?.appRole ? { appRole: scope.appRole } : {}),
        audit,
        limit,
        ...(request.query.before ? { before: request.query.before } : {}),
        filter: auditFilter(request.query),
      });
      // A full page may have more after it: `next` says where to go on, as the other listings do (found
      // by review: a client had to know that the last record's id is the next page's `before`).
      return { events, ...(events.length === limit ? { next: events[events.length - 1]!.id } : {}) };
    },
  );
}

/** The audit route's filter: the query's filter fields that were given. */
function auditFilter(query: AuditTrailFilter): AuditTrailFilter {
  const filter: AuditTrailFilter = {};
  if (query.userId !== undefined) filter.userId = query.userId;
  if (query.action !== undefined) filter.action = query.action;
  if (query.decision !== undefined) filter.decision = query.decision;
  if (query.reason !== undefined) filter.reason = query.reason;
  if (query.workflowId !== undefined) filter.workflowId = query.workflowId;
  return filter;
}
