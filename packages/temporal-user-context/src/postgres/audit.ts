import { z } from 'zod';
import type { AuditDecision, AuditEvent, AuditSink } from '../audit/event.js';
import { describeThrown, sanitizeField } from '../audit/sanitize.js';
import { numberOption } from '../context/number-option.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import type { SqlDatabase } from './database.js';
import { applyScope, DEFAULT_APP_ROLE, withUserScope, type UserScopeOptions } from './scope.js';
import { assertRoleName } from './ident.js';

/**
 * Columns of `audit_log`, in insert order, next to the {@link AuditEvent} field each one stores.
 * The table itself is created by the application's migrations (see apps/agent-platform).
 */
const COLUMNS = [
  ['time', 'time'],
  ['action', 'action'],
  ['decision', 'decision'],
  ['source', 'source'],
  ['reason', 'reason'],
  ['user_id', 'userId'],
  ['workspace_id', 'workspaceId'],
  ['principal', 'principal'],
  ['token_id', 'tokenId'],
  ['namespace', 'namespace'],
  ['workflow_id', 'workflowId'],
  ['run_id', 'runId'],
  ['workflow_type', 'workflowType'],
  ['activity_type', 'activityType'],
  ['activity_id', 'activityId'],
  ['attempt', 'attempt'],
  ['detail', 'detail'],
] as const satisfies readonly (readonly [string, keyof AuditEvent])[];

const INSERT_SQL = `insert into audit_log (${COLUMNS.map(([c]) => c).join(', ')}) values (${COLUMNS.map(
  (_, i) => `$${i + 1}`,
).join(', ')})`;

/** An {@link AuditSink} that can be awaited, for tests and graceful shutdown. */
export interface PostgresAuditSink extends AuditSink {
  /** Resolves when every write started so far has finished (failed writes are reported, not thrown). */
  flush(): Promise<void>;
}

/** Options of {@link postgresAuditSink}. */
export interface PostgresAuditSinkOptions {
  /** Role the inserts run as; it needs only INSERT on `audit_log`. Default `app_user`. */
  appRole?: string;
  /**
   * Called when a write fails, and with an {@link AuditBacklogError} for each event dropped because
   * `maxPending` writes are already waiting; default writes one line to stderr. Whatever it throws is
   * reported on stderr, never thrown into the caller.
   */
  onError?: (err: unknown) => void;
  /**
   * Most writes in flight at once (default 10 000). While the database stalls, further events are
   * dropped and reported to `onError` rather than queued without bound in the worker's memory.
   */
  maxPending?: number;
}

/**
 * An audit event the sink dropped instead of queueing: `maxPending` writes were still waiting for the
 * database. It carries the event, so `onError` can keep it elsewhere (e.g. a log).
 */
export class AuditBacklogError extends Error {
  override readonly name = 'AuditBacklogError';
  constructor(
    readonly event: AuditEvent,
    readonly pending: number,
  ) {
    super(`audit_log: ${pending} writes pending, event dropped`);
  }
}

/**
 * Writes {@link AuditEvent}s to `audit_log`, each in its own short transaction as the app role with
 * `app.workspace_id` set to the event's workspace (or empty for system records), so the table's
 * INSERT policy applies. The app role has no UPDATE/DELETE grant: records are append-only.
 */
export function postgresAuditSink(
  db: SqlDatabase,
  options: PostgresAuditSinkOptions = {},
): PostgresAuditSink {
  const appRole = assertRoleName(options.appRole ?? DEFAULT_APP_ROLE, 'app role');
  const maxPending = numberOption('maxPending', options.maxPending, 10_000, {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
    integer: true,
  });
  const custom = options.onError;
  // Total, like the Auditor's own reporting: a throwing onError must not leave a rejected write behind.
  const onError = (err: unknown): void => {
    try {
      if (custom) return custom(err);
    } catch (thrown) {
      err = thrown;
    }
    try {
      process.stderr.write(`temporal-user-context: audit_log insert failed: ${describeThrown(err)}\n`);
    } catch {
      // stderr itself failed: nowhere left to report to.
    }
  };
  const pending = new Set<Promise<void>>();
  return {
    emit(event) {
      if (pending.size >= maxPending) {
        onError(new AuditBacklogError(event, pending.size));
        return;
      }
      // Inside an async function so that a driver throwing synchronously also ends in onError.
      const write = (async () =>
        db.transaction(async (tx) => {
          await applyScope(tx, appRole, event.userId ?? '', event.workspaceId ?? '');
          await tx.query(
            INSERT_SQL,
            COLUMNS.map(([, field]) => event[field] ?? null),
          );
        }))()
        .catch(onError)
        .finally(() => pending.delete(write));
      pending.add(write);
      return write;
    },
    async flush() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
  };
}

/** An audit record read back, with its database id. */
export interface StoredAuditEvent extends AuditEvent {
  id: string;
}

