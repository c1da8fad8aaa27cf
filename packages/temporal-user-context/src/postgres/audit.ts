import { z } from 'zod';
import type { AuditDecision, AuditEvent, AuditSink } from '../audit/event.js';
import { describeThrown, isSanitized, sanitizeAuditEvent, sanitizeField } from '../audit/sanitize.js';
import { numberOption } from '../context/number-option.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import { CommitOutcomeUnknownError, type SqlDatabase } from './database.js';
import {
  applyScope,
  DEFAULT_APP_ROLE,
  enterSealedScope,
  withUserScope,
  type UserScopeOptions,
} from './scope.js';
import { resolveSeal } from './seal.js';
import { assertRoleName } from './ident.js';
import { reportOnStderr } from '../audit/stderr.js';

/** The table the sink writes and the trail reads (on the search path), whose INSERT policy the guard checks. */
export const AUDIT_TABLE = 'audit_log';

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

/** Most records one transaction inserts (17 parameters each, far below PostgreSQL's 65 535). */
const MAX_BATCH = 100;

/** The INSERT of `rows` records, built once per row count. */
const insertSql = (() => {
  const cache = new Map<number, string>();
  return (rows: number): string => {
    let sql = cache.get(rows);
    if (sql === undefined) {
      const tuples = Array.from(
        { length: rows },
        (_, r) => `(${COLUMNS.map((_, i) => `$${r * COLUMNS.length + i + 1}`).join(', ')})`,
      );
      sql = `insert into ${AUDIT_TABLE} (${COLUMNS.map(([c]) => c).join(', ')}) values ${tuples.join(', ')}`;
      cache.set(rows, sql);
    }
    return sql;
  };
})();

/** Options of {@link PostgresAuditSink.flush}. */
export interface AuditFlushOptions {
  /**
   * Most milliseconds to wait, an integer from 1 to 3 600 000 (default: no limit). When it passes (a
   * database that hangs at shutdown), every record still waiting is reported to `onError` with an
   * {@link AuditFlushTimeoutError} (`written: 'no'`), and so is every record whose transaction is still
   * open (`written: 'unknown'`: it may yet commit, once per record; should the transaction then fail,
   * the record is reported again with that failure), so that none is lost without a trace; then it
   * resolves.
   */
  timeoutMs?: number;
}

/** An {@link AuditSink} that can be awaited, for tests and graceful shutdown. */
export interface PostgresAuditSink extends AuditSink {
  /**
   * Resolves when every record emitted so far has been written or reported to `onError` (queued ones
   * included; failed writes are reported, not thrown), or when `timeoutMs` has passed.
   */
  flush(options?: AuditFlushOptions): Promise<void>;
}

/**
 * A record `flush({ timeoutMs })` gave up on: still waiting (`written: 'no'`), or in a transaction that
 * had not finished (`written: 'unknown'`). It carries the record, for `onError` to keep elsewhere.
 */
export class AuditFlushTimeoutError extends Error {
  override readonly name = 'AuditFlushTimeoutError';
  constructor(
    readonly event: AuditEvent,
    readonly written: 'no' | 'unknown',
  ) {
    super(
      written === 'no'
        ? 'audit_log: flush deadline passed, record not written'
        : 'audit_log: flush deadline passed during its transaction, record perhaps written',
    );
  }
}

