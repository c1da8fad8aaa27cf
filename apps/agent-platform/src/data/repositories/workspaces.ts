import { ErrorCodes, UserContextError } from 'temporal-user-context';
import { iso, pageOf, type Page, type Scope } from './common.js';

interface MembershipRow {
  workspace_id: string;
  user_id: string;
  roles: string[];
}

const toMembership = (r: MembershipRow): Membership => ({
  workspaceId: r.workspace_id,
  userId: r.user_id,
  roles: r.roles,
});

export interface Workspace {
  id: string;
  name: string;
  createdAt: string;
}

export interface Membership {
  workspaceId: string;
  userId: string;
  roles: string[];
}

/**
 * How much earlier than a role's grant a token may be issued and still get it: the identity provider's
 * clock and the database's may differ (the API's bearer check allows 30 s too).
 */
export const GRANT_TOLERANCE_SECONDS = 30;

/** `seconds` if it is a whole number of seconds from 0 to an hour, else an error naming `what`. */
export function grantTolerance(seconds: number | undefined, what: string): number {
  const value = seconds ?? GRANT_TOLERANCE_SECONDS;
  // NaN failed every scope, and Infinity would have turned the check off (found by review).
  if (!(Number.isInteger(value) && value >= 0 && value <= 3600))
    throw new Error(`${what} must be a whole number of seconds from 0 to 3600`);
  return value;
}

/** The scope's workspace. RLS shows only the current one, so there is nothing to list. */
export class WorkspaceRepository {
  constructor(private readonly scope: Scope) {}

  async current(): Promise<Workspace | undefined> {
    const { rows } = await this.scope.query<{ id: string; name: string; created_at: Date | string }>(
      'select id, name, created_at from workspaces',
    );
    const r = rows[0];
    return r ? { id: r.id, name: r.name, createdAt: iso(r.created_at) } : undefined;
  }
}

/**
 * Memberships of the scope's workspace. A member sees their own row; a workspace admin (effective
 * role, checked live by withUserScope) sees and manages all of them — the policies decide, not this code.
 */
export class MembershipRepository {
  constructor(private readonly scope: Scope) {}

  async mine(): Promise<Membership | undefined> {
    const { rows } = await this.scope.query<MembershipRow>(
      'select workspace_id, user_id, roles from memberships where user_id = $1',
      [this.scope.context.userId],
    );
    return rows[0] ? toMembership(rows[0]) : undefined;
  }

  /**
   * Which of `roles` the scope's user was granted after `issuedAt` (epoch seconds, a token's `iat`) plus
   * `toleranceSeconds` ({@link grantTolerance}), or holds no more: those a token issued then must not
   * get (migration 0019). A membership removed and added again, or a role taken away and given again, is
   * granted anew, so the tokens of before do not come back with it.
   */
  async grantedAfter(
    roles: readonly string[],
    issuedAt: number,
    toleranceSeconds: number,
  ): Promise<string[]> {
    const { rows } = await this.scope.query<{ role: string }>(
      `select r as role from unnest($1::text[]) as r
        where coalesce((select (m.role_since ->> r)::timestamptz from memberships m
                         where m.workspace_id = $2 and m.user_id = $3),
                       'infinity') > to_timestamp($4::double precision)`,
      // `iat` is in whole seconds, rounded down: the token was issued up to a second after it.
      [
        [...roles],
        this.scope.context.workspaceId,
        this.scope.context.userId,
        issuedAt + 1 + toleranceSeconds,
      ],
    );
    return rows.map((r) => r.role);
  }

  async list(): Promise<Membership[]> {
    const { rows } = await this.scope.query<MembershipRow>(
      'select workspace_id, user_id, roles from memberships order by user_id',
    );
    return rows.map(toMembership);
  }

  /**
   * A page of the members, by user id (`after`: the last user id of the previous page). `next` is the
   * cursor of the page after it, when there may be one.
   */
  async page(page: { limit: number; after?: string }): Promise<Page<Membership>> {
    const { rows } = await this.scope.query<MembershipRow>(
      `select workspace_id, user_id, roles from memberships
        where ($1::text is null or user_id > $1) order by user_id limit ${Math.trunc(page.limit) + 1}`,
      [page.after ?? null],
    );
    return pageOf(rows, page.limit, toMembership, (row) => row.user_id);
  }

  /**
   * Adds or changes a member (admin only, by policy): `'added'` for someone who was no member,
   * `'changed'` for a member, false when the policy refused silently.
   */
  async upsert(userId: string, roles: readonly string[]): Promise<'added' | 'changed' | false> {
    await this.lockMembers();
    // `xmax = 0`: the row version this statement wrote is a new row, not an update of one.
    const { rows } = await this.scope.query<{ added: boolean }>(
      `insert into memberships (workspace_id, user_id, roles) values ($1, $2, $3)
       on conflict (workspace_id, user_id) do update set roles = excluded.roles, updated_at = now()
       returning (xmax operator(pg_catalog.=) 0) as added`,
      [this.scope.context.workspaceId, userId, [...roles]],
    );
    await this.keepAnAdmin();
    return rows.length === 0 ? false : rows[0]!.added ? 'added' : 'changed';
  }

  /** Removes a member (admin only, by policy); true when a row was deleted. */
  async remove(userId: string): Promise<boolean> {
    await this.lockMembers();
    const { rowCount } = await this.scope.query('delete from memberships where user_id = $1', [userId]);
    await this.keepAnAdmin();
    return rowCount > 0;
  }

  // Two admins demoting each other at once would each still see the other: membership changes of one
  // workspace take turns (a transaction-scoped advisory lock needs no privilege on any table).
  private async lockMembers(): Promise<void> {
    await this.scope.query(
      `select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('memberships:' || $1))`,
      [this.scope.context.workspaceId],
    );
    // The scope checked the caller's membership before this lock, and the policies trust the roles it
    // found. A change committed while this one waited (the caller removed or demoted) is visible now:
    // without this check, an admin being removed could re-add themselves with a request already past
    // the scope's check. (A caller who was no admin then is left to the policies, which refuse.)
    if (!this.scope.effectiveRoles.includes('admin')) return;
    const { rows } = await this.scope.query<{ roles: string[] }>(
      'select roles from memberships where user_id = $1',
      [this.scope.context.userId],
    );
    if (rows.length === 0)
      throw new AdminChangedError(
        ErrorCodes.MEMBERSHIP_REVOKED,
        'membership removed while the change waited',
      );
    if (!rows[0]!.roles.includes('admin'))
      throw new AdminChangedError(ErrorCodes.ROLE_MISSING, 'no longer an admin of this workspace');
  }

  /** A workspace without an admin could never be managed again: the change is rolled back. */
  private async keepAnAdmin(): Promise<void> {
    const { rows } = await this.scope.query<{ admins: number }>(
      `select count(*)::int as admins from memberships where 'admin' = any(roles)`,
    );
    if ((rows[0]?.admins ?? 0) === 0) throw new LastAdminError();
  }
}

/** Refusal of a membership change that would leave the workspace without an admin. */
export class LastAdminError extends Error {
  readonly code = 'LAST_ADMIN';
  constructor() {
    super('the workspace must keep at least one admin');
  }
}

/**
 * Refusal of a membership change by an admin who was removed or demoted while it waited for its turn:
 * a `UserContextError` with the code the scope would have refused with, had it run a moment later.
 */
export class AdminChangedError extends UserContextError {}
