import { markRecorded } from '../audit/recorded.js';
import { defaultAuditor, type Auditor } from '../audit/sinks.js';
import type { AuditEvent } from '../audit/event.js';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { parseUserContext, sameUserContext, type UserContext } from '../context/schema.js';
import { currentScope, settledScope, type ActivityScope } from '../worker/scope.js';
import {
  CommitOutcomeUnknownError,
  isTransactionEnded,
  leadingWords,
  transactionControl,
  type SqlDatabase,
  type SqlQueryable,
  type SqlResult,
  type SqlRow,
} from './database.js';
import { numberOption } from '../context/number-option.js';
import { assertRoleName, quoteIdent } from './ident.js';
import { SEAL_SQLSTATES, resolveSeal } from './seal.js';

/** Default name of the non-owner role that scoped transactions switch to. */
export const DEFAULT_APP_ROLE = 'app_user';

/** Transaction-local settings that row-level security policies read. */
export const SCOPE_SETTINGS = {
  userId: 'app.user_id',
  workspaceId: 'app.workspace_id',
  /** Comma-separated effective roles, set only after the live membership check passed. */
  roles: 'app.roles',
} as const;

/** Audit fields a caller can add to the `db.scope` records (Temporal ids of the activity, ...). */
export type ScopeAuditFields = Partial<
  Pick<
    AuditEvent,
    | 'namespace'
    | 'workflowId'
    | 'runId'
    | 'workflowType'
    | 'activityType'
    | 'activityId'
    | 'attempt'
    | 'tokenId'
    | 'source'
    | 'detail'
  >
>;

/** Options of {@link withUserScope}: the roles to switch to, the live checks, and the audit. */
export interface UserScopeOptions {
  /** Role to `SET LOCAL ROLE` to. Must not own tables nor have BYPASSRLS. Default {@link DEFAULT_APP_ROLE}. */
  appRole?: string;
  /** Refuse with `USER_CONTEXT_ROLE_MISSING` unless this role survives the membership intersection. */
  requireRole?: string;
  /**
   * Where `db.scope` decisions go. Default: inside an activity or Nexus handler of a `UserContextPlugin`
   * worker, the plugin's auditor; elsewhere the process's default (pino on stdout, `defaultAuditor()`
   * from `temporal-user-context`): every refusal is recorded somewhere, and every grant unless
   * `auditAllow: false`.
   */
  auditor?: Auditor;
  /**
   * Enter through the sealed scope installed by `scopeSealSql` (`true`: schema `user_scope`): policies
   * that read `<schema>.workspace_id()` then see nothing once SQL inside the scope changed a setting, and
   * the scope cannot be entered again in its transaction (docs/data-isolation.md, _Sealed scopes_).
   * Default: the database adapter's `seal` (off unless it was made with one).
   */
  seal?: boolean | { schema?: string };
  /** Also audit successful scopes (default true: every decision leaves a record). */
  auditAllow?: boolean;
  /**
   * Most milliseconds each statement of the scope may take, an integer from 1 to 3 600 000
   * (`SET LOCAL statement_timeout`, sent first, so that entering the scope is bounded too). A statement
   * past it fails with the database's `57014` and the scope rolls back: a query blocked on a lock (a
   * migration, a maintenance job) then ends instead of holding its pooled connection, and the activity,
   * without end. Default: the connection's own setting, which a `pg` Pool's `statement_timeout` option
   * sets for all its statements (the agent platform's way). A `statement_timeout` set on the *app* role
   * does not apply (`SET LOCAL ROLE` does not load a role's settings; the login role's do). PGlite runs
   * every statement to its end whatever this says.
   */
  statementTimeoutMs?: number;
  /**
   * Extra ids for the audit records. Default: inside an activity or Nexus handler of a
   * `UserContextPlugin` worker, its execution ids, and its token id when the scope is for the activity's
   * own user.
   */
  audit?: ScopeAuditFields;
}