/** Options of {@link postgresAuditSink}. */
export interface PostgresAuditSinkOptions {
  /** Role the inserts run as; it needs only INSERT on `audit_log`. Default `app_user`. */
  appRole?: string;
  /**
   * Enter a workspace's records through the sealed scope (`scopeSealSql`; `true`: schema `user_scope`),
   * as a workspace-only scope (no user, no roles), and system records (no workspace) in the system
   * scope, for an INSERT policy that admits records by `<schema>.sink_workspace_id()` and
   * `<schema>.system_scope()`: such a policy admits no record from SQL run in a user's scope
   * (`scopeSealSql` shows it).
   * Default: the database adapter's `seal`.
   */
  seal?: boolean | { schema?: string };
  /**
   * Called for each record that was not written, with the record (sanitised) as `event`: after its
   * write failed (`err`: what the driver threw), or when it was dropped because `maxPending` records,
   * or `maxPendingPerWorkspace` of its workspace, were already waiting (`err`: an
   * {@link AuditBacklogError}). Keep `event` elsewhere if it must not
   * be lost. Default: one JSON line on stderr holding the reason and the record (`audit`), also when a
   * given `onError` throws. Whatever it throws is reported there, never thrown into the caller.
   */
  onError?: (err: unknown, event: AuditEvent) => void;
  /**
   * Most records waiting or being written at once (default 10 000). While the database stalls, further
   * events are dropped and reported to `onError` rather than queued without bound in the process's
   * memory.
   */
  maxPending?: number;
  /**
   * Most records of one workspace (or of no workspace: system records) waiting at once, an integer from 1
   * to `maxPending` (default a quarter of `maxPending`, at least 1). Past it, that workspace's further
   * records are dropped and reported while other workspaces' still queue: while the database is slow,
   * one workspace that makes many records (a member whose every request is refused) cannot crowd the
   * others' out of the backlog.
   */
  maxPendingPerWorkspace?: number;
  /**
   * Most transactions (so pooled connections) the sink uses at once: an integer from 1 to 100, default
   * 2. Records wait in the sink's own queue, not in the pool's, so that a burst of records never
   * delays the application's own transactions by more than this many connections. One transaction
   * writes some 1 500 records a second of distinct workspaces on a local database (up to 100 of one
   * workspace in one INSERT); on a distant one, raise it, or records past `maxPending` are dropped.
   */
  concurrency?: number;
  /**
   * Most milliseconds each statement of the sink's transactions may take, an integer from 1 to
   * 3 600 000 (default 30 000; `SET LOCAL statement_timeout`): a write that waits on a lock (a
   * maintenance job holding `audit_log`) fails and is tried again as any other failure before COMMIT,
   * instead of holding one of the sink's connections and its records without end.
   */
  statementTimeoutMs?: number;
}

/**
 * An audit event the sink dropped instead of queueing: `maxPending` records were still waiting for the
 * database (`limit: 'all'`), or `maxPendingPerWorkspace` of its workspace (`limit: 'workspace'`;
 * `pending` counts that workspace's). It carries the event, so `onError` can keep it elsewhere (e.g. a
 * log).
 */
export class AuditBacklogError extends Error {
  override readonly name = 'AuditBacklogError';
  constructor(
    readonly event: AuditEvent,
    readonly pending: number,
    readonly limit: 'all' | 'workspace' = 'all',
  ) {
    super(
      limit === 'all'
        ? `audit_log: ${pending} writes pending, event dropped`
        : `audit_log: ${pending} writes of its workspace pending, event dropped`,
    );
  }
}

/**
 * The workspace a record is inserted under ('' for a system record): records of one workspace share a
 * transaction, entered for the workspace alone (no user), so the records' users do not split batches.
 */
function scopeKey(event: AuditEvent): string {
  return event.workspaceId ?? '';
}

/**
 * Whether the database refused what was sent (a value: class 22; a constraint: class 23; the
 * row-level security policy or a grant: 42501): after a failed INSERT each record is tried alone; a
 * retry of the batch cannot help (nor after a 42501 of the scope's statement, a login that may not
 * switch to the app role, which is no record's fault).
 */
function rowsRefused(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23') || code === '42501');
}

/**
 * The default `onError`: the record as one JSON line on stderr (pino's shape, level 50 `error`), so
 * that a record the table did not get is still in the process's log. Never throws.
 */
