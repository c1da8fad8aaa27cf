import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { Auditor, defaultAuditor, memoryAuditSink } from '../../src/audit/index.js';
import {
  ErrorCodes,
  UserContextError,
  isUserContextError,
  parseUserContext,
  type UserContext,
} from '../../src/context/index.js';
import {
  CommitOutcomeUnknownError,
  fromPgPool,
  withCurrentUserScope,
  withUserScope,
  type ScopedTransaction,
  type UserScopeOptions,
} from '../../src/postgres/index.js';
import { applyScope } from '../../src/postgres/scope.js';
import { transactionControl, type SqlSession } from '../../src/postgres/database.js';
import { runInNexusScope } from '../../src/worker/scope.js';
import type { ContextClaims } from '../../src/crypto/claims.js';
import { createFixtureSchema, rejection, uniqueRoles } from './fixture.js';

const roles = uniqueRoles('scope');
const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
const bob = parseUserContext({ userId: 'bob', workspaceId: 'ws-b', roles: ['member'] });
const carol = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['member'] });

describe.each(BACKENDS)('withUserScope on %s', (kind) => {
  let b: Backend;
  const opts: UserScopeOptions = { appRole: roles.app };
  const notes = (ctx: UserContext, extra: UserScopeOptions = {}) =>
    withUserScope(
      b.db,
      ctx,
      async (tx) =>
        (await tx.query<{ body: string }>('select body from notes order by body')).rows.map((r) => r.body),
      { ...opts, ...extra },
    );

  beforeAll(async () => {
    b = await openBackend(kind, { prefix: 'scope', poolSize: 1 });
    await createFixtureSchema(b.admin, roles);
    await b.admin.query(
      `insert into memberships values ('ws-a','alice','{admin,member}'), ('ws-b','bob','{member}'), ('ws-a','carol','{member}')`,
    );
    await b.admin.query(
      `insert into notes (workspace_id, body) values ('ws-a','a1'), ('ws-a','a2'), ('ws-b','b1')`,
    );
  });
  afterAll(async () => {
    await b?.close();
  });

  it('a transaction kept past its scope cannot query: not in the next scope, not as the login role', async () => {
    const sink = memoryAuditSink();
    let leaked: { query: (sql: string) => Promise<unknown> } | undefined;
    await withUserScope(
      b.db,
      alice,
      async (tx) => {
        leaked = tx;
      },
      { ...opts, auditor: new Auditor([sink]) },
    );
    // bob's scope holds the pool's only connection, the one alice's scope had, while the late query comes.
    let lateQuery: unknown;
    await withUserScope(
      b.db,
      bob,
      async () => {
        lateQuery = await rejection(leaked!.query(`insert into notes (body) values ('late')`));
      },
      opts,
    );
    expect(lateQuery).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect((await b.admin.query(`select workspace_id from notes where body = 'late'`)).rows).toEqual([]);
    expect(sink.events.map((e) => [e.decision, e.reason, e.userId])).toEqual([
      ['allow', 'ok', 'alice'],
      ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
    ]);
    // The adapter refuses too, for transactions opened without withUserScope.
    let raw: { query: (sql: string) => Promise<unknown> } | undefined;
    await b.db.transaction(async (tx) => {
      raw = tx;
    });
    await expect(raw!.query('select 1')).rejects.toThrow(/after its transaction or session ended/);
    await expect(raw!.query('select 1')).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });

  it('a callback cannot begin or end a transaction of its own (a helper with BEGIN/COMMIT)', async () => {
    const sink = memoryAuditSink();
    // A helper written for a plain connection: its BEGIN would be a no-op inside the scope's
    // transaction, its COMMIT would end that transaction, and with it SET LOCAL ROLE and the workspace
    // setting. What the callback ran next would run as the login role (a superuser here): every
    // workspace's rows. Refused before they are sent, in every spelling PostgreSQL reads as such
    // (empty statements, comments that end at a CR, nested comments), and audited even when swallowed.
    const statements = [
      'begin',
      'START TRANSACTION',
      '-- done\n COMMIT AND CHAIN',
      ';commit and chain',
      '-- x\rCOMMIT AND CHAIN',
      '/* a /* nested */ comment */ commit and chain',
      'end',
      'rollback',
      'ROLLBACK AND CHAIN',
      'rollback/**/work',
      // Session-level changes: back to the login role inside the scope, or into the next borrower's.
      'RESET ROLE',
      'set role none',
      'reset all',
      'set search_path = public',
      'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY',
      'set session authorization default',
    ];
    const refused: unknown[] = [];
    const rows = await withUserScope(
      b.db,
      alice,
      async (tx) => {
        await tx.query(`insert into notes (body) values ('helper')`);
        for (const sql of statements) refused.push(await rejection(tx.query(sql)));
        // Not a string: a driver's query object would skip the check; refused, as a rejection.
        refused.push(await rejection(tx.query({ text: 'commit' } as never)));
        return (await tx.query<{ body: string }>('select body from notes order by body')).rows.map(
          (r) => r.body,
        );
      },
      { ...opts, auditor: new Auditor([sink]) },
    );
    expect(refused).toHaveLength(statements.length + 1);
    for (const err of refused) expect(err).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect(rows).toEqual(['a1', 'a2', 'helper']);
    expect(sink.events.map((e) => [e.decision, e.reason])).toEqual([
      ...refused.map(() => ['deny', ErrorCodes.MISCONFIGURED]),
      ['allow', 'ok'],
    ]);
    expect(sink.events[0]!.detail).toMatch(/transaction control/);
    expect(sink.events[statements.indexOf('RESET ROLE')]!.detail).toMatch(/session-level SET or RESET/);
    await b.admin.query(`delete from notes where body = 'helper'`);

    // A savepoint is no transaction control: rolling back to one keeps the scope, however spelled.
    expect(
      await withUserScope(
        b.db,
        alice,
        async (tx) => {
          // Transaction-local settings are the scope's own business.
          await tx.query('set local statement_timeout = 5000');
          await tx.query('set constraints all immediate');
          await tx.query('savepoint s');
          await tx.query(`insert into notes (body) values ('undone')`);
          await tx.query('ROLLBACK/**/TO s');
          await tx.query(`insert into notes (body) values ('undone too')`);
          await tx.query('rollback work\n-- to the savepoint\nto savepoint s');
          return (await tx.query<{ body: string }>('select body from notes order by body')).rows.map(
            (r) => r.body,
          );
        },
        opts,
      ),
    ).toEqual(['a1', 'a2']);

    // A refusal the callback lets end the scope: the statement's deny, and the grant, rolled back.
    sink.clear();
    await rejection(
      withUserScope(b.db, alice, async (tx) => tx.query('commit'), { ...opts, auditor: new Auditor([sink]) }),
    );
    expect(sink.events.map((e) => [e.decision, e.reason, e.detail])).toEqual([
      ['deny', ErrorCodes.MISCONFIGURED, expect.stringMatching(/transaction control/)],
      ['allow', 'ok', 'roles=admin,member; rolled back'],
    ]);
  });

  describe('should a statement that ends the transaction get past that check', () => {
    // No SQL known gets past the check of a statement's first words; the second line of defence, the
    // connection's transaction status, is shown with the check off.
    const check = transactionControl.refusal;
    beforeEach(() => {
      transactionControl.refusal = (sql) => (typeof sql === 'string' ? undefined : check(sql));
    });
    afterEach(() => {
      transactionControl.refusal = check;
    });

    it('it stops the callback there, queries sent with it included', async () => {
      const sink = memoryAuditSink();
      const seen: string[] = [];
      let ending: unknown;
      let after: unknown;
      const err = await rejection(
        withUserScope(
          b.db,
          alice,
          async (tx) => {
            await tx.query(`insert into notes (body) values ('helper')`);
            ending = await rejection(tx.query('commit'));
            after = await rejection(
              tx
                .query<{ body: string }>('select body from notes')
                .then((r) => seen.push(...r.rows.map((x) => x.body))),
            );
          },
          { ...opts, auditor: new Auditor([sink]) },
        ),
      );
      expect(ending).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      expect(after).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      expect(isUserContextError(err, ErrorCodes.MISCONFIGURED)).toBe(true);
      // The COMMIT did commit what ran before it, in the scope's workspace; the record says so.
      expect((await b.admin.query(`select workspace_id from notes where body = 'helper'`)).rows).toEqual([
        { workspace_id: 'ws-a' },
      ]);
      expect(sink.events.map((e) => [e.decision, e.reason, e.userId])).toEqual([
        ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
      ]);
      expect(sink.events[0]!.detail).toMatch(/transaction was ended inside its callback/);
      await b.admin.query(`delete from notes where body = 'helper'`);

      // Queries sent together: the one queued behind the COMMIT is refused, not run after it.
      const together = await rejection(
        withUserScope(
          b.db,
          alice,
          async (tx) => {
            const results = await Promise.allSettled([
              tx.query<{ body: string }>('commit'),
              tx.query<{ body: string }>('select body from notes'),
            ]);
            for (const r of results)
              if (r.status === 'fulfilled') seen.push(...r.value.rows.map((x) => x.body));
          },
          opts,
        ),
      );
      expect(together).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      // One statement per call: a COMMIT cannot smuggle a statement behind it in the same string.
      await rejection(
        withUserScope(
          b.db,
          alice,
          async (tx) => {
            const r = await tx.query<{ body: string }>('commit; select body from notes');
            seen.push(...r.rows.map((x) => x.body));
          },
          opts,
        ),
      );
      expect(seen).toEqual([]);
      // The same holds for transactions opened without withUserScope; and the pool still serves.
      await expect(b.db.transaction(async (tx) => tx.query('rollback'))).rejects.toMatchObject({
        code: ErrorCodes.MISCONFIGURED,
      });
      expect(await notes(bob)).toEqual(['b1']);
    });

    it('COMMIT AND CHAIN, which leaves the connection in a new transaction, and a failed COMMIT', async () => {
      const seen: string[] = [];
      // pg reports each statement's command tag (COMMIT); PGlite reports none, and its connection is in
      // a transaction again: there only the first check stops a chained COMMIT.
      const chained =
        kind === 'pglite'
          ? 'not seen by this check on PGlite'
          : await rejection(
              withUserScope(
                b.db,
                alice,
                async (tx) => {
                  await rejection(tx.query('commit and chain'));
                  const r = await tx.query<{ body: string }>('select body from notes');
                  seen.push(...r.rows.map((x) => x.body));
                },
                opts,
              ),
            );
      if (kind === 'postgres') expect(chained).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      // A COMMIT that fails (a deferred constraint) ends the transaction too, as a rollback; the
      // callback that swallows the failure does not go on, and no commit is reported.
      await b.admin.query(
        `create table if not exists deferred_check (id int primary key deferrable initially deferred)`,
      );
      await b.admin.query(`grant all on deferred_check to ${roles.app}`);
      const failed = await rejection(
        withUserScope(
          b.db,
          alice,
          async (tx) => {
            await tx.query(`insert into notes (body) values ('lost')`);
            await tx.query('insert into deferred_check values (1), (1)');
            await rejection(tx.query('commit'));
            const r = await tx.query<{ body: string }>('select body from notes');
            seen.push(...r.rows.map((x) => x.body));
          },
          opts,
        ),
      );
      expect(failed).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      expect(seen).toEqual([]);
      expect((await b.admin.query(`select 1 from notes where body = 'lost'`)).rows).toEqual([]);
      expect(await notes(bob)).toEqual(['b1']);
    });
  });

  it('reads only the rows of the context workspace, as the app role', async () => {
    expect(await notes(alice)).toEqual(['a1', 'a2']);
    expect(await notes(bob)).toEqual(['b1']);
    const who = await withUserScope(
      b.db,
      alice,
      async (tx) =>
        (
          await tx.query<{ u: string; ws: string; roles: string }>(
            `select current_user as u, current_setting('app.workspace_id') as ws, current_setting('app.roles') as roles`,
          )
        ).rows[0],
      opts,
    );
    expect(who).toEqual({ u: roles.app, ws: 'ws-a', roles: 'admin,member' });
  });

  it('refuses app role names that are no role to switch to (none switches back to the login)', async () => {
    const sink = memoryAuditSink();
    for (const appRole of ['none', 'public', 'current_user', 'pg_read_all_data']) {
      const err = await rejection(
        withUserScope(b.db, alice, async () => 'ran', { appRole, auditor: new Auditor([sink]) }),
      );
      expect([appRole, isUserContextError(err, ErrorCodes.MISCONFIGURED)]).toEqual([appRole, true]);
    }
    // Each refused before any transaction, and each on record.
    expect(sink.events.map((e) => [e.action, e.decision, e.reason])).toEqual(
      Array(4).fill(['db.scope', 'deny', ErrorCodes.MISCONFIGURED]),
    );
  });

  it('switches role even when the search path finds a set_config of its own first', async () => {
    // A schema before pg_catalog on the search path may hold functions named like PostgreSQL's: the
    // scope calls pg_catalog's by name. (Session-level path on a dedicated connection.)
    await b.admin.query(`create schema if not exists shadow`);
    await b.admin.query(
      `create or replace function shadow.set_config(text, text, boolean) returns text language sql as 'select $2'`,
    );
    try {
      const who = await b.db.session(async (s) => {
        await s.exec(`set search_path = shadow, pg_catalog, public`);
        await s.exec('begin');
        try {
          await applyScope(s, roles.app, 'alice', 'ws-a');
          return (
            await s.query<{ u: string; ws: string }>(
              `select current_user as u, pg_catalog.current_setting('app.workspace_id') as ws`,
            )
          ).rows[0];
        } finally {
          await s.exec(`rollback; reset search_path`);
        }
      });
      expect(who).toEqual({ u: roles.app, ws: 'ws-a' });
    } finally {
      await b.admin.query(`drop schema shadow cascade`);
    }
  });

  it('refuses a memberships table that holds two rows for one user and workspace', async () => {
    await b.admin.query(`alter table memberships drop constraint memberships_pkey`);
    await b.admin.query(`insert into memberships values ('ws-a', 'alice', '{member}')`);
    try {
      const sink = memoryAuditSink();
      const err = await rejection(
        withUserScope(b.db, alice, async () => 'ran', { ...opts, auditor: new Auditor([sink]) }),
      );
      expect(isUserContextError(err, ErrorCodes.MISCONFIGURED)).toBe(true);
      expect((err as Error).message).toMatch(/more than one row/);
      expect(sink.events.map((e) => [e.decision, e.reason, e.userId])).toEqual([
        ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
      ]);
    } finally {
      await b.admin.query(
        `delete from memberships where workspace_id = 'ws-a' and user_id = 'alice' and roles = '{member}'`,
      );
      await b.admin.query(`alter table memberships add primary key (workspace_id, user_id)`);
    }
  });

  it('effective roles are the context roles intersected with the stored membership', async () => {
    const claimsMore = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['member', 'admin'] });
    const effective = await withUserScope(b.db, claimsMore, async (tx) => tx.effectiveRoles, opts);
    expect(effective).toEqual(['member']);
    const err = await rejection(
      withUserScope(b.db, claimsMore, async () => 'ran', { ...opts, requireRole: 'admin' }),
    );
    expect(isUserContextError(err, ErrorCodes.ROLE_MISSING)).toBe(true);
  });

  it('case 11/12: a membership revoked after the context was issued refuses the next scope, audited', async () => {
    const dave = parseUserContext({ userId: 'dave', workspaceId: 'ws-a', roles: ['member'] });
    await b.admin.query(`insert into memberships values ('ws-a','dave','{member}')`);
    const sink = memoryAuditSink();
    const auditor = new Auditor([sink]);
    expect(await notes(dave, { auditor })).toEqual(['a1', 'a2']);

    // Role removed, membership row kept: nothing left after intersection.
    await b.admin.query(`update memberships set roles = '{viewer}' where user_id = 'dave'`);
    let err = await rejection(notes(dave, { auditor }));
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
    expect((err as { retryable: boolean }).retryable).toBe(false);

    // Membership removed entirely.
    await b.admin.query(`delete from memberships where user_id = 'dave'`);
    err = await rejection(notes(dave, { auditor }));
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);

    const denies = sink.events.filter((e) => e.decision === 'deny');
    expect(denies).toHaveLength(2);
    expect(denies[0]).toMatchObject({
      action: 'db.scope',
      reason: ErrorCodes.MEMBERSHIP_REVOKED,
      userId: 'dave',
      workspaceId: 'ws-a',
    });
    expect(sink.events.filter((e) => e.decision === 'allow')).toHaveLength(1);
  });

  it("outside a plugin worker and with no auditor given, decisions go to the process's default auditor", async () => {
    // Silenced for every test file (test-support/quiet-default-auditor.ts): what reached it so far is
    // other tests' records.
    const spy = vi.mocked(defaultAuditor().emit);
    spy.mockClear();
    expect(await withUserScope(b.db, bob, async () => 'ok', { appRole: roles.app })).toBe('ok');
    const stranger = parseUserContext({ userId: 'mallory', workspaceId: 'ws-b', roles: ['member'] });
    const err = await rejection(withUserScope(b.db, stranger, async () => 'no', { appRole: roles.app }));
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
    // Refused before any transaction: a role name that is no role.
    const early = await rejection(withUserScope(b.db, bob, async () => 'no', { appRole: 'bad role' }));
    expect(isUserContextError(early, ErrorCodes.MISCONFIGURED)).toBe(true);
    expect(spy.mock.calls.map(([e]) => [e.decision, e.userId, e.reason])).toEqual([
      ['allow', 'bob', 'ok'],
      ['deny', 'mallory', ErrorCodes.MEMBERSHIP_REVOKED],
      ['deny', undefined, ErrorCodes.MISCONFIGURED],
    ]);
  });

  it('inside a handler for a verified user, a scope only for that user or its actor (their roles or fewer)', async () => {
    const sink = memoryAuditSink();
    const handler = (context: UserContext | undefined) => ({
      ...(context ? { context } : {}),
      actor: carol,
      allowedSystem: context ? [] : ['cleanup'],
      audit: { namespace: 'default', workflowId: 'wf-2', activityType: 'nexus:notes/read' },
      auditor: new Auditor([sink]),
    });
    const inHandler = (context: UserContext | undefined, ctx: UserContext) =>
      runInNexusScope(handler(context), () => notes(ctx));
    // alice's own scope, with fewer roles, and her actor's: allowed.
    expect(await inHandler(alice, alice)).toEqual(['a1', 'a2']);
    const fewer = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
    expect(await inHandler(alice, fewer)).toEqual(['a1', 'a2']);
    expect(await inHandler(alice, carol)).toEqual(['a1', 'a2']);
    // Anyone else, as an activity's arguments could name: refused before any transaction, audited.
    const err = await rejection(inHandler(alice, bob));
    expect(isUserContextError(err, ErrorCodes.EXPLICIT_MISMATCH)).toBe(true);
    const more = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    expect(isUserContextError(await rejection(inHandler(alice, more)), ErrorCodes.EXPLICIT_MISMATCH)).toBe(
      true,
    );
    // The refusal's message, which reaches history in clear, names no one; the record says who was asked for.
    expect((err as Error).message).not.toMatch(/bob|ws-b/);
    expect(sink.events.filter((e) => e.decision === 'deny')).toMatchObject([
      {
        action: 'db.scope',
        reason: ErrorCodes.EXPLICIT_MISMATCH,
        workflowId: 'wf-2',
        detail: 'asked for bob in ws-b, roles=member',
      },
      {
        action: 'db.scope',
        reason: ErrorCodes.EXPLICIT_MISMATCH,
        workflowId: 'wf-2',
        detail: 'asked for carol in ws-a, roles=admin,member',
      },
    ]);
    // An allow-listed system handler (no verified user) scopes to whom it is allow-listed to serve.
    expect(await inHandler(undefined, bob)).toEqual(['b1']);
  });

  it('work a handler left running is refused a scope for anyone once the handler settled, on its record', async () => {
    // Found by review: with its scope closed, such work passed for code outside every handler, which
    // may scope to anyone, and its grant went to the default auditor.
    const sink = memoryAuditSink();
    const handler = {
      context: alice,
      allowedSystem: [],
      audit: { namespace: 'default', workflowId: 'wf-4', activityType: 'nexus:notes/read' },
      auditor: new Auditor([sink]),
    };
    let release!: () => void;
    const settled = new Promise<void>((resolve) => (release = resolve));
    let leftover!: Promise<unknown>;
    await runInNexusScope(handler, async () => {
      // Left running: it asks once the handler has returned.
      leftover = settled.then(() => notes(bob));
    });
    release();
    const err = await rejection(leftover);
    expect(isUserContextError(err, ErrorCodes.MISSING)).toBe(true);
    // Its own user too: nothing acts for the handler's user once it settled.
    let own!: Promise<unknown>;
    await runInNexusScope({ ...handler }, async () => {
      own = Promise.resolve()
        .then(() => new Promise((r) => setTimeout(r, 10)))
        .then(() => notes(alice));
    });
    expect(isUserContextError(await rejection(own), ErrorCodes.MISSING)).toBe(true);
    expect(sink.events.map((e) => [e.action, e.decision, e.reason, e.workflowId])).toEqual([
      ['db.scope', 'deny', ErrorCodes.MISSING, 'wf-4'],
      ['db.scope', 'deny', ErrorCodes.MISSING, 'wf-4'],
    ]);
  });

  it('withCurrentUserScope scopes to the originator, or as: actor to the actor (refused without one)', async () => {
    const sink = memoryAuditSink();
    const handler = (actor: UserContext | undefined) => ({
      context: alice,
      ...(actor ? { actor } : {}),
      allowedSystem: [],
      audit: { namespace: 'default', workflowId: 'wf-3', activityType: 'noteAsSender' },
      auditor: new Auditor([sink]),
    });
    const who = async (tx: ScopedTransaction) =>
      (await tx.query<{ u: string }>(`select current_setting('app.user_id') as u`)).rows[0]!.u;
    const run = (actor: UserContext | undefined, as?: 'originator' | 'actor') =>
      runInNexusScope(handler(actor), () =>
        withCurrentUserScope(b.db, who, { ...opts, ...(as ? { as } : {}) }),
      );
    expect(await run(carol)).toBe('alice');
    expect(await run(carol, 'actor')).toBe('carol');
    expect(isUserContextError(await rejection(run(undefined, 'actor')), ErrorCodes.MISSING)).toBe(true);
    expect(
      sink.events.map((e) => [e.action, e.decision, e.userId, e.reason, e.tokenId === undefined]),
    ).toEqual([
      ['db.scope', 'allow', 'alice', 'ok', true],
      ['db.scope', 'allow', 'carol', 'ok', true],
      ['db.scope', 'deny', undefined, ErrorCodes.MISSING, true],
    ]);
    // An actor whose header the guard refused: that refusal, on the scope's record too.
    const refusedActor = {
      ...handler(undefined),
      actorRefusal: new UserContextError(
        ErrorCodes.ACTOR_FORBIDDEN,
        'actor is not in the originator workspace',
      ),
    };
    expect(
      isUserContextError(
        await rejection(
          runInNexusScope(refusedActor, () => withCurrentUserScope(b.db, who, { as: 'actor' })),
        ),
        ErrorCodes.ACTOR_FORBIDDEN,
      ),
    ).toBe(true);
    expect(sink.events.at(-1)).toMatchObject({
      action: 'db.scope',
      decision: 'deny',
      reason: ErrorCodes.ACTOR_FORBIDDEN,
      detail: 'as actor: actor is not in the originator workspace',
    });
    await expect(
      runInNexusScope(handler(carol), () => withCurrentUserScope(b.db, who, { as: 'sender' as never })),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    // Refusals come as a rejected promise, never thrown from the call (found by review: both were thrown,
    // and a caller's `.catch()` missed them).
    const outside = withCurrentUserScope(b.db, who);
    const badAs = withCurrentUserScope(b.db, who, { as: 'sender' as never });
    await expect(outside).rejects.toMatchObject({ code: ErrorCodes.MISSING });
    await expect(badAs).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });

  it("inside a plugin worker's handler, decisions are audited with its auditor and ids by default", async () => {
    const sink = memoryAuditSink();
    const eve = parseUserContext({ userId: 'eve', workspaceId: 'ws-a', roles: ['member'] });
    const frank = parseUserContext({ userId: 'frank', workspaceId: 'ws-a', roles: ['member'] });
    const handler = {
      context: eve,
      actor: frank,
      claims: { jti: 'token-of-eve' } as ContextClaims,
      allowedSystem: [],
      audit: { namespace: 'default', workflowId: 'wf-1', activityType: 'nexus:who/whoami' },
      auditor: new Auditor([sink]),
    };
    // A scope per request, as the Nexus interceptor makes them (a scope closes when its handler settles).
    const inHandler = (ctx: UserContext) =>
      rejection(runInNexusScope({ ...handler }, () => withUserScope(b.db, ctx, async () => 'ran', opts)));
    // No auditor in the options, and eve is no member: the refusal is still on record, under the
    // handler's ids and, since the scope is the handler's own user, its token id.
    expect(isUserContextError(await inHandler(eve), ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
    // A scope for its actor gets the ids but not the handler's token id.
    await inHandler(frank);
    expect(
      sink.events.map((e) => [
        e.action,
        e.decision,
        e.reason,
        e.userId,
        e.tokenId,
        e.workflowId,
        e.activityType,
      ]),
    ).toEqual([
      ['db.scope', 'deny', ErrorCodes.MEMBERSHIP_REVOKED, 'eve', 'token-of-eve', 'wf-1', 'nexus:who/whoami'],
      ['db.scope', 'deny', ErrorCodes.MEMBERSHIP_REVOKED, 'frank', undefined, 'wf-1', 'nexus:who/whoami'],
    ]);
    // Outside any handler there is no default auditor: the caller decides.
    await rejection(withUserScope(b.db, eve, async () => 'ran', opts));
    expect(sink.events).toHaveLength(2);
  });

  it('a context for a workspace the user is not a member of is refused (no cross-workspace read)', async () => {
    const aliceInB = parseUserContext({ userId: 'alice', workspaceId: 'ws-b', roles: ['admin'] });
    const err = await rejection(notes(aliceInB));
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
  });

  it('cross-workspace writes are refused or touch 0 rows', async () => {
    // Insert naming another workspace: WITH CHECK refuses it.
    const err = await rejection(
      withUserScope(
        b.db,
        alice,
        (tx) => tx.query(`insert into notes (workspace_id, body) values ('ws-b','evil')`),
        opts,
      ),
    );
    expect(String((err as Error).message)).toMatch(/row-level security/);
    // Update/delete of another workspace's row: invisible, 0 rows.
    const updated = await withUserScope(
      b.db,
      alice,
      (tx) => tx.query(`update notes set body = 'x' where body = 'b1'`),
      opts,
    );
    expect(updated.rowCount).toBe(0);
    // Moving an own row into another workspace: WITH CHECK refuses the new row.
    const moved = await rejection(
      withUserScope(
        b.db,
        alice,
        (tx) => tx.query(`update notes set workspace_id = 'ws-b' where body = 'a1'`),
        opts,
      ),
    );
    expect(String((moved as Error).message)).toMatch(/row-level security/);
    const deleted = await withUserScope(
      b.db,
      alice,
      (tx) => tx.query(`delete from notes where body = 'b1'`),
      opts,
    );
    expect(deleted.rowCount).toBe(0);
    const all = await b.admin.query<{ body: string }>('select body from notes order by body');
    expect(all.rows.map((r) => r.body)).toEqual(['a1', 'a2', 'b1']);
  });

  it('inserts take the workspace from the scope', async () => {
    await withUserScope(b.db, carol, (tx) => tx.query(`insert into notes (body) values ('a3')`), opts);
    const row = await b.admin.query<{ workspace_id: string }>(
      `select workspace_id from notes where body = 'a3'`,
    );
    expect(row.rows).toEqual([{ workspace_id: 'ws-a' }]);
    await b.admin.query(`delete from notes where body = 'a3'`);
  });

  it('case 14: hostile values travel as bind parameters, never as SQL', async () => {
    for (const hostile of [`x'; SET LOCAL ROLE postgres; --`, `' OR 1=1--`, `ws-a' OR '1'='1`]) {
      const seen = await b.db.transaction(async (tx) => {
        await applyScope(tx, roles.app, hostile, hostile);
        const setting = await tx.query<{ ws: string; u: string }>(
          `select current_setting('app.workspace_id') as ws, current_user as u`,
        );
        const rows = await tx.query('select * from notes');
        return { ...setting.rows[0], count: rows.rows.length };
      });
      expect(seen).toEqual({ ws: hostile, u: roles.app, count: 0 });
      // The schema refuses such ids before any SQL is sent.
      const err = await rejection(
        withUserScope(b.db, { userId: hostile, workspaceId: 'ws-a', roles: ['member'] }, async () => 1, opts),
      );
      expect(isUserContextError(err, ErrorCodes.INVALID)).toBe(true);
    }
    // A hostile search term bound as a parameter matches nothing and leaks nothing.
    const hits = await withUserScope(
      b.db,
      alice,
      async (tx) => (await tx.query(`select body from notes where body = $1`, [`' OR 1=1--`])).rows,
      opts,
    );
    expect(hits).toEqual([]);
    // A hostile role name never reaches SET ROLE.
    const bad = await rejection(
      withUserScope(b.db, alice, async () => 1, { appRole: `app"; reset role; --` }),
    );
    expect(isUserContextError(bad, ErrorCodes.MISCONFIGURED)).toBe(true);
  });

  it('case 15: two workspaces interleaved on one pooled connection never see each other', async () => {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const work = (ctx: UserContext, i: number) =>
      withUserScope(
        b.db,
        ctx,
        async (tx) => {
          const first = await tx.query<{ body: string }>('select body from notes order by body');
          await sleep(i % 3);
          const second = await tx.query<{ ws: string }>('select distinct workspace_id as ws from notes');
          return {
            ctx: ctx.workspaceId,
            bodies: first.rows.map((r) => r.body),
            ws: second.rows.map((r) => r.ws),
          };
        },
        opts,
      );
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => work(i % 2 === 0 ? alice : bob, i)),
    );
    for (const r of results) {
      expect(r.ws).toEqual([r.ctx]);
      expect(r.bodies).toEqual(r.ctx === 'ws-a' ? ['a1', 'a2'] : ['b1']);
    }
  });

  it('case 16: nothing survives the scope; an unscoped transaction after SET LOCAL sees no rows', async () => {
    await notes(alice);
    // With a pool of size 1 this is the very connection the scope used.
    const after = await b.db.query<{ u: string; ws: string | null }>(
      `select current_user as u, current_setting('app.workspace_id', true) as ws`,
    );
    expect(after.rows[0]?.u).not.toBe(roles.app);
    expect(after.rows[0]?.ws ?? '').toBe('');
    const seen = await b.db.transaction(async (tx) => {
      await tx.query(`SET LOCAL ROLE ${roles.app}`);
      const ws = await tx.query<{ ws: string | null }>(
        `select current_setting('app.workspace_id', true) as ws`,
      );
      const rows = await tx.query('select * from notes');
      const members = await tx.query('select * from memberships');
      return { ws: ws.rows[0]?.ws, notes: rows.rows.length, members: members.rows.length };
    });
    // After a prior set_config(..., true) the placeholder exists and reads as '' — nullif maps it to NULL.
    expect(seen.ws ?? '').toBe('');
    expect(seen).toMatchObject({ notes: 0, members: 0 });
    // Explicitly empty setting: still nothing.
    const empty = await b.db.transaction(async (tx) => {
      await applyScope(tx, roles.app, '', '');
      return (await tx.query('select * from notes')).rows.length;
    });
    expect(empty).toBe(0);
  });

  it('nothing a scope leaves on its connection reaches the next borrower: the adapter resets the session', async () => {
    // Each of these outlives COMMIT on the connection (one here: the pool holds one), where the next
    // scope, another user's, or a query outside any scope could read or follow it.
    const leaving = [
      'declare leak cursor with hold for select body from notes',
      'create temporary table staging as select body from notes',
      'create temporary table gone (x int) on commit drop',
      `select set_config('search_path', 'nowhere, public', false)`,
      `select set_config('app.workspace_id', 'ws-b', false), set_config('app.workspace_id', 'ws-a', true)`,
      'select pg_advisory_lock(4242)',
    ];
    for (const sql of leaving)
      await expect(
        withUserScope(b.db, alice, async (tx) => (await tx.query(sql)).rowCount >= 0, opts),
        sql,
      ).resolves.toBe(true);
    const state = `select (select count(*) from pg_cursors where is_holdable)::int as cursors,
                          (select count(*) from pg_class where relnamespace = pg_my_temp_schema())::int as temps,
                          (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid())::int as locks,
                          current_setting('search_path') like 'nowhere%' as path,
                          coalesce(current_setting('app.workspace_id', true), '') as ws`;
    const clean = { cursors: 0, temps: 0, locks: 0, path: false, ws: '' };
    // Bob's scope, on the same connection, finds none of it; nor does a query outside any scope.
    await expect(
      withUserScope(b.db, bob, async (tx) => (await tx.query(state)).rows[0], opts),
    ).resolves.toEqual({ ...clean, ws: 'ws-b' });
    expect((await b.db.query(state)).rows[0]).toEqual(clean);
    // LISTEN takes effect at COMMIT: refused before it is sent.
    await expect(
      withUserScope(b.db, alice, async (tx) => void (await tx.query('listen leak')), opts),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });

  it("sequence values do not pass to the next borrower, nor does a session's open transaction", async () => {
    await withUserScope(b.db, alice, (tx) => tx.query(`insert into notes (body) values ('seq')`), opts);
    // currval/lastval would tell bob the ids alice's inserts took.
    const err = await rejection(withUserScope(b.db, bob, (tx) => tx.query('select lastval()'), opts));
    expect(err).toMatchObject({ code: '55000' });
    // A session whose callback began a transaction and returned: refused, its work not committed.
    expect(
      await rejection(
        b.db.session(async (session) => {
          await session.exec(`begin; insert into notes (workspace_id, body) values ('ws-a', 'left open')`);
        }),
      ),
    ).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect((await b.admin.query(`select 1 from notes where body = 'left open'`)).rowCount).toBe(0);
    // Also when the callback did not await its BEGIN: the connection does not go back inside it.
    expect(
      await rejection(
        b.db.session(async (session) => {
          void session.exec('begin');
          return Promise.resolve();
        }),
      ),
    ).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    await b.db.query(`insert into notes (workspace_id, body) values ('ws-a', 'after the session')`);
    expect((await b.admin.query(`select 1 from notes where body = 'after the session'`)).rowCount).toBe(1);
    await b.admin.query(`delete from notes where body = 'after the session'`);
    // A session's handle kept past its end sends nothing more (it would run after the reset).
    let kept: SqlSession | undefined;
    await b.db.session(async (session) => {
      kept = session;
      return Promise.resolve();
    });
    await expect(kept!.query('select 1')).rejects.toThrow(/ended/);
    await expect(kept!.exec('select 1')).rejects.toThrow(/ended/);
    // Or threw inside it: rolled back, and the next transaction does not commit its work.
    expect(
      await rejection(
        b.db.session(async (session) => {
          await session.exec(`begin; insert into notes (workspace_id, body) values ('ws-a', 'thrown')`);
          throw new Error('callback failed');
        }),
      ),
    ).toMatchObject({ message: 'callback failed' });
    await b.db.transaction(async (tx) => tx.query('select 1'));
    expect((await b.admin.query(`select 1 from notes where body = 'thrown'`)).rowCount).toBe(0);
    // Or left it aborted: refused the same, rolled back, and the session's role does not outlive it.
    const me = (await b.db.query<{ u: string }>('select current_user::text as u')).rows[0]!.u;
    expect(
      await rejection(
        b.db.session(async (session) => {
          await session.exec(`set role ${roles.app}`);
          await session.exec('begin');
          await session.exec('select 1/0').catch(() => undefined);
        }),
      ),
    ).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect((await b.db.query<{ u: string }>('select current_user::text as u')).rows[0]!.u).toBe(me);
    await expect(notes(bob)).resolves.toEqual(['b1']);
    await b.admin.query(`delete from notes where body = 'seq'`);
  });

  if (kind === 'pglite')
    it("a session holds PGlite's one connection: the adapter's other calls wait for its end", async () => {
      const seen: string[] = [];
      let entered!: () => void;
      const inside = new Promise<void>((resolve) => (entered = resolve));
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const me = (await b.db.query<{ u: string }>('select current_user::text as u')).rows[0]!.u;
      const session = b.db.session(async (s) => {
        await s.exec(`set role ${roles.app}`);
        entered();
        await held;
        seen.push(
          `session as ${(await s.query<{ u: string }>('select current_user::text as u')).rows[0]!.u}`,
        );
      });
      await inside;
      const other = b.db
        .query<{ u: string }>('select current_user::text as u')
        .then((r) => seen.push(`query as ${r.rows[0]!.u}`));
      const scope = notes(bob).then((rows) => seen.push(`scope read ${rows.join(',')}`));
      await new Promise((resolve) => setTimeout(resolve, 50));
      release();
      await Promise.all([session, other, scope]);
      expect(seen).toEqual([`session as ${roles.app}`, `query as ${me}`, 'scope read b1']);
      // Every adapter over the same PGlite waits (the test's admin handle is another one).
      seen.length = 0;
      let adminIn!: () => void;
      const adminInside = new Promise<void>((resolve) => (adminIn = resolve));
      let adminRelease!: () => void;
      const adminHeld = new Promise<void>((resolve) => (adminRelease = resolve));
      const adminSession = b.admin.session(async (s) => {
        await s.exec(`set role ${roles.app}`);
        adminIn();
        await adminHeld;
        seen.push('admin session ends');
      });
      await adminInside;
      const fromDb = b.db
        .query<{ u: string }>('select current_user::text as u')
        .then((r) => seen.push(`query as ${r.rows[0]!.u}`));
      await new Promise((resolve) => setTimeout(resolve, 50));
      adminRelease();
      await Promise.all([adminSession, fromDb]);
      expect(seen).toEqual(['admin session ends', `query as ${me}`]);
      // A session opened while another adapter's transaction is in flight waits for that transaction's
      // end and reset: a rolled-back transaction's reset no longer lands inside the session.
      const failing = b.db
        .transaction(async (tx) => {
          await tx.query('select 1');
          await new Promise((resolve) => setTimeout(resolve, 30));
          throw new Error('rolled back');
        })
        .catch(() => 'rolled back');
      const inSession = b.admin.session(async (s) => {
        await s.exec(`set role ${roles.app}`);
        await new Promise((resolve) => setTimeout(resolve, 60));
        return (await s.query<{ u: string }>('select current_user::text as u')).rows[0]!.u;
      });
      expect(await Promise.all([failing, inSession])).toEqual(['rolled back', roles.app]);
    });

  it('a scope refuses a connection that work outside any transaction left state on, which the refusal clears', async () => {
    // A cursor WITH HOLD over every workspace's rows, declared by a query outside any scope on the same
    // pooled connection.
    await b.db.query('declare everything cursor with hold for select body from notes');
    const err = await rejection(
      withUserScope(b.db, bob, async (tx) => (await tx.query('fetch all from everything')).rows, opts),
    );
    expect(err).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect((err as { reason: string }).reason).toBe(
      'before the scope: the connection holds cursors WITH HOLD',
    );
    // A temporary memberships table that would answer the membership check, and a temporary type named
    // int4 with a cast that would turn the check's counts into something else.
    await b.db.query(`create temporary table memberships (workspace_id text, user_id text, roles text[])`);
    await b.db.query(`insert into pg_temp.memberships values ('ws-a', 'bob', '{admin}')`);
    await b.db.query(`create type pg_temp.int4 as enum ('zero')`);
    await b.db.query(
      `create function pg_temp.zero(bigint) returns pg_temp.int4 language sql as $$ select 'zero'::pg_temp.int4 $$`,
    );
    await b.db.query(`create cast (bigint as pg_temp.int4) with function pg_temp.zero(bigint)`);
    const forged = parseUserContext({ userId: 'bob', workspaceId: 'ws-a', roles: ['admin'] });
    expect(await rejection(notes(forged))).toMatchObject({
      code: ErrorCodes.MISCONFIGURED,
      reason: 'before the scope: the connection holds temporary tables or types',
    });
    // The refused scope's rollback reset the connection: the next scope is served, and bob is no
    // member of ws-a.
    await expect(notes(bob)).resolves.toEqual(['b1']);
    expect(await rejection(notes(forged))).toMatchObject({ code: ErrorCodes.MEMBERSHIP_REVOKED });
  });

  it('a callback that changes the scope (its settings or role) is refused: up front, or at its end, with its writes rolled back', async () => {
    const tries = [
      // Refused before they are sent.
      `set local app.workspace_id = 'ws-b'`,
      `set local "app.workspace_id" = 'ws-b'`,
      `set local "ROLE" = none`,
      // Unicode-escaped names (`\0072` is `r`): not read, refused.
      `set local U&"app.workspace_id" = 'ws-b'`,
      `set local u&"\\0072ole" = none`,
      // Escaped letter by letter (8 characters each), and past any window the check reads.
      `set local U&"${[...'session_authorization'].map((c) => `\\+${c.codePointAt(0)!.toString(16).padStart(6, '0')}`).join('')}" = default`,
      `set local U&"${'\\+000061'.repeat(200)}" = 'x'`,
      'set local role none',
      'set local session authorization default',
      `do $$ begin perform set_config('app.workspace_id', 'ws-b', true); end $$`,
      // Through functions: seen at the end of the callback.
      `select set_config('app.workspace_id', 'ws-b', true)`,
      `select set_config('app.workspace_id', 'ws-b', false)`,
      `select set_config('app.roles', 'admin,owner', true)`,
      `select set_config('role', 'none', true)`,
      `select set_config('role', session_user, false)`,
    ];
    for (const sql of tries) {
      const err = await rejection(
        withUserScope(
          b.db,
          carol,
          async (tx) => {
            await tx.query(sql);
            await tx.query(`insert into notes (body) values ('tampered')`);
          },
          opts,
        ),
      );
      expect(err, sql).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      expect((err as { reason: string }).reason, sql).toMatch(
        /^(set local|do)/.test(sql)
          ? /^a statement inside a database scope/
          : /^the scope's role or settings were changed inside its callback/,
      );
    }
    expect((await b.admin.query(`select 1 from notes where body = 'tampered'`)).rowCount).toBe(0);
    // Nothing session-level survived on the connection either.
    const { rows } = await b.db.query<{ ws: string | null }>(
      `select current_setting('app.workspace_id', true) as ws`,
    );
    expect(rows[0]!.ws ?? '').toBe('');
  });

  it('a swallowed SQL error does not report a commit that did not happen', async () => {
    const err = await rejection(
      withUserScope(
        b.db,
        carol,
        async (tx) => {
          await tx.query(`insert into notes (body) values ('lost')`);
          await tx.query('select 1/0').catch(() => undefined);
        },
        opts,
      ),
    );
    expect(String((err as Error).message)).toMatch(/rolled back/i);
    // One SQLSTATE whichever the driver (the pg adapter's error had none: found by review).
    expect(err).toMatchObject({ code: '25P02' });
    expect((await b.admin.query(`select 1 from notes where body = 'lost'`)).rowCount).toBe(0);
  });

  // Carried for several rounds: a scope's statement blocked on a lock held its pooled connection, and
  // its activity, without end.
  it('statementTimeoutMs bounds each statement of the scope, and only of the scope', async () => {
    const show = async (q: { query: ScopedTransaction['query'] }) =>
      (await q.query<{ statement_timeout: string }>('show statement_timeout')).rows[0]?.statement_timeout;
    const outside = await show(b.db);
    expect(await withUserScope(b.db, carol, show, { ...opts, statementTimeoutMs: 250 })).toBe('250ms');
    expect(await withUserScope(b.db, carol, show, opts)).toBe(outside);
    expect(await show(b.db)).toBe(outside);
    if (kind === 'pglite') return; // PGlite runs every statement to its end (no timer interrupts).
    const sink = memoryAuditSink();
    const err = await rejection(
      withUserScope(
        b.db,
        carol,
        async (tx) => {
          await tx.query(`insert into notes (body) values ('timed-out')`);
          await tx.query('select pg_catalog.pg_sleep(5)');
        },
        { ...opts, statementTimeoutMs: 100, auditor: new Auditor([sink]) },
      ),
    );
    expect(err).toMatchObject({ code: '57014' });
    expect((await b.admin.query(`select 1 from notes where body = 'timed-out'`)).rowCount).toBe(0);
    expect(sink.events.map((e) => [e.decision, e.reason, e.detail])).toEqual([
      ['allow', 'ok', `roles=${carol.roles.join(',')}; rolled back`],
    ]);
  });

  // Found by review: a COMMIT whose answer never came was recorded as rolled back, though the work was
  // in the database.
  it('a COMMIT that gets no answer in time is recorded as of unknown outcome, not as rolled back', async () => {
    if (kind === 'pglite') return; // one in-process connection: every answer comes
    await b.admin.query(`create function notes_slow_commit() returns trigger language plpgsql as
      $$ begin if new.body = 'slow-commit' then perform pg_catalog.pg_sleep(1); end if; return null; end $$`);
    await b.admin.query(`create constraint trigger notes_slow_commit after insert on notes
      deferrable initially deferred for each row execute function notes_slow_commit()`);
    const pool = new pg.Pool({ connectionString: b.url, max: 1 });
    const sink = memoryAuditSink();
    try {
      const db = fromPgPool(pool, { onError: () => undefined, queryTimeoutMs: 300 });
      const err = await rejection(
        withUserScope(db, carol, (tx) => tx.query(`insert into notes (body) values ('slow-commit')`), {
          ...opts,
          auditor: new Auditor([sink]),
        }),
      );
      expect(err).toBeInstanceOf(CommitOutcomeUnknownError);
      expect(sink.events.map((e) => [e.decision, e.detail])).toEqual([
        ['allow', `roles=${carol.roles.join(',')}; commit outcome unknown`],
      ]);
      await vi.waitFor(
        async () =>
          expect((await b.admin.query(`select 1 from notes where body = 'slow-commit'`)).rowCount).toBe(1),
        { timeout: 5000 },
      );
    } finally {
      await pool.end();
      await b.admin.query('drop trigger notes_slow_commit on notes');
      await b.admin.query(`delete from notes where body = 'slow-commit'`);
    }
  });

  it('statementTimeoutMs must be an integer from 1 to 3 600 000: anything else is refused, on record', async () => {
    for (const statementTimeoutMs of [0, 1.5, Number.NaN, 3_600_001, '100' as unknown as number]) {
      const sink = memoryAuditSink();
      const err = await rejection(
        withUserScope(b.db, carol, async () => 'ran', {
          ...opts,
          statementTimeoutMs,
          auditor: new Auditor([sink]),
        }),
      );
      expect(err, String(statementTimeoutMs)).toMatchObject({ code: ErrorCodes.MISCONFIGURED });
      expect(sink.events.map((e) => [e.decision, e.reason])).toEqual([['deny', ErrorCodes.MISCONFIGURED]]);
    }
  });

  it('an error inside the scope rolls back and leaves the connection clean; the grant is still audited', async () => {
    const sink = memoryAuditSink();
    const err = await rejection(
      withUserScope(
        b.db,
        carol,
        async (tx) => {
          await tx.query(`insert into notes (body) values ('rolled-back')`);
          throw new Error('boom');
        },
        { ...opts, auditor: new Auditor([sink]) },
      ),
    );
    expect((err as Error).message).toBe('boom');
    // The scope's queries ran before the error: the decision that let them run is on record.
    expect(sink.events.map((e) => [e.action, e.decision, e.userId, e.detail])).toEqual([
      ['db.scope', 'allow', carol.userId, `roles=${carol.roles.join(',')}; rolled back`],
    ]);
    const rows = await b.admin.query(`select 1 from notes where body = 'rolled-back'`);
    expect(rows.rowCount).toBe(0);
    const after = await b.db.query<{ u: string }>('select current_user as u');
    expect(after.rows[0]?.u).not.toBe(roles.app);
  });
});

describe('fromPGlite with a username (a session-level role)', () => {
  it('keeps the role after its session reset: queries outside any scope do not become the superuser', async () => {
    const { PGlite } = await import('@electric-sql/pglite');
    const { fromPGlite } = await import('../../src/postgres/index.js');
    const setup = new PGlite();
    await setup.exec(`create role plain_user login`);
    const dataDir = await setup.dumpDataDir('none');
    await setup.close();
    const lite = new PGlite({ loadDataDir: dataDir, username: 'plain_user' });
    try {
      const db = fromPGlite(lite);
      const who = async () =>
        (
          await db.query<{ role: string; su: string }>(
            `select current_user::text as role, current_setting('is_superuser') as su`,
          )
        ).rows[0];
      expect(await who()).toEqual({ role: 'plain_user', su: 'off' });
      await db.transaction(async (tx) => tx.query('select 1'));
      expect(await who()).toEqual({ role: 'plain_user', su: 'off' });
      await expect(db.transaction(async (tx) => tx.query('select 1/0'))).rejects.toThrow();
      await db.session(async (session) => session.query('select 1'));
      expect(await who()).toEqual({ role: 'plain_user', su: 'off' });
    } finally {
      await lite.close();
    }
  });
});