/** What the callback of {@link withUserScope} receives. */
export interface ScopedTransaction extends SqlQueryable {
  /** `ctx.roles ∩ stored membership roles`, read in this transaction. */
  readonly effectiveRoles: readonly string[];
  /** The validated context the transaction is scoped to. */
  readonly context: UserContext;
}

/**
 * Session state a scope must not inherit, counted in the statement that opens it. The adapters reset
 * the session after each transaction (`SESSION_RESET`), but work outside any transaction (a pool's
 * `query`) can leave cursors `WITH HOLD` (their rows read with the declarer's rights, readable by
 * whoever fetches), `LISTEN` channels, and temporary relations or types, which the search path looks
 * up before any schema: a temporary `memberships` would answer the scope's membership check, a
 * temporary type could stand in for a cast. Every name is schema-qualified, the casts' too. The catalogs
 * are scanned only on a connection that has had a temporary schema.
 */
const LEFTOVERS = `(select pg_catalog.count(*) from pg_catalog.pg_cursors where is_holdable)::pg_catalog.int4 as held_cursors,
            (select pg_catalog.count(*) from pg_catalog.pg_listening_channels())::pg_catalog.int4 as channels,
            (case when pg_catalog.pg_my_temp_schema() operator(pg_catalog.=) 0::pg_catalog.oid then 0
                  else (select pg_catalog.count(*) from pg_catalog.pg_class
                         where relnamespace operator(pg_catalog.=) pg_catalog.pg_my_temp_schema())
                       operator(pg_catalog.+) (select pg_catalog.count(*) from pg_catalog.pg_type
                         where typnamespace operator(pg_catalog.=) pg_catalog.pg_my_temp_schema())
             end)::pg_catalog.int4 as temp_objects`;

/** What {@link LEFTOVERS} counts. */
interface Leftovers {
  held_cursors: unknown;
  channels: unknown;
  temp_objects: unknown;
}

/** SQLSTATE of a statement sent in a transaction an earlier error aborted. */
const IN_FAILED_TRANSACTION = '25P02';

/** The refusal of a connection carrying {@link LEFTOVERS}, or undefined. */
function leftoverRefusal(row: Leftovers | undefined): UserContextError | undefined {
  // Anything but the integer 0 counts as found: a count that is no number was not ours to trust.
  const found = (count: unknown) => count !== 0;
  const names = row
    ? [
        found(row.held_cursors) ? 'cursors WITH HOLD' : '',
        found(row.channels) ? 'LISTEN channels' : '',
        found(row.temp_objects) ? 'temporary tables or types' : '',
      ].filter(Boolean)
    : ['state the check could not count'];
  return names.length === 0
    ? undefined
    : new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `before the scope: the connection holds ${names.join(', ')}`,
      );
}

/**
 * Statements of a scope's callback that would change what the scope is, refused before they are sent
 * (the check at the scope's end catches the same done through functions, `set_config`): `SET LOCAL
 * ROLE`, `SET LOCAL SESSION AUTHORIZATION`, `SET LOCAL app.…` (the settings policies read), `DO`
 * blocks, which run any statement out of sight of this check, and `LISTEN`, which outlives the scope.
 */
function scopeChangeRefusal(sql: string): UserContextError | undefined {
  const [first, second, third] = leadingWords(sql, 3);
  // `app.workspace_id` reads as the word `app`; quoted, `"app.workspace_id"`, as the whole name; a
  // Unicode-escaped name (`U&"\0072ole"`) is not read at all, and refused.
  const changed =
    third === 'role' ||
    third === 'session' ||
    third === 'session_authorization' ||
    (third?.startsWith('u&"') ?? false);
  const changes =
    first === 'do' ||
    // LISTEN takes effect at COMMIT: the check at the scope's end cannot see it yet.
    first === 'listen' ||
    (first === 'set' &&
      second === 'local' &&
      (changed || third === 'app' || (third?.startsWith('app.') ?? false)));
  return changes
    ? new UserContextError(
        ErrorCodes.MISCONFIGURED,
        'a statement inside a database scope that changes its role or settings or outlives it (SET LOCAL ROLE, SET LOCAL app.*, DO, LISTEN)',
      )
    : undefined;
}

