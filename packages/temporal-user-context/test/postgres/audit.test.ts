import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { Auditor } from '../../src/audit/index.js';
import { ErrorCodes, isUserContextError, parseUserContext } from '../../src/context/index.js';
import {
  AuditBacklogError,
  postgresAuditSink,
  queryAuditTrail,
  withUserScope,
  type PostgresAuditSink,
  type AuditTrailFilter,
  type StoredAuditEvent,
  type SqlDatabase,
  type SqlQueryable,
} from '../../src/postgres/index.js';
import { applyScope } from '../../src/postgres/scope.js';
import { createFixtureSchema, uniqueRoles } from './fixture.js';

const roles = uniqueRoles('audit');
const adminA = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
const memberA = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['member'] });
const adminB = parseUserContext({ userId: 'bob', workspaceId: 'ws-b', roles: ['admin'] });

describe.each(BACKENDS)('audit log on %s', (kind) => {
  let b: Backend;
  let sink: PostgresAuditSink;
  let auditor: Auditor;
  const opts = () => ({ appRole: roles.app, auditor });

  beforeAll(async () => {
    b = await openBackend(kind, { prefix: 'audit' });
    await createFixtureSchema(b.admin, roles);
    await b.admin.query(
      `insert into memberships values ('ws-a','alice','{admin,member}'), ('ws-a','carol','{member}'),
       ('ws-b','bob','{admin}'), ('ws-a','erin','{member}')`,
    );
    sink = postgresAuditSink(b.db, { appRole: roles.app });
    auditor = new Auditor([sink]);
  });
  afterAll(async () => {
    await b?.close();
  });

  it('a refusal leaves a row in audit_log, readable by the workspace admin only', async () => {
    const erin = parseUserContext({ userId: 'erin', workspaceId: 'ws-a', roles: ['member'] });
    await b.admin.query(`delete from memberships where user_id = 'erin'`);
    await expect(
      withUserScope(b.db, erin, async () => 1, { ...opts(), audit: { workflowId: 'wf-1' } }),
    ).rejects.toMatchObject({ code: ErrorCodes.MEMBERSHIP_REVOKED });
    await withUserScope(b.db, adminB, async () => 1, opts());
    await sink.flush();

    const stored = await b.admin.query<{
      user_id: string;
      decision: string;
      reason: string;
      workflow_id: string;
    }>(`select user_id, decision, reason, workflow_id from audit_log where user_id = 'erin'`);
    expect(stored.rows).toEqual([
      { user_id: 'erin', decision: 'deny', reason: ErrorCodes.MEMBERSHIP_REVOKED, workflow_id: 'wf-1' },
    ]);

    const trailA = await queryAuditTrail(b.db, adminA, { appRole: roles.app });
    expect(trailA.some((e) => e.userId === 'erin' && e.decision === 'deny' && e.workflowId === 'wf-1')).toBe(
      true,
    );
    expect(trailA.every((e) => e.workspaceId === 'ws-a')).toBe(true);
    expect(typeof trailA[0]?.time).toBe('string');

    const trailB = await queryAuditTrail(b.db, adminB, { appRole: roles.app });
    expect(trailB.length).toBeGreaterThan(0);
    expect(trailB.every((e) => e.workspaceId === 'ws-b')).toBe(true);
  });

  it("pages back through the whole trail, however many newer records there are; another workspace's id gives nothing", async () => {
    // 1,005 newer records (as a member's reads would write) must not put older ones out of reach.
    await b.admin.query(
      `insert into audit_log (time, workspace_id, user_id, action, decision, source, reason)
       select now() - interval '1 day', 'ws-a', 'old', 'old.record', 'allow', 'edge', 'ok'
       union all
       select now() + make_interval(secs => g), 'ws-a', 'flood', 'flood.record', 'allow', 'edge', 'ok'
         from generate_series(1, 1005) g`,
    );
    const seen: StoredAuditEvent[] = [];
    let before: string | undefined;
    for (let page = 0; page < 10; page++) {
      const events = await queryAuditTrail(b.db, adminA, {
        appRole: roles.app,
        limit: 400,
        ...(before ? { before } : {}),
      });
      if (events.length === 0) break;
      seen.push(...events);
      before = events.at(-1)!.id;
    }
    const ids = seen.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length); // no record twice
    expect(seen.filter((e) => e.userId === 'flood')).toHaveLength(1005);
    expect(seen.at(-1)).toMatchObject({ userId: 'old', action: 'old.record' });
    const times = seen.map((e) => Date.parse(e.time));
    expect(times).toEqual([...times].sort((x, y) => y - x)); // newest first throughout
    // A cursor of another workspace matches nothing under RLS; a cursor that is not an id is refused.
    const bRecord = (await queryAuditTrail(b.db, adminB, { appRole: roles.app, limit: 1 }))[0]!;
    expect(await queryAuditTrail(b.db, adminA, { appRole: roles.app, before: bRecord.id })).toEqual([]);
    const err = await queryAuditTrail(b.db, adminA, { appRole: roles.app, before: "x' or 1=1" }).catch(
      (e: unknown) => e,
    );
    expect(isUserContextError(err, ErrorCodes.MISCONFIGURED)).toBe(true);
    await b.admin.query(`delete from audit_log where user_id in ('old', 'flood')`);
  });

  it('filters by user, action, decision, reason and workflow; within the workspace only', async () => {
    await b.admin.query(
      `insert into audit_log (time, workspace_id, user_id, action, decision, source, reason, workflow_id)
       values (now(), 'ws-a', 'frank', 'activity.execute', 'deny', 'header', 'USER_CONTEXT_REVOKED', 'wf-f1'),
              (now(), 'ws-a', 'frank', 'activity.execute', 'allow', 'header', 'ok', 'wf-f2'),
              (now(), 'ws-a', 'frank', 'client.start', 'allow', 'edge', 'ok', 'wf-f2'),
              (now(), 'ws-a', 'grace', 'activity.execute', 'deny', 'header', 'USER_CONTEXT_REVOKED', 'wf-f1'),
              (now(), 'ws-b', 'frank', 'activity.execute', 'deny', 'header', 'USER_CONTEXT_REVOKED', 'wf-f1')`,
    );
    const trail = (filter: AuditTrailFilter) =>
      queryAuditTrail(b.db, adminA, { appRole: roles.app, filter }).then((events) =>
        events.map((e) => [e.userId, e.action, e.decision, e.workflowId]).sort(),
      );
    expect(await trail({ userId: 'frank' })).toEqual([
      ['frank', 'activity.execute', 'allow', 'wf-f2'],
      ['frank', 'activity.execute', 'deny', 'wf-f1'],
      ['frank', 'client.start', 'allow', 'wf-f2'],
    ]);
    expect(await trail({ userId: 'frank', decision: 'deny' })).toEqual([
      ['frank', 'activity.execute', 'deny', 'wf-f1'],
    ]);
    expect(await trail({ workflowId: 'wf-f1', reason: 'USER_CONTEXT_REVOKED' })).toEqual([
      ['frank', 'activity.execute', 'deny', 'wf-f1'],
      ['grace', 'activity.execute', 'deny', 'wf-f1'],
    ]);
    expect(await trail({ action: 'client.start', workflowId: 'wf-f2' })).toEqual([
      ['frank', 'client.start', 'allow', 'wf-f2'],
    ]);
    // Values are bind parameters, never SQL.
    expect(await trail({ userId: "frank' or '1'='1" })).toEqual([]);
    // Compared as stored: a workflow id past the records' cap (256 characters) still finds its own.
    const long = `wf-${'x'.repeat(400)}`;
    const auditor2 = new Auditor([sink]);
    auditor2.emit({
      action: 'activity.execute',
      decision: 'deny',
      source: 'header',
      reason: 'USER_CONTEXT_REVOKED',
      userId: 'frank',
      workspaceId: 'ws-a',
      workflowId: long,
    });
    await sink.flush();
    expect(await trail({ workflowId: long })).toEqual([
      ['frank', 'activity.execute', 'deny', expect.stringMatching(/^wf-x+…$/)],
    ]);
    for (const filter of [
      { decision: 'maybe' },
      { userId: '' },
      { tenant: 'ws-b' },
      { action: 'x'.repeat(1001) },
    ]) {
      const err = await queryAuditTrail(b.db, adminA, { appRole: roles.app, filter: filter as never }).catch(
        (e: unknown) => e,
      );
      expect(isUserContextError(err, ErrorCodes.MISCONFIGURED), JSON.stringify(filter)).toBe(true);
    }
    await b.admin.query(`delete from audit_log where user_id in ('frank', 'grace')`);
  });

  it('a limit under 1 reads one row; a limit that is not a finite number is refused', async () => {
    expect(await queryAuditTrail(b.db, adminA, { appRole: roles.app, limit: 1 })).toHaveLength(1);
    expect((await queryAuditTrail(b.db, adminA, { appRole: roles.app, limit: 0 })).length).toBe(1);
    for (const limit of [Number.NaN, Number.POSITIVE_INFINITY, '5' as unknown as number]) {
      const err = await queryAuditTrail(b.db, adminA, { appRole: roles.app, limit }).catch((e: unknown) => e);
      expect(isUserContextError(err, ErrorCodes.MISCONFIGURED), String(limit)).toBe(true);
    }
  });

  it('a non-admin cannot read the trail', async () => {
    const err = await queryAuditTrail(b.db, memberA, { appRole: roles.app }).catch((e: unknown) => e);
    expect(isUserContextError(err, ErrorCodes.ROLE_MISSING)).toBe(true);
    // Even bypassing queryAuditTrail, the policy shows a non-admin nothing.
    const rows = await withUserScope(
      b.db,
      memberA,
      async (tx) => (await tx.query('select * from audit_log')).rows,
      {
        appRole: roles.app,
      },
    );
    expect(rows).toEqual([]);
  });

  it('the app role can neither update nor delete audit records, nor forge another workspace', async () => {
    await sink.flush();
    for (const sql of [`update audit_log set reason = 'ok'`, 'delete from audit_log']) {
      const err = await withUserScope(b.db, adminA, (tx) => tx.query(sql), { appRole: roles.app }).catch(
        (e: unknown) => e,
      );
      expect(String((err as Error).message)).toMatch(/permission denied/);
    }
    const forged = await b.db
      .transaction(async (tx) => {
        await applyScope(tx, roles.app, 'alice', 'ws-a');
        await tx.query(
          `insert into audit_log (time, action, decision, source, reason, workspace_id) values (now(), 'x', 'allow', 'none', 'ok', 'ws-b')`,
        );
      })
      .catch((e: unknown) => e);
    expect(String((forged as Error).message)).toMatch(/row-level security/);
  });

  it('system records (no workspace) are accepted and visible to no workspace', async () => {
    auditor.emit({
      action: 'system.job',
      decision: 'allow',
      source: 'system',
      reason: 'ok',
      principal: 'nightly',
    });
    await sink.flush();
    const rows = await b.admin.query(`select workspace_id from audit_log where principal = 'nightly'`);
    expect(rows.rows).toEqual([{ workspace_id: null }]);
    const trail = await queryAuditTrail(b.db, adminA, { appRole: roles.app });
    expect(trail.some((e) => e.principal === 'nightly')).toBe(false);
  });

  it('hostile strings are stored as data (sanitised by the Auditor), never as SQL', async () => {
    auditor.emit({
      action: 'db.scope',
      decision: 'deny',
      source: 'header',
      reason: 'x',
      workspaceId: 'ws-a',
      detail: `'); delete from audit_log; --\r\nforged`,
    });
    await sink.flush();
    const rows = await b.admin.query<{ detail: string }>(`select detail from audit_log where reason = 'x'`);
    expect(rows.rows[0]?.detail).toBe(`'); delete from audit_log; --\uFFFD\uFFFDforged`);
    expect((await b.admin.query('select 1 from audit_log')).rowCount).toBeGreaterThan(2);
  });
});