function reportUnwritten(err: unknown, event: AuditEvent, handlerFailure?: unknown): void {
  try {
    const msg =
      err instanceof AuditBacklogError
        ? `audit_log backlog full: ${describeThrown(err)}`
        : err instanceof CommitOutcomeUnknownError
          ? `audit_log insert unconfirmed (its COMMIT's answer was lost: the record may be in the table): ${describeThrown(err)}`
          : `audit_log insert failed: ${describeThrown(err)}`;
    // JSON escapes every control character, and the record is sanitised (no U+2028/U+2029, no lone
    // surrogate): one line, whatever it held.
    const line = JSON.stringify({
      level: 50,
      time: Date.now(),
      name: 'temporal-user-context',
      msg,
      ...(handlerFailure === undefined ? {} : { onErrorFailed: describeThrown(handlerFailure) }),
      audit: event,
    });
    reportOnStderr(`${line}\n`);
  } catch {
    // stderr itself failed: nowhere left to report to.
  }
}

/** Pauses before a batch that failed before its COMMIT is tried again (twice at most). */
const RETRY_MS = [100, 400] as const;
/**
 * Pauses before a batch that failed for want of the database (no connection, a connection lost, no
 * answer in time) is tried again: about a minute in all, what a restart or a failover takes. Found by
 * review: after the two short retries, every record of a few seconds' outage went to stderr only, never
 * to the table admins read. The queue's bounds (`maxPending`) still hold meanwhile.
 */
const OUTAGE_RETRY_MS = [100, 400, 1000, 2000, 4000, 8000, 15_000, 30_000] as const;

/** What `pg` says when a connection is lost, refused or silent. */
const LOST_CONNECTION =
  /^(Connection terminated|Query read timeout|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/**
 * Whether `err` says the database could not be reached or answered nothing: a socket's error
 * (`ECONNREFUSED`, `ECONNRESET`, ...), `pg`'s lost connection, `Query read timeout` or pool timeout, or a
 * SQLSTATE of a lost connection (class 08), of a server shutting down or starting (57P01–57P03), or of
 * a session it closed for idling (57P05, as the adapter counts it: found by review). Not 57P04, a
 * database dropped: no retry brings it back.
 */
const CLOSED_BY_SERVER: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', '57P05']);
function databaseUnreachable(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code))
    return code.startsWith('08') || CLOSED_BY_SERVER.has(code);
  return typeof message === 'string' && LOST_CONNECTION.test(message);
}

/** A failed insert, and how far its transaction got (see `insert` in {@link postgresAuditSink}). */
interface Failure {
  readonly err: unknown;
  readonly phase: 'scope' | 'insert' | 'commit';
}

/**
 * Whether trying a failed batch again is safe and may help: it failed before COMMIT (at COMMIT it may
 * have taken effect: a retry could write it twice into a table nobody may delete from), and not because
 * the database refused what was sent.
 */
function retryable(failure: Failure): boolean {
  return failure.phase !== 'commit' && !rowsRefused(failure.err);
}

interface Queued {
  readonly event: AuditEvent;
  /** Settles the promise `emit` returned. */
  readonly done: () => void;
}

/**
 * Writes {@link AuditEvent}s to `audit_log` as the app role with `app.workspace_id` set to the event's
 * workspace (or empty for system records), so the table's INSERT policy applies; with `seal`, through
 * the sealed scope of that workspace alone, or the system scope. The app role has no UPDATE/DELETE
 * grant: records are append-only.
 *
 * Records wait in the sink's own queue (at most `maxPending`) and are written by at most `concurrency`
 * transactions at once, each inserting up to 100 waiting records of one workspace in one statement
 * (`app.user_id` is left empty: the INSERT policy must not ask for a user, as the platform's does
 * not): a burst of records holds that many pooled connections, not the whole pool. A transaction
 * whose rows the database refuses is tried again one record at a time, so that one refused record does
 * not take others with it; one that failed before its COMMIT (no connection, a deadlock, a timeout) is
 * tried again twice, after 0.1 and 0.4 s, or, when the database could not be reached or answered
 * nothing, for about a minute (0.1 s doubling to 30 s); one that failed at COMMIT is not retried, since
 * the COMMIT may have taken effect. Each record not written goes to `onError` with the record. An event given to the
 * sink directly, not through an `Auditor`, is sanitised here ({@link sanitizeAuditEvent}: own fields
 * only, each of its type). A database that hangs holds the queue: records past `maxPending` (or past
 * `maxPendingPerWorkspace` of one workspace) are dropped and reported, and `flush({ timeoutMs })` gives
 * up on the rest, reporting each.
 */