/**
 * Switches the current transaction to `appRole` and sets the scope settings, all transaction-local, in
 * one statement: `set_config('role', …, true)` is `SET LOCAL ROLE` (the same setting, the same
 * membership check), and lets the role travel as a bind parameter like the values: nothing is spliced
 * into SQL.
 * @internal exported for the audit sink's scopes and for tests; use {@link withUserScope}.
 */
export async function applyScope(
  tx: SqlQueryable,
  appRole: string,
  userId: string,
  workspaceId: string,
): Promise<void> {
  const { rows } = await entryStatement<Leftovers>(
    tx,
    // Schema-qualified: `SET LOCAL ROLE` is syntax, a function is looked up on the search path, where a
    // schema before pg_catalog could hold a `set_config` that does nothing. The same statement counts
    // what an earlier transaction on this connection left behind (LEFTOVERS).
    `select pg_catalog.set_config('role', $1, true), pg_catalog.set_config('${SCOPE_SETTINGS.userId}', $2, true),
            pg_catalog.set_config('${SCOPE_SETTINGS.workspaceId}', $3, true), ${LEFTOVERS}`,
    [assertRoleName(appRole, 'app role'), userId, workspaceId],
  );
  const inherited = leftoverRefusal(rows[0]);
  if (inherited) throw inherited;
}

/** What each SQLSTATE the seal's functions raise means, as the reason of a refusal. */
const SEAL_REASONS: Readonly<Record<string, string>> = {
  [SEAL_SQLSTATES.enteredTwice]:
    'the transaction has entered a sealed scope already (or has a transaction id: it wrote before entering)',
  [SEAL_SQLSTATES.duplicateMembership]:
    'memberships has more than one row for this user and workspace (it needs its primary key)',
  [SEAL_SQLSTATES.noWorkspace]: "a sealed scope of a user needs the user's workspace",
  [SEAL_SQLSTATES.notAppRoleMember]:
    'the login role may not switch to the app role the sealed scope was installed for',
};

/**
 * A scope's first statement (the role switch), its refusals named: a login that may not become the
 * app role fails `set_config('role', …)` with 42501 before the seal's own check (UC004) could run.
 */
async function entryStatement<R extends object>(
  tx: SqlQueryable,
  sql: string,
  params: readonly unknown[],
): Promise<SqlResult<R>> {
  try {
    return await tx.query<R>(sql, params);
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown } | null;
    if (e?.code === '42501' && typeof e.message === 'string' && /\bset role\b/i.test(e.message))
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'the login role may not switch to the app role', {
        cause: err,
      });
    throw sealRefusal(err) ?? err;
  }
}

/**
 * The refusal an error of the seal's functions stands for, or undefined for any other error (no such
 * function, no privilege: the database's error, as for a table the unsealed scope could not read; the
 * start-up guard names a scope that is not installed).
 */
function sealRefusal(err: unknown): UserContextError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  const reason =
    typeof code === 'string' && Object.hasOwn(SEAL_REASONS, code) ? SEAL_REASONS[code] : undefined;
  return reason === undefined
    ? undefined
    : new UserContextError(ErrorCodes.MISCONFIGURED, reason, { cause: err });
}

/**
 * Enters a sealed scope (`scopeSealSql`) in one statement: the role switch, `<schema>.enter`, which
 * checks the membership and seals the settings, and the count of {@link LEFTOVERS}. Returns the
 * effective roles, `[]` when none is left, null without a membership row (and for a workspace-only
 * scope, `userId` empty, and the system scope, both empty).
 * @internal exported for the audit sink and tests; use {@link withUserScope}.
 */