describe('audit sink while the database stalls', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** A database whose transactions wait until released (a stalled server, an exhausted pool). */
  function stalledDatabase(fail = false) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const state = { started: 0 };
    const db: SqlDatabase = {
      driver: 'pg',
      query: async () => ({ rows: [], rowCount: 0 }),
      async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
        state.started++;
        await gate;
        if (fail) throw Object.create(null);
        return fn({ query: async () => ({ rows: [], rowCount: 1 }) });
      },
      session: () => Promise.reject(new Error('not used')),
    };
    return { db, state, release: () => release() };
  }

  const event = (n: number) => ({
    time: new Date().toISOString(),
    action: `stall.${n}`,
    decision: 'allow' as const,
    source: 'system' as const,
    reason: 'ok',
  });

  it('holds at most maxPending writes; the rest are dropped and reported with the event, never thrown', async () => {
    const { db, state, release } = stalledDatabase();
    const errors: unknown[] = [];
    const sink = postgresAuditSink(db, { maxPending: 3, onError: (err) => errors.push(err) });
    for (let i = 0; i < 8; i++) expect(() => sink.emit(event(i))).not.toThrow();
    expect(state.started).toBe(3);
    expect(errors).toHaveLength(5);
    for (const [i, err] of errors.entries()) {
      expect(err).toBeInstanceOf(AuditBacklogError);
      expect((err as AuditBacklogError).event.action).toBe(`stall.${i + 3}`);
      expect((err as AuditBacklogError).pending).toBe(3);
    }
    release();
    await sink.flush();
    sink.emit(event(8));
    await sink.flush();
    expect(state.started).toBe(4);
    expect(errors).toHaveLength(5);
  });

  it('an onError that throws, on a value that cannot be printed, leaves no rejected write behind', async () => {
    const lines: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const { db, release } = stalledDatabase(true);
    const sink = postgresAuditSink(db, {
      onError: () => {
        throw Object.create(null);
      },
    });
    const write = sink.emit(event(0));
    release();
    await expect(write).resolves.toBeUndefined();
    await sink.flush();
    expect(lines).toEqual(['temporal-user-context: audit_log insert failed: [object Object]\n']);
  });

  it.each([0, -1, 1.5, NaN, Infinity])('refuses maxPending %s', (maxPending) => {
    expect(() => postgresAuditSink(stalledDatabase().db, { maxPending })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });
});