export function postgresAuditSink(
  db: SqlDatabase,
  options: PostgresAuditSinkOptions = {},
): PostgresAuditSink {
  const appRole = assertRoleName(options.appRole ?? DEFAULT_APP_ROLE, 'app role');
  const seal = resolveSeal(options.seal, db);
  const maxPending = numberOption('maxPending', options.maxPending, 10_000, {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
    integer: true,
  });
  const maxPendingPerWorkspace = numberOption(
    'maxPendingPerWorkspace',
    options.maxPendingPerWorkspace,
    Math.max(1, Math.ceil(maxPending / 4)),
    { min: 1, max: maxPending, integer: true },
  );
  const concurrency = numberOption('concurrency', options.concurrency, 2, {
    min: 1,
    max: 100,
    integer: true,
  });
  const statementTimeout = `${numberOption('statementTimeoutMs', options.statementTimeoutMs, 30_000, {
    min: 1,
    max: 3_600_000,
    integer: true,
  })}ms`;
  const custom = options.onError;
  // Total, like the Auditor's own reporting: a throwing onError must not leave a rejected write behind,
  // nor lose the record: it goes to stderr then.
  const onError = (err: unknown, event: AuditEvent): void => {
    if (!custom) return reportUnwritten(err, event);
    try {
      custom(err, event);
    } catch (thrown) {
      reportUnwritten(err, event, thrown);
    }
  };

  /**
   * One transaction inserting `events`; resolves to its failure, if any, with how far it got: `scope`
   * (no connection, BEGIN or the scope's statement failed), `insert` (the INSERT failed), or `commit`
   * (the statements ran, then the transaction failed: it may have committed).
   */
  const insert = async (events: readonly AuditEvent[]): Promise<Failure | undefined> => {
    let phase: Failure['phase'] = 'scope';
    try {
      await db.transaction(async (tx) => {
        // First, so that it bounds the statements after it (not this one, which waits on nothing).
        await tx.query(`select pg_catalog.set_config('statement_timeout', $1, true)`, [statementTimeout]);
        // No user: the records of a batch may name several, and the policy needs none.
        const workspace = scopeKey(events[0]!);
        // Sealed, a workspace's records in a scope of the workspace alone, the others in the system scope.
        if (seal !== undefined) await enterSealedScope(tx, appRole, seal, '', workspace, []);
        else await applyScope(tx, appRole, '', workspace);
        phase = 'insert';
        await tx.query(
          insertSql(events.length),
          // Sanitised records (frozen, own fields only): read directly.
          events.flatMap((event) => COLUMNS.map(([, field]) => event[field] ?? null)),
        );
        phase = 'commit';
      });
      return undefined;
    } catch (err) {
      // Also what a driver throws synchronously: every failure reaches a handler.
      return { err, phase };
    }
  };

  /**
   * Writes one batch; never rejects. A failure before COMMIT (no connection, a refused scope, a
   * deadlock, a statement timeout) wrote nothing, and is tried again after a pause, twice (for about
   * a minute when the database is unreachable); rows the
   * database refused are tried one record at a time; a failure at COMMIT is reported, never retried.
   */
  const write = async (batch: readonly Queued[]): Promise<void> => {
    const events = batch.map((q) => q.event);
    let failure = await insert(events);
    for (let i = 0; failure && retryable(failure); i++) {
      const pauses = databaseUnreachable(failure.err) ? OUTAGE_RETRY_MS : RETRY_MS;
      if (i >= pauses.length) break;
      await new Promise((resolve) => setTimeout(resolve, pauses[i]));
      failure = await insert(events);
    }
    if (!failure) return;
    if (batch.length === 1 || failure.phase !== 'insert' || !rowsRefused(failure.err)) {
      for (const event of events) onError(failure.err, event);
      return;
    }
    for (const event of events) {
      const alone = await insert([event]);
      if (alone) onError(alone.err, event);
    }
  };

  /**
   * Waiting records by workspace, in the order their workspaces first waited: a batch takes the oldest
   * workspace's first records, and a workspace with more left goes to the back, so that one busy
   * workspace does not hold the others back. Every step is proportional to the batch, not the queue.
   */
  const queues = new Map<string, Queued[]>();
  let queued = 0;
  /** Records taken from the queue whose transaction has not settled. */
  let writing = 0;
  const running = new Set<Promise<void>>();
  /** The batches of those transactions, for a flush that gives up on them. */
  const inFlight = new Set<readonly Queued[]>();
  /** Batches a flush already reported as perhaps written: a later flush does not report them again. */
  const reportedUnknown = new WeakSet<readonly Queued[]>();

  const take = (): Queued[] => {
    const [key, waiting] = queues.entries().next().value as [string, Queued[]];
    queues.delete(key);
    const batch = waiting.length <= MAX_BATCH ? waiting : waiting.splice(0, MAX_BATCH);
    if (batch !== waiting) queues.set(key, waiting);
    queued -= batch.length;
    return batch;
  };

  const pump = (): void => {
    while (running.size < concurrency && queued > 0) {
      const batch = take();
      writing += batch.length;
      inFlight.add(batch);
      const run: Promise<void> = write(batch).finally(() => {
        writing -= batch.length;
        inFlight.delete(batch);
        running.delete(run);
        for (const { done } of batch) done();
        pump();
      });
      running.add(run);
    }
  };

  return {
    emit(event) {
      // The Auditor's records are clean already; one given to the sink directly is made so here.
      const clean = isSanitized(event) ? event : sanitizeAuditEvent(event);
      const pending = queued + writing;
      if (pending >= maxPending) {
        onError(new AuditBacklogError(clean, pending), clean);
        return;
      }
      const key = scopeKey(clean);
      const waiting = queues.get(key);
      if (waiting !== undefined && waiting.length >= maxPendingPerWorkspace) {
        onError(new AuditBacklogError(clean, waiting.length, 'workspace'), clean);
        return;
      }
      // The executor runs now: the record is queued (and a write started) before emit returns.
      return new Promise<void>((done) => {
        if (waiting) waiting.push({ event: clean, done });
        else queues.set(key, [{ event: clean, done }]);
        queued++;
        pump();
      });
    },
    async flush(flushOptions: AuditFlushOptions = {}) {
      const timeoutMs =
        flushOptions.timeoutMs === undefined
          ? undefined
          : numberOption('flush timeoutMs', flushOptions.timeoutMs, 0, {
              min: 1,
              max: 3_600_000,
              integer: true,
            });
      // A write that ends starts the next one before its own promise settles: loop until none is left.
      const drained = (async () => {
        while (running.size > 0) await Promise.all([...running]);
      })();
      if (timeoutMs === undefined) return drained;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = await Promise.race([
        drained.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (!expired) return;
      for (const waiting of queues.values())
        for (const { event, done } of waiting) {
          onError(new AuditFlushTimeoutError(event, 'no'), event);
          done();
        }
      queues.clear();
      queued = 0;
      for (const batch of inFlight) {
        if (reportedUnknown.has(batch)) continue;
        reportedUnknown.add(batch);
        for (const { event } of batch) onError(new AuditFlushTimeoutError(event, 'unknown'), event);
      }
    },
  };
}

/** An audit record read back, with its database id. */
export interface StoredAuditEvent extends AuditEvent {
  id: string;
}

/** Options of {@link queryAuditTrail}. */
export interface AuditTrailOptions extends Pick<UserScopeOptions, 'appRole' | 'auditor' | 'audit' | 'seal'> {
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
 * @throws UserContextError `USER_CONTEXT_ROLE_MISSING` for a non-admin, `USER_CONTEXT_MISCONFIGURED` for a
 *   bad `limit`, `before` or filter, and every refusal of `withUserScope` (`USER_CONTEXT_MEMBERSHIP_REVOKED`
 *   first among them).
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