export async function enterSealedScope(
  tx: SqlQueryable,
  appRole: string,
  schema: string,
  userId: string,
  workspaceId: string,
  roles: readonly string[],
): Promise<string[] | null> {
  const { rows } = await entryStatement<Leftovers & { effective: unknown }>(
    tx,
    // The role first, then `enter`, which seals the settings. (EXECUTE is checked as the statement
    // starts, as the login role: `enter` is executable by every role and checks the login itself.)
    `select pg_catalog.set_config('role', $1, true) as role,
            ${quoteIdent(schema)}.enter($2, $3, $4::pg_catalog.text[]) as effective, ${LEFTOVERS}`,
    [assertRoleName(appRole, 'app role'), userId, workspaceId, [...roles]],
  );
  const inherited = leftoverRefusal(rows[0]);
  if (inherited) throw inherited;
  const effective = rows[0]?.effective;
  if (effective === null) return null;
  // What the database says must be a list of roles the context has: anything else is no answer.
  if (!Array.isArray(effective) || !effective.every((r) => typeof r === 'string' && roles.includes(r)))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the sealed scope's effective roles are not the context's",
    );
  return effective as string[];
}

/**
 * Checks at the end of a scope's callback, before COMMIT, that the transaction is still the scope it
 * opened: the same role and settings. A callback's `set_config`, or a `SET ROLE` inside a function,
 * would otherwise carry its writes into another workspace. A refusal rolls the transaction back, and
 * with it every such change. (What it left at session level the adapter's reset undoes.)
 */
async function scopeIntactRefusal(
  tx: SqlQueryable,
  appRole: string,
  context: UserContext,
  effectiveRoles: readonly string[],
  seal: string | undefined,
): Promise<UserContextError | undefined> {
  // Sealed, the values as the policies read them: NULL once a setting no longer matches the seal.
  const s = seal === undefined ? undefined : quoteIdent(seal);
  const { rows } = await tx.query<{ role: string; user_id: string; workspace_id: string; roles: string }>(
    s === undefined
      ? `select current_user::pg_catalog.text as role,
            pg_catalog.current_setting('${SCOPE_SETTINGS.userId}', true) as user_id,
            pg_catalog.current_setting('${SCOPE_SETTINGS.workspaceId}', true) as workspace_id,
            pg_catalog.current_setting('${SCOPE_SETTINGS.roles}', true) as roles`
      : `select current_user::pg_catalog.text as role, ${s}.user_id() as user_id,
            ${s}.workspace_id() as workspace_id, pg_catalog.array_to_string(${s}.roles(), ',') as roles`,
  );
  const row = rows[0];
  if (
    row === undefined ||
    row.role !== appRole ||
    row.user_id !== context.userId ||
    row.workspace_id !== context.workspaceId ||
    row.roles !== effectiveRoles.join(',')
  )
    return new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the scope's role or settings were changed inside its callback (set_config, SET ROLE in a function)",
    );
  return undefined;
}

/**
 * Enters an unsealed scope: the role and settings ({@link applyScope}), then the membership read and
 * the roles setting in one statement (one round trip fewer). `app.roles` becomes the context's roles
 * that the stored row still has, in the context's order, or stays unset when there is no row; every
 * refusal after it rolls it back with the transaction. This is safe because the WHERE pins the row by
 * workspace AND user (the primary key): a policy that reads app.roles (an admin's read of the whole
 * workspace) may see the new value on a later row of the same scan, so the statement must never be able
 * to reach another row. More than one row (a table without that key) is refused. Returns the effective
 * roles, null without a membership row.
 */
async function enterScope(tx: SqlQueryable, appRole: string, context: UserContext): Promise<string[] | null> {
  await applyScope(tx, appRole, context.userId, context.workspaceId);
  const { rows } = await tx.query<{ roles: string[] | null; effective: string }>(
    `select roles, pg_catalog.set_config('${SCOPE_SETTINGS.roles}', pg_catalog.array_to_string(array(
              select r from pg_catalog.unnest($3::pg_catalog.text[]) with ordinality as c(r, n)
               where r operator(pg_catalog.=) any (m.roles) order by n), ','), true) as effective
       from memberships m
      where workspace_id operator(pg_catalog.=) $1 and user_id operator(pg_catalog.=) $2`,
    [context.workspaceId, context.userId, context.roles],
  );
  if (rows.length > 1)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'memberships has more than one row for this user and workspace (it needs its primary key)',
    );
  if (rows.length === 0) return null;
  const stored = new Set(rows[0]!.roles ?? []);
  const effective = context.roles.filter((r) => stored.has(r));
  // The setting is what the policies read: it must say exactly what the checks after this judged.
  if (rows[0]!.effective !== effective.join(','))
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'app.roles differs from the effective roles');
  return effective;
}

