import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { Auditor, coalescingAuditSink, type AuditEvent } from '../../src/audit/index.js';
import { ErrorCodes, isUserContextError, parseUserContext } from '../../src/context/index.js';
import {
  AuditBacklogError,
  AuditFlushTimeoutError,
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

  it('holds at most `concurrency` connections however many records wait; batches by workspace; every record is written', async () => {
    // Counts the transactions (pooled connections) the sink holds at once, all it ran and those that
    // failed, through a wrapper.
    const counted = () => {
      let active = 0;
      let peak = 0;
      let total = 0;
      let failed = 0;
      const db: SqlDatabase = {
        driver: b.db.driver,
        query: (sql, params) => b.db.query(sql, params),
        session: (fn) => b.db.session(fn),
        async transaction(fn) {
          peak = Math.max(peak, ++active);
          total++;
          try {
            return await b.db.transaction(fn);
          } catch (err) {
            failed++;
            throw err;
          } finally {
            active--;
          }
        },
      };
      return { db, peak: () => peak, total: () => total, failed: () => failed };
    };
    const workspaces = ['ws-a', 'ws-b', undefined];
    const burst = (into: PostgresAuditSink, action: string) => {
      for (let i = 0; i < 300; i++)
        into.emit({
          time: new Date().toISOString(),
          action,
          decision: 'allow',
          source: 'header',
          reason: 'ok',
          userId: `u${i % 7}`,
          workspaceId: workspaces[i % 3],
          attempt: i,
        });
    };
    for (const concurrency of [undefined, 1, 4]) {
      const { db, peak, total, failed } = counted();
      const limited = postgresAuditSink(db, { appRole: roles.app, concurrency });
      const action = `burst.${concurrency ?? 'default'}`;
      burst(limited, action);
      await limited.flush();
      expect(peak()).toBeGreaterThan(0);
      expect(peak()).toBeLessThanOrEqual(concurrency ?? 2);
      // Seven users in three workspaces: batched by workspace (the records of several users share a
      // transaction), the first records alone while the rest were still being emitted. No batch failed
      // (a wrong batch would be retried record by record, and still end in the table).
      expect(failed()).toBe(0);
      expect(total()).toBeLessThanOrEqual((concurrency ?? 2) + 6);
      const stored = await b.admin.query<{ workspace_id: string | null; n: number }>(
        `select workspace_id, count(distinct attempt)::int as n from audit_log where action = $1
         group by workspace_id order by workspace_id`,
        [action],
      );
      expect(stored.rows).toEqual([
        { workspace_id: 'ws-a', n: 100 },
        { workspace_id: 'ws-b', n: 100 },
        { workspace_id: null, n: 100 },
      ]);
    }
  });

  it.skipIf(kind !== 'postgres')(
    'a write that waits on a lock ends at statementTimeoutMs, is tried again, then reported: no connection held for good',
    async () => {
      const reported: unknown[] = [];
      const bounded = postgresAuditSink(b.db, {
        appRole: roles.app,
        statementTimeoutMs: 200,
        onError: (err) => reported.push(err),
      });
      // A maintenance job holds the table (on its own connection) while the sink writes.
      await b.admin.session(async (s) => {
        await s.exec('begin; lock table audit_log in access exclusive mode');
        try {
          bounded.emit({
            time: new Date().toISOString(),
            action: 'locked',
            decision: 'allow',
            source: 'header',
            reason: 'ok',
          });
          await bounded.flush({ timeoutMs: 20_000 });
        } finally {
          await s.exec('rollback');
        }
      });
      // Three tries (200 ms each, 0.1 and 0.4 s apart), each cancelled: 57014 query_canceled.
      expect(reported).toHaveLength(1);
      expect(reported[0]).toMatchObject({ code: '57014' });
      // The sink goes on writing once the table is free.
      bounded.emit({
        time: new Date().toISOString(),
        action: 'unlocked',
        decision: 'allow',
        source: 'header',
        reason: 'ok',
      });
      await bounded.flush();
      expect(reported).toHaveLength(1);
      expect((await b.admin.query(`select 1 from audit_log where action = 'unlocked'`)).rowCount).toBe(1);
    },
  );

  it('a record the table refuses (a check constraint, 23514) is reported alone; the rest of its batch is written', async () => {
    await b.admin.query(`alter table audit_log add constraint no_poison check (reason <> 'poison')`);
    try {
      const failed: Array<[unknown, string]> = [];
      const sink = postgresAuditSink(b.db, {
        appRole: roles.app,
        concurrency: 1,
        onError: (err, e) => failed.push([(err as { code?: unknown }).code, e.reason]),
      });
      // The first is written alone; the four that wait for it go in one batch, which the table refuses.
      for (const reason of ['ok', 'ok', 'ok', 'poison', 'ok'])
        sink.emit({
          time: new Date().toISOString(),
          action: 'constrained',
          decision: 'allow',
          source: 'header',
          reason,
        });
      await sink.flush();
      expect(failed).toEqual([['23514', 'poison']]);
      const { rows } = await b.admin.query<{ reason: string }>(
        `select reason from audit_log where action = 'constrained'`,
      );
      expect(rows.map((r) => r.reason)).toEqual(['ok', 'ok', 'ok', 'ok']);
    } finally {
      await b.admin.query(`alter table audit_log drop constraint no_poison`);
      await b.admin.query(`delete from audit_log where action = 'constrained'`);
    }
  });

  it('an empty id names nobody: a record with workspaceId "" joins the system records, and is written', async () => {
    const errors: unknown[] = [];
    const direct = postgresAuditSink(b.db, { appRole: roles.app, onError: (err) => errors.push(err) });
    for (let i = 0; i < 5; i++)
      direct.emit({
        time: new Date().toISOString(),
        action: 'empty.id',
        decision: 'deny',
        source: 'none',
        reason: `r${i}`,
        ...(i === 2 ? { userId: '', workspaceId: '' } : {}),
      });
    await direct.flush();
    expect(errors).toEqual([]);
    const { rows } = await b.admin.query<{
      reason: string;
      workspace_id: string | null;
      user_id: string | null;
    }>(`select reason, workspace_id, user_id from audit_log where action = 'empty.id' order by reason`);
    expect(rows).toEqual(
      ['r0', 'r1', 'r2', 'r3', 'r4'].map((reason) => ({ reason, workspace_id: null, user_id: null })),
    );
  });

  it('an own __proto__ key in an event supplies no field to the row, with or without an Auditor', async () => {
    const fields = JSON.parse(
      '{"namespace":"default","__proto__":{"workspaceId":"ws-b","userId":"evil\\nFAKE","detail":"x\\u2028y"}}',
    ) as Record<string, unknown>;
    const event = {
      action: 'proto.test',
      decision: 'deny',
      source: 'header',
      reason: 'R',
      ...fields,
    } as const;
    auditor.emit(event);
    await sink.emit({ time: new Date().toISOString(), ...event });
    // The sink itself reads own fields only: an event whose prototype holds some, given to it directly.
    const inheriting = Object.assign(Object.create(fields.__proto__ as object) as object, {
      time: new Date().toISOString(),
      ...event,
    });
    await sink.emit(inheriting as AuditEvent);
    await sink.flush();
    const rows = await b.admin.query(
      `select user_id, workspace_id, namespace, detail from audit_log where action = 'proto.test'`,
    );
    expect(rows.rows).toEqual(
      Array.from({ length: 3 }, () => ({
        user_id: null,
        workspace_id: null,
        namespace: 'default',
        detail: null,
      })),
    );
  });

  it('a field of the wrong type or form never makes a record fail to be written', async () => {
    const errors: unknown[] = [];
    const strict = postgresAuditSink(b.db, { appRole: roles.app, onError: (err) => errors.push(err) });
    const base = {
      action: 'typed.test',
      decision: 'deny',
      source: 'header',
      reason: 'R',
      workspaceId: 'ws-a',
    };
    const odd: Record<string, unknown>[] = [
      { attempt: 'x' },
      { attempt: 1.5 },
      { attempt: 2 ** 31 },
      { time: 'yesterday' },
      { time: '2026-02-30T00:00:00Z' },
      { reason: { toString: () => 'R' } },
      { detail: ['a\r\nb'] },
      { userId: 42 },
      { detail: 'nul\u0000 and lone \ud800 surrogate' },
    ];
    for (const fields of odd)
      await strict.emit({ ...base, time: new Date().toISOString(), ...fields } as never);
    await strict.flush();
    expect(errors).toEqual([]);
    const rows = await b.admin.query<{ detail: string | null }>(
      `select detail from audit_log where action = 'typed.test'`,
    );
    expect(rows.rows.map((r) => r.detail).sort()).toEqual(
      [
        'invalid fields: attempt',
        'invalid fields: attempt',
        'invalid fields: attempt',
        'invalid fields: time',
        'invalid fields: time',
        'invalid fields: reason',
        'invalid fields: detail',
        'invalid fields: userId',
        'nul\uFFFD and lone \uFFFD surrogate',
      ].sort(),
    );
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

  /** What the scope's first statement reads of a connection without leftovers (what withUserScope checks). */
  const CLEAN_SESSION = [{ held_cursors: 0, channels: 0, temp_objects: 0 }] as never[];

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
        return fn({ query: async () => ({ rows: CLEAN_SESSION, rowCount: 1 }) });
      },
      session: () => Promise.reject(new Error('not used')),
    };
    return { db, state, release: () => release() };
  }

  /**
   * Flushes `sink` with the pauses between its tries on a fake clock, advanced as they are taken;
   * resolves to the milliseconds they took.
   */
  async function flushedWithFakePauses(sink: { flush(): Promise<unknown> }): Promise<number> {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    try {
      const started = Date.now();
      let done = false;
      const flushed = sink.flush().finally(() => (done = true));
      while (!done) await vi.advanceTimersToNextTimerAsync();
      await flushed;
      return Date.now() - started;
    } finally {
      vi.useRealTimers();
    }
  }

  const event = (n: number) => ({
    time: new Date().toISOString(),
    action: `stall.${n}`,
    decision: 'allow' as const,
    source: 'system' as const,
    reason: 'ok',
  });

  it('holds at most maxPending records; the rest are dropped and reported with the event, never thrown', async () => {
    const { db, state, release } = stalledDatabase();
    const errors: unknown[] = [];
    const events: AuditEvent[] = [];
    const sink = postgresAuditSink(db, {
      maxPending: 3,
      // All three records are system records: one "workspace" here.
      maxPendingPerWorkspace: 3,
      concurrency: 1,
      onError: (err, dropped) => {
        errors.push(err);
        events.push(dropped);
      },
    });
    for (let i = 0; i < 8; i++) expect(() => sink.emit(event(i))).not.toThrow();
    // One transaction at a time: the first record is being written, two wait.
    expect(state.started).toBe(1);
    expect(errors).toHaveLength(5);
    for (const [i, err] of errors.entries()) {
      expect(err).toBeInstanceOf(AuditBacklogError);
      expect((err as AuditBacklogError).event.action).toBe(`stall.${i + 3}`);
      expect((err as AuditBacklogError).pending).toBe(3);
      expect(events[i]).toBe((err as AuditBacklogError).event);
    }
    release();
    await sink.flush();
    // The two that waited, in one transaction.
    expect(state.started).toBe(2);
    sink.emit(event(8));
    await sink.flush();
    expect(state.started).toBe(3);
    expect(errors).toHaveLength(5);
  });

  it("one workspace's records cannot crowd the others' out of the backlog (maxPendingPerWorkspace)", async () => {
    const { db, state, release } = stalledDatabase();
    const dropped: AuditBacklogError[] = [];
    const sink = postgresAuditSink(db, {
      maxPending: 10,
      concurrency: 1,
      onError: (err) => dropped.push(err as AuditBacklogError),
    });
    const of = (workspaceId: string | undefined, n: number) => ({
      ...event(n),
      ...(workspaceId ? { workspaceId } : {}),
    });
    // The default share is a quarter of maxPending: 3. The first record is taken at once (in flight).
    for (let i = 0; i < 8; i++) sink.emit(of('ws-noisy', i));
    expect(state.started).toBe(1);
    expect(dropped.map((e) => [e.event.action, e.limit, e.pending])).toEqual(
      [4, 5, 6, 7].map((i) => [`stall.${i}`, 'workspace', 3]),
    );
    // The others still queue: another workspace's records and system records.
    for (let i = 8; i < 11; i++) sink.emit(of('ws-quiet', i));
    sink.emit(of(undefined, 11));
    expect(dropped).toHaveLength(4);
    // Until the whole backlog is full: 1 in flight + 3 + 3 + 1 = 8; two more fit, of any workspace.
    sink.emit(of(undefined, 12));
    sink.emit(of('ws-other', 13));
    sink.emit(of('ws-other', 14));
    expect(dropped.slice(4).map((e) => [e.event.action, e.limit, e.pending])).toEqual([
      ['stall.14', 'all', 10],
    ]);
    release();
    await sink.flush();
  });

  it.each([0, 1.5, 11, '2'])('refuses maxPendingPerWorkspace %s (maxPending 10)', (perWorkspace) => {
    expect(() =>
      postgresAuditSink(stalledDatabase().db, {
        maxPending: 10,
        maxPendingPerWorkspace: perWorkspace as number,
      }),
    ).toThrowError(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
  });

  it('a flush with a deadline gives up on a hung database and reports every record it holds', async () => {
    const { db, state, release } = stalledDatabase();
    const reported: [AuditFlushTimeoutError, string][] = [];
    const sink = postgresAuditSink(db, {
      concurrency: 1,
      onError: (err, e) => reported.push([err as AuditFlushTimeoutError, e.action]),
    });
    const writes = [0, 1, 2].map((i) => sink.emit(event(i)));
    expect(state.started).toBe(1);
    await sink.flush({ timeoutMs: 50 });
    expect(
      reported.map(([err, action]) => [err instanceof AuditFlushTimeoutError, err.written, action]),
    ).toEqual([
      [true, 'no', 'stall.1'],
      [true, 'no', 'stall.2'],
      [true, 'unknown', 'stall.0'],
    ]);
    // The ones it gave up on are settled; the one in its transaction settles when that ends.
    await expect(Promise.all(writes.slice(1))).resolves.toEqual([undefined, undefined]);
    release();
    await sink.flush();
    expect(state.started).toBe(1);
    await expect(sink.flush({ timeoutMs: 0 })).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });

  it('a coalescing sink passes the deadline on: closing over a hung database neither hangs nor loses its summary', async () => {
    const { db, release } = stalledDatabase();
    const reported: [string, string][] = [];
    const sink = coalescingAuditSink(
      postgresAuditSink(db, {
        concurrency: 1,
        onError: (err, e) => reported.push([(err as AuditFlushTimeoutError).written, e.detail ?? e.action]),
      }),
    );
    // Anonymous refusals of one kind: the first is written (and hangs), the second is counted.
    const refusal = { ...event(0), decision: 'deny' as const, source: 'none' as const, reason: 'NO_TOKEN' };
    void sink.emit(refusal);
    void sink.emit(refusal);
    await sink.close({ timeoutMs: 50 });
    expect(reported).toEqual([
      ['no', expect.stringMatching(/^1 more like it in \d+ s, coalesced; first: /)],
      ['unknown', 'stall.0'],
    ]);
    release();
  });

  it('a failed write reaches onError with its record (sanitised), not only the driver error', async () => {
    const { db, release } = stalledDatabase(true);
    const reported: [unknown, AuditEvent][] = [];
    const sink = postgresAuditSink(db, { onError: (err, failed) => reported.push([err, failed]) });
    sink.emit({ ...event(0), userId: 'alice', workspaceId: 'ws-a', detail: 'a\r\nb' });
    release();
    await sink.flush();
    expect(reported).toEqual([
      [
        expect.anything(),
        expect.objectContaining({
          action: 'stall.0',
          userId: 'alice',
          workspaceId: 'ws-a',
          detail: 'a\uFFFD\uFFFDb',
        }),
      ],
    ]);
  });

  it('by default, a record not written (failed or dropped) is one JSON line on stderr', async () => {
    const lines: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const { db, release } = stalledDatabase(true);
    const sink = postgresAuditSink(db, { maxPending: 1 });
    sink.emit({ ...event(0), userId: 'alice', detail: 'first\r\n{"forged":true}' });
    sink.emit({ ...event(1), userId: 'bob', detail: 'second\u2028x' });
    release();
    await sink.flush();
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/^\{[^\r\n\u2028\u2029]*\}\n$/);
    const [dropped, failed] = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(dropped).toMatchObject({
      level: 50,
      name: 'temporal-user-context',
      msg: 'audit_log backlog full: audit_log: 1 writes pending, event dropped',
      audit: { action: 'stall.1', userId: 'bob', detail: 'second\uFFFDx' },
    });
    expect(failed).toMatchObject({
      msg: 'audit_log insert failed: [object Object]',
      audit: { action: 'stall.0', userId: 'alice', detail: 'first\uFFFD\uFFFD{"forged":true}' },
    });
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
    // The record is not lost with the handler: it goes to stderr.
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      msg: 'audit_log insert failed: [object Object]',
      onErrorFailed: '[object Object]',
      audit: { action: 'stall.0' },
    });
  });

  it('a batch whose rows the database refuses is tried record by record; one that failed otherwise is not', async () => {
    /** A database that refuses the rows of a batch holding `poison` with `error`, and commits the rest. */
    const refusing = (error: () => unknown) => {
      const inserted: unknown[][] = [];
      const db: SqlDatabase = {
        driver: 'pg',
        query: async () => ({ rows: [], rowCount: 0 }),
        async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
          const rows: unknown[][] = [];
          const result = await fn({
            query: async (sql: string, params?: unknown[]) => {
              if (sql.startsWith('insert')) {
                if (params?.includes('poison')) throw error();
                for (let i = 0; i < params!.length; i += 17) rows.push(params!.slice(i, i + 17));
              }
              return { rows: CLEAN_SESSION, rowCount: 0 };
            },
          });
          inserted.push(...rows); // committed
          return result;
        },
        session: () => Promise.reject(new Error('not used')),
      };
      return { db, inserted };
    };
    const run = async (error: () => unknown) => {
      const { db, inserted } = refusing(error);
      const failed: AuditEvent[] = [];
      const sink = postgresAuditSink(db, { concurrency: 1, onError: (_err, e) => failed.push(e) });
      // The first is written alone; the four that wait for it go in one transaction, which fails.
      for (let i = 0; i < 5; i++) sink.emit({ ...event(i), ...(i === 3 ? { reason: 'poison' } : {}) });
      await flushedWithFakePauses(sink);
      return { failed: failed.map((e) => e.action), inserted: inserted.map((row) => row[1]).sort() };
    };
    // A check constraint (SQLSTATE 23514): the rows were refused, each is tried alone.
    expect(await run(() => Object.assign(new Error('refused'), { code: '23514' }))).toEqual({
      failed: ['stall.3'],
      inserted: ['stall.0', 'stall.1', 'stall.2', 'stall.4'],
    });
    // No SQLSTATE (a connection lost during the INSERT): tried again as a batch (the poison fails it
    // each time), never record by record; every record of it is reported.
    expect(await run(() => new Error('Connection terminated unexpectedly'))).toEqual({
      failed: ['stall.1', 'stall.2', 'stall.3', 'stall.4'],
      inserted: ['stall.0'],
    });
  });

  it('a batch that failed before its COMMIT is tried again; one that failed at COMMIT is not', async () => {
    /**
     * A database whose transactions fail `failures` times, then commit: before the callback (no
     * connection), in the scope's statement (a refused scope) or after it (at COMMIT).
     */
    const flaky = (where: 'connect' | 'closed' | 'scope' | 'commit', failures: number) => {
      const inserted: unknown[] = [];
      let attempts = 0;
      const db: SqlDatabase = {
        driver: 'pg',
        query: async () => ({ rows: [], rowCount: 0 }),
        async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
          const failing = attempts++ < failures;
          if (failing && where === 'connect') throw new Error('timeout exceeded when trying to connect');
          if (failing && where === 'closed')
            throw Object.assign(new Error('terminating connection due to idle-session timeout'), {
              code: '57P05',
            });
          const rows: unknown[] = [];
          const result = await fn({
            query: async (sql: string, params?: unknown[]) => {
              if (failing && where === 'scope' && sql.includes('set_config'))
                throw Object.assign(new Error('deadlock detected'), { code: '40P01' });
              if (sql.startsWith('insert')) rows.push(params![1]);
              return { rows: CLEAN_SESSION, rowCount: 0 };
            },
          });
          if (failing && where === 'commit') throw new Error('Connection terminated unexpectedly');
          inserted.push(...rows);
          return result;
        },
        session: () => Promise.reject(new Error('not used')),
      };
      return { db, inserted, attempts: () => attempts };
    };
    const attempt = async (where: 'connect' | 'closed' | 'scope', failures: number) => {
      const { db, inserted, attempts } = flaky(where, failures);
      const failed: string[] = [];
      const sink = postgresAuditSink(db, { onError: (_err, e) => failed.push(e.action) });
      sink.emit(event(0));
      const pausedMs = await flushedWithFakePauses(sink);
      return { failed, inserted, attempts: attempts(), pausedMs };
    };
    // A deadlock (SQLSTATE 40P01): tried again twice, then reported.
    expect(await attempt('scope', 2)).toMatchObject({ failed: [], inserted: ['stall.0'], attempts: 3 });
    expect(await attempt('scope', 3)).toMatchObject({ failed: ['stall.0'], inserted: [], attempts: 3 });
    // No connection: tried again for about a minute, what a restart or a failover takes (found by review:
    // reported after the third try, half a second in, the records never reached the table).
    expect(await attempt('connect', 5)).toMatchObject({ failed: [], inserted: ['stall.0'], attempts: 6 });
    const down = await attempt('connect', 9);
    expect(down).toMatchObject({ failed: ['stall.0'], inserted: [], attempts: 9 });
    expect(down.pausedMs).toBeGreaterThanOrEqual(60_000);
    // A connection the server closed (idle_session_timeout, 57P05) is an outage of the same kind (found by
    // review: the adapter counted it so, the sink gave it the deadlock's two retries).
    expect(await attempt('closed', 5)).toMatchObject({ failed: [], inserted: ['stall.0'], attempts: 6 });
    // At COMMIT it may have taken effect: reported, not tried again (it could be written twice).
    const atCommit = flaky('commit', 1);
    const failedAtCommit: string[] = [];
    const sinkAtCommit = postgresAuditSink(atCommit.db, {
      onError: (_err, e) => failedAtCommit.push(e.action),
    });
    sinkAtCommit.emit(event(0));
    await flushedWithFakePauses(sinkAtCommit);
    expect({ failed: failedAtCommit, attempts: atCommit.attempts() }).toEqual({
      failed: ['stall.0'],
      attempts: 1,
    });
  });

  it('a driver that throws synchronously reports each record of the batch and rejects nothing', async () => {
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      const db: SqlDatabase = {
        driver: 'pg',
        query: async () => ({ rows: [], rowCount: 0 }),
        transaction: () => {
          throw new Error('pool ended');
        },
        session: () => Promise.reject(new Error('not used')),
      };
      const failed: string[] = [];
      const sink = postgresAuditSink(db, { onError: (_err, e) => failed.push(e.action) });
      const writes = [0, 1, 2].map((i) => sink.emit(event(i)));
      await sink.flush();
      await expect(Promise.all(writes)).resolves.toEqual([undefined, undefined, undefined]);
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(failed).toEqual(['stall.0', 'stall.1', 'stall.2']);
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
    }
  });

  it.each([0, 1.5, 3_600_001, '100'])('refuses statementTimeoutMs %s', (statementTimeoutMs) => {
    expect(() =>
      postgresAuditSink(stalledDatabase().db, { statementTimeoutMs: statementTimeoutMs as number }),
    ).toThrowError(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
  });

  it.each([0, -1, 1.5, NaN, Infinity])('refuses maxPending %s', (maxPending) => {
    expect(() => postgresAuditSink(stalledDatabase().db, { maxPending })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it.each([0, -1, 1.5, NaN, Infinity, 101, '2'])('refuses concurrency %s', (concurrency) => {
    expect(() =>
      postgresAuditSink(stalledDatabase().db, { concurrency: concurrency as number }),
    ).toThrowError(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
  });
});