/** Options of {@link queryAuditTrail}. */
export interface AuditTrailOptions extends Pick<UserScopeOptions, 'appRole' | 'auditor' | 'audit'> {
  /**
   * At most this many records, newest first: default 100, capped to 1–1000. Anything but a finite
   * number (NaN, ±Infinity, a string) is `USER_CONTEXT_MISCONFIGURED`.
   */
  limit?: number;
  /**
   * The id of the last record of the previous page: the records older than it. A record of another
   * workspace is invisible here, so its id gives an empty page. Not a UUID: `USER_CONTEXT_MISCONFIGURED`.
   */
  before?: string;
  /**
   * Only the records that match every field given: who (`userId`), what (`action`, e.g.
   * `activity.execute`), how it ended (`decision`, `reason`, e.g. a code) and where (`workflowId`).
   * Compared as stored (sanitised text, capped at 256 characters: a longer value also matches records
   * whose value shares its first 256); strings up to 1 000 characters, else
   * `USER_CONTEXT_MISCONFIGURED`.
   */
  filter?: AuditTrailFilter;
}

/** Fields {@link queryAuditTrail} can select records by; see {@link AuditTrailOptions.filter}. */
export interface AuditTrailFilter {
  userId?: string;
  action?: string;
  decision?: AuditDecision;
  reason?: string;
  workflowId?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const filterSchema = z
  .object({
    userId: z.string().min(1).max(1000),
    action: z.string().min(1).max(1000),
    decision: z.enum(['allow', 'deny']),
    reason: z.string().min(1).max(1000),
    workflowId: z.string().min(1).max(1000),
  })
  .partial()
  .strict();

/** Filter fields and their columns, in the order of the query's parameters `$3` on. */
const FILTER_COLUMNS = [
  ['userId', 'user_id'],
  ['action', 'action'],
  ['decision', 'decision'],
  ['reason', 'reason'],
  ['workflowId', 'workflow_id'],
] as const satisfies ReadonlyArray<readonly [keyof AuditTrailFilter, string]>;

/**
 * The audit trail of the caller's workspace, newest first, a page at a time (`before`: the last id
 * of the previous page), so that no number of newer records puts older ones out of an admin's reach. Only a workspace admin (effective role
 * `admin` after the live membership check) may call it; RLS limits the rows to that workspace.
 * @throws UserContextError `USER_CONTEXT_ROLE_MISSING` for a non-admin, `USER_CONTEXT_MEMBERSHIP_REVOKED`.
 */
export async function queryAuditTrail(
  db: SqlDatabase,
  ctx: UserContext,
  options: AuditTrailOptions = {},
): Promise<StoredAuditEvent[]> {
  // Capped, as documented; but NaN would reach the query as a limit Postgres refuses (an error, not a
  // refusal), and Infinity would look like a choice: both are named refusals.
  const requested = numberOption('limit', options.limit, 100, {
    min: -Number.MAX_VALUE,
    max: Number.MAX_VALUE,
  });
  const limit = Math.min(Math.max(Math.trunc(requested), 1), 1000);
  const { before } = options;
  if (before !== undefined && (typeof before !== 'string' || !UUID.test(before)))
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'before must be the id of an audit record');
  const parsed = filterSchema.safeParse(options.filter ?? {});
  if (!parsed.success)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'filter takes userId, action, reason, workflowId (1 to 1000 characters) and decision (allow, deny)',
    );
  // Records hold sanitised, capped strings (sanitizeField): a value is compared as it was stored, so
  // that a workflow id longer than the cap still finds its records.
  const filter: AuditTrailFilter = Object.fromEntries(
    Object.entries(parsed.data).map(([field, value]) => [field, sanitizeField(value)]),
  );
  const columns = `id::text as id, ${COLUMNS.map(([c]) => c).join(', ')}`;
  // One statement for every combination: a filter left out is a null parameter that matches all.
  const where = FILTER_COLUMNS.map(([, column], i) => `($${i + 3}::text is null or ${column} = $${i + 3})`);
  const sql = `select ${columns} from audit_log
    where ($2::uuid is null or (time, id) < (select time, id from audit_log where id = $2::uuid))
      and ${where.join(' and ')}
    order by time desc, id desc limit $1`;
  return withUserScope(
    db,
    ctx,
    async (tx) => {
      // Keyset paging on (time, id): stable while new records arrive. The cursor row is read under
      // RLS too: another workspace's id matches nothing.
      const { rows } = await tx.query<Record<string, unknown>>(sql, [
        limit,
        before ?? null,
        ...FILTER_COLUMNS.map(([field]) => filter[field] ?? null),
      ]);
      return rows.map(toEvent);
    },
    { ...options, requireRole: 'admin' },
  );
}

function toEvent(row: Record<string, unknown>): StoredAuditEvent {
  const out: Record<string, unknown> = { id: row.id };
  for (const [column, field] of COLUMNS) {
    const value = row[column];
    if (value === null || value === undefined) continue;
    out[field] = value instanceof Date ? value.toISOString() : value;
  }
  return out as unknown as StoredAuditEvent;
}