/**
 * Inside an activity or Nexus handler that runs for a verified user, the refusal of a scope for anyone
 * else: its originator or the actor its call came from (their roles or fewer). A context taken from the
 * activity's arguments, which workflow code chooses, must not pick another user's rows (the check the
 * explicit-argument approach makes, `resolveUserContext`). An allow-listed system activity (no verified
 * user) may scope to any user: that is what it is allow-listed for.
 */
function mismatchOfActivity(activity: ActivityScope, context: UserContext): UserContextError | undefined {
  if (activity.context === undefined) return undefined;
  const within = (verified: UserContext | undefined) =>
    verified !== undefined &&
    verified.userId === context.userId &&
    verified.workspaceId === context.workspaceId &&
    context.roles.every((role) => verified.roles.includes(role));
  return within(activity.context) || within(activity.actor)
    ? undefined
    : // No ids in the reason: it becomes the activity's failure message, which the failure converter
      // leaves readable in history for every refusal. The record says who was asked for.
      new UserContextError(
        ErrorCodes.EXPLICIT_MISMATCH,
        "a database scope for someone who is neither the activity's verified originator nor its actor (or with roles beyond theirs)",
      );
}

/**
 * Runs `fn` in one database transaction scoped to `ctx`:
 *
 * 1. in one statement, from bind parameters: `SET LOCAL ROLE <appRole>` (as `set_config('role', …,
 *    true)`), a role row-level security applies to, and `app.user_id` / `app.workspace_id`;
 * 2. in one statement, a live membership check and `app.roles`: effective roles = `ctx.roles` ∩ the roles
 *    stored now in `memberships`; none left → `USER_CONTEXT_MEMBERSHIP_REVOKED` (non-retryable, audited);
 * 3. `requireRole`, when given; then `fn(tx)`.
 *
 * Everything is transaction-local and the connection is released after COMMIT/ROLLBACK; statements
 * of `fn` that would end the transaction, change the session or the scope (`COMMIT`, `SET` without
 * `LOCAL`, `RESET`, `SET LOCAL ROLE`, `SET LOCAL app.…`, `DO`, `LISTEN`, ...) are refused
 * (`USER_CONTEXT_MISCONFIGURED`, audited; docs/data-isolation.md). Before COMMIT the scope checks that
 * its role and settings are unchanged, else it is refused and rolled back; a connection that work
 * outside any transaction left cursors `WITH HOLD`, channels or temporary objects on is refused at the
 * start; and the adapter resets the session after the transaction (`SESSION_RESET`). With `seal` (or an
 * adapter made with it), steps 1 and 2 are one call of the sealed scope's `enter`, and the settings carry
 * an HMAC that the policies' functions check (`scopeSealSql`; SQL inside the scope that changes them
 * sees nothing). Requires a `memberships(workspace_id, user_id, roles text[])` table
 * whose policy lets a user read their own row in the current workspace.
 *
 * @throws UserContextError `USER_CONTEXT_INVALID` for a malformed context, `USER_CONTEXT_EXPLICIT_MISMATCH`
 *   inside an activity or Nexus handler for a context that is neither its verified originator nor its
 *   actor (their roles or fewer; not in an allow-listed system activity),
 *   `USER_CONTEXT_MEMBERSHIP_REVOKED`, `USER_CONTEXT_ROLE_MISSING`, `USER_CONTEXT_MISCONFIGURED` (a bad
 *   or reserved role name, two `memberships` rows for one user and workspace, a roles setting that
 *   differs from the roles checked, a statement of `fn` that ends the transaction or changes the session
 *   or the scope, a connection carrying session state, a `statementTimeoutMs` outside 1 to 3 600 000, a
 *   bad seal schema, a query after the scope ended), `USER_CONTEXT_MISSING` for work an activity or
 *   Nexus handler left running after it settled. A COMMIT whose answer is lost rejects with
 *   `CommitOutcomeUnknownError` (no refusal: the work may have committed).
 */
export async function withUserScope<T>(
  db: SqlDatabase,
  ctx: UserContext,
  fn: (tx: ScopedTransaction) => Promise<T>,
  options: UserScopeOptions = {},
): Promise<T> {
  // Inside a plugin worker's activity, decisions are audited with its auditor and ids unless the caller
  // names others; elsewhere with the process's default: a refusal never goes unrecorded because the
  // options left the auditor out.
  const activity = currentScope();
  // Work an activity left running once it settled (found by review: with no scope open it passed for
  // code outside every activity, and scoped to anyone). Refused, on the activity's own record.
  const settled = activity === undefined ? settledScope() : undefined;
  const auditor = options.auditor ?? (activity ?? settled)?.auditor ?? defaultAuditor();
  let appRole: string;
  let context: UserContext | undefined;
  let seal: string | undefined;
  let statementTimeout: string | undefined;
  try {
    appRole = assertRoleName(options.appRole ?? DEFAULT_APP_ROLE, 'app role');
    seal = resolveSeal(options.seal, db);
    statementTimeout =
      options.statementTimeoutMs === undefined
        ? undefined
        : `${numberOption('statementTimeoutMs', options.statementTimeoutMs, 0, { min: 1, max: 3_600_000, integer: true })}ms`;
    // Re-validate: callers may hand us an object that never went through the schema.
    context = parseUserContext({ userId: ctx.userId, workspaceId: ctx.workspaceId, roles: [...ctx.roles] });
    if (settled)
      throw new UserContextError(
        ErrorCodes.MISSING,
        'a database scope asked for by work an activity or Nexus handler left running after it settled',
      );
    const mismatch = activity === undefined ? undefined : mismatchOfActivity(activity, context);
    if (mismatch) throw mismatch;
  } catch (err) {
    // Refused before any transaction (a bad app role name, a malformed context, a context the activity
    // was not verified for): on record too, with no user (the last names the one asked for in `detail`).
    if (isUserContextError(err))
      auditor.emit({
        action: 'db.scope',
        decision: 'deny',
        source: 'header',
        ...(options.audit ?? (activity ?? settled)?.audit),
        reason: err.code,
        detail:
          context !== undefined && err.code === ErrorCodes.EXPLICIT_MISMATCH
            ? `asked for ${context.userId} in ${context.workspaceId}, roles=${context.roles.join(',')}`
            : err.reason,
      });
    throw isUserContextError(err) ? markRecorded(err) : err;
  }
  // The token id only when the scope is the activity's own user (not, say, its actor's).
  const own = activity?.context !== undefined && sameUserContext(activity.context, context);
  const fields: ScopeAuditFields | undefined =
    options.audit ??
    (activity ? { ...activity.audit, ...(own ? { tokenId: activity.claims?.jti } : {}) } : undefined);
  const audit = (
    decision: 'allow' | 'deny',
    reason: string,
    effective?: readonly string[],
    note?: string,
  ) => {
    if (decision === 'allow' && options.auditAllow === false) return;
    auditor.emit({
      action: 'db.scope',
      decision,
      source: 'header',
      ...fields,
      reason,
      userId: context.userId,
      workspaceId: context.workspaceId,
      ...(effective ? { detail: `roles=${effective.join(',')}${note ? `; ${note}` : ''}` } : {}),
    });
  };

  let refusal: UserContextError | undefined;
  let effectiveRoles: readonly string[] = [];
  let granted = false;
  try {
    const result = await db.transaction(async (tx) => {
      // Both ways end with the effective roles, null without a membership row.
      let effective: readonly string[] | null;
      try {
        if (statementTimeout !== undefined)
          await tx.query(`select pg_catalog.set_config('statement_timeout', $1, true)`, [statementTimeout]);
        effective =
          seal === undefined
            ? await enterScope(tx, appRole, context)
            : // One statement: the role, the membership check and the sealed settings.
              await enterSealedScope(tx, appRole, seal, context.userId, context.workspaceId, context.roles);
      } catch (err) {
        if (isUserContextError(err)) refusal = err;
        throw err;
      }
      effectiveRoles = Object.freeze([...(effective ?? [])]);
      if (effectiveRoles.length === 0) {
        refusal = new UserContextError(
          ErrorCodes.MEMBERSHIP_REVOKED,
          effective === null ? 'no membership in workspace' : 'no role left after membership intersection',
        );
        throw refusal;
      }
      if (options.requireRole !== undefined && !effectiveRoles.includes(options.requireRole)) {
        refusal = new UserContextError(ErrorCodes.ROLE_MISSING, `role ${options.requireRole} required`);
        throw refusal;
      }
      granted = true;
      // Work `fn` leaves behind (a timer, a branch of a Promise.all whose other branch failed) must not
      // query once the scope ended: on a pooled connection it could run in the next user's scope. Every
      // driver gets the same named, audited refusal.
      let ended = false;
      const scoped: ScopedTransaction = {
        effectiveRoles,
        context,
        query: <R extends object = SqlRow>(
          sql: string,
          params?: readonly unknown[],
        ): Promise<SqlResult<R>> => {
          if (!ended) {
            // Refused by the adapter too; checked here first so that the refusal is audited even when
            // the callback swallows it.
            const control = transactionControl.refusal(sql) ?? scopeChangeRefusal(sql);
            if (!control)
              return tx.query<R>(sql, params).catch((err: unknown) => {
                // SQL of the callback that calls the seal's functions (`enter` for another user):
                // refused by the database, named and on record here.
                const sealed = sealRefusal(err);
                if (!sealed) throw err;
                audit('deny', sealed.code, effectiveRoles, sealed.reason);
                throw markRecorded(sealed);
              });
            audit('deny', control.code, effectiveRoles, control.reason);
            return Promise.reject(markRecorded(control));
          }
          const late = new UserContextError(ErrorCodes.MISCONFIGURED, 'query after its database scope ended');
          audit('deny', late.code, effectiveRoles, late.reason);
          return Promise.reject(markRecorded(late));
        },
      };
      let value: T;
      try {
        value = await fn(scoped);
      } finally {
        ended = true;
      }
      refusal = await scopeIntactRefusal(tx, appRole, context, effectiveRoles, seal).catch((err: unknown) => {
        // The callback swallowed an SQL error: the transaction is aborted and nothing of it commits
        // (COMMIT is answered with ROLLBACK, and reported so). Not a refusal of the scope.
        if ((err as { code?: unknown } | null)?.code === IN_FAILED_TRANSACTION) return undefined;
        throw err;
      });
      if (refusal) throw refusal;
      return value;
    });
    audit('allow', 'ok', effectiveRoles);
    return result;
  } catch (err) {
    // Audited after ROLLBACK, so that the record is not rolled back with the work: our own refusals,
    // and a grant whose work then failed (`fn` threw, or COMMIT did): its queries ran all the same.
    // A refused statement the callback let end it is on record already, as a deny of that statement;
    // the grant's record below says the scope's work, which ran, was rolled back.
    if (refusal !== undefined && err === refusal && isUserContextError(err)) {
      audit('deny', err.code);
      markRecorded(err);
    }
    // `fn` ended the transaction itself: what ran before that was committed, what came after refused.
    else if (isTransactionEnded(err)) {
      audit('deny', err.code, effectiveRoles, err.reason);
      markRecorded(err);
    } else if (granted)
      // A COMMIT that got no answer may have taken effect: not said to be rolled back (found by review).
      audit(
        'allow',
        'ok',
        effectiveRoles,
        err instanceof CommitOutcomeUnknownError ? 'commit outcome unknown' : 'rolled back',
      );
    throw err;
  }
}
