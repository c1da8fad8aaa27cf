import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { PG_MIGRATE_LOCK_ID } from 'node-pg-migrate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserContextError, parseUserContext } from 'temporal-user-context';
import {
  assertIsolation,
  fromPgPool,
  postgresAuditSink,
  withUserScope,
} from 'temporal-user-context/postgres';
import { BACKENDS, type Backend } from '../../../../test-support/db-backends.js';
import { createTestDatabase } from '../../../../test-support/postgres.js';
import { MIGRATIONS_DIR, migrate } from '../../src/data/migrate.js';
import { openPlatformDb } from './helpers.js';

/**
 * The platform's migrations, in order, each with the first 16 hex digits of its file's SHA-256. Written
 * out: a file added, renamed or edited must change this test. An applied migration is frozen (found by
 * review: one renamed and rewritten after release stopped every database that had applied it at
 * `checkOrder`, and one fixed by hand kept the older SQL): a change goes into a new migration.
 */
const PINNED: ReadonlyArray<readonly [string, string]> = [
  ['0001_tenancy', '11fabdf97a5bd298'],
  ['0002_agents', '23612c6c5f727196'],
  ['0003_audit_log', 'da4c553c0b537776'],
  ['0004_agent_runs_one_per_workflow', 'fe854cbb84774edc'],
  ['0005_agent_runs_outlive_agents', '6eb7c6b0d6090af7'],
  ['0006_ids_from_identity_providers', 'e0cf26fd7f1fde50'],
  ['0007_admin_writes_agents_documents', '0e81d51b5c786ba7'],
  ['0008_agent_runs_open_index', '95b0c86d9ad3d06c'],
  ['0009_sealed_scopes', 'ba0639d03c6a2114'],
  ['0010_tenant_keys_lead_with_workspace', 'ae8fcfd867b66577'],
  ['0011_audit_records_from_the_sink_only', 'e1cdd8fecfc7ab58'],
  ['0012_agent_schedules', '3cfbe221a92f1fb7'],
  ['0013_authors_are_the_scope_user', '1437bd2f86fc29e0'],
  ['0014_agent_schedules_name_their_agent', '15d9c25b677400b6'],
  ['0015_run_idempotency_keys', '2b1a6b1d6fb6f352'],
  ['0016_schedule_idempotency_keys', '8eb119642dad47b2'],
  ['0017_listing_page_indexes', 'd3d2ffdddc822938'],
  ['0018_seal_per_transaction_start_and_user_led_indexes', 'df376b8840ec06a2'],
  ['0019_membership_role_grants', '00336ffd58fdb932'],
  ['0020_seal_version', '5a12859dafdfd4a0'],
];
const MIGRATIONS = PINNED.map(([name]) => name);

const TENANT_TABLES = [
  'agent_runs',
  'agent_schedules',
  'agents',
  'audit_log',
  'documents',
  'memberships',
  'workspaces',
];

describe('agent platform migration files', () => {
  it('are the pinned ones, unedited', async () => {
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
    const found = await Promise.all(
      files.map(async (file) => [
        file.slice(0, -'.sql'.length),
        createHash('sha256')
          .update(await readFile(join(MIGRATIONS_DIR, file)))
          .digest('hex')
          .slice(0, 16),
      ]),
    );
    expect(found).toEqual(PINNED);
  });
});

describe.each(BACKENDS)('agent platform migrations on %s', (kind) => {
  let b: Backend;
  beforeAll(async () => {
    b = await openPlatformDb(kind, 'migrate');
  });
  afterAll(async () => {
    await b?.close();
  });

  it('are idempotent and pass the isolation guard', async () => {
    expect(await migrate(b.admin)).toEqual([]);
    const report = await assertIsolation(b.admin, {
      appRole: 'app_user',
      tenantTables: ['workspaces'],
      seal: true,
    });
    expect(report.tenantTables).toEqual(TENANT_TABLES);
  });

  it("index tenant tables by workspace first: another index's scan counts other workspaces' rows", async () => {
    // Row-level security is an index condition only on an index led by workspace_id; on another it is a
    // filter, and `explain analyze` in a member's scope counts the rows it removed (found by review: a
    // member enumerated every user id through memberships (user_id)). The keys of `workspaces` (its id
    // is the workspace) and of `audit_log` (random ids, of rows members cannot read) are not tenant-led.
    const { rows } = await b.admin.query<{ index: string; first: string }>(
      `select i.relname as index, a.attname as first
         from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid
         join pg_namespace n on n.oid = t.relnamespace
         join pg_attribute a on a.attrelid = t.oid and a.attnum = x.indkey[0]
        where n.nspname = 'public' and t.relname = any ($1::text[])
        order by 1`,
      [TENANT_TABLES],
    );
    expect(rows.length).toBeGreaterThan(10);
    expect(rows.filter((r) => r.first !== 'workspace_id').map((r) => r.index)).toEqual([
      'audit_log_pkey',
      'workspaces_pkey',
    ]);
  });

  it('leave every table owned by the owner role, with RLS enabled and forced', async () => {
    const { rows } = await b.admin.query<{ relname: string; owner: string; rls: boolean; force: boolean }>(
      `select c.relname, pg_get_userbyid(c.relowner) as owner, c.relrowsecurity as rls, c.relforcerowsecurity as force
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind = 'r' order by c.relname collate "C"`,
    );
    expect(rows.map((r) => r.relname)).toEqual([...TENANT_TABLES, 'pgmigrations'].sort());
    for (const r of rows) {
      expect(r.owner).toBe('agent_owner');
      if (r.relname !== 'pgmigrations') expect([r.relname, r.rls, r.force]).toEqual([r.relname, true, true]);
    }
    const role = await b.admin.query<{ rolsuper: boolean; rolbypassrls: boolean; rolcanlogin: boolean }>(
      `select rolsuper, rolbypassrls, rolcanlogin from pg_roles where rolname = 'app_user'`,
    );
    expect(role.rows).toEqual([{ rolsuper: false, rolbypassrls: false, rolcanlogin: false }]);
  });

  it('grant the app role no UPDATE/DELETE on audit_log and nothing on pgmigrations', async () => {
    const { rows } = await b.admin.query<{ t: string; p: string; ok: boolean }>(
      `select t, p, has_table_privilege('app_user', t, p) as ok
         from unnest(array['audit_log','pgmigrations']) t, unnest(array['SELECT','INSERT','UPDATE','DELETE']) p
        order by t, p`,
    );
    expect(rows.filter((r) => r.ok).map((r) => `${r.t}:${r.p}`)).toEqual([
      'audit_log:INSERT',
      'audit_log:SELECT',
    ]);
  });

  it('policies read the setting once per query (InitPlan), not per row', async () => {
    const plan = await b.db.transaction(async (tx) => {
      await tx.query('set local role app_user');
      await tx.query(`select set_config('app.workspace_id', 'ws-a', true)`);
      const { rows } = await tx.query<Record<string, string>>('explain select * from documents');
      return rows.map((r) => Object.values(r)[0]).join('\n');
    });
    expect(plan).toMatch(/InitPlan/);
  });

  it("0008: the quota's count of open runs can read the open runs' index, not the workspace's every run", async () => {
    const plan = await b.db.transaction(async (tx) => {
      await tx.query('set local role app_user');
      await tx.query(`select set_config('app.workspace_id', 'ws-a', true)`);
      // The tables are nearly empty here: the planner is told to prefer an index, as on a full table.
      await tx.query('set local enable_seqscan = off');
      const { rows } = await tx.query<Record<string, string>>(
        `explain select 1 from agent_runs where status in ('pending', 'running') limit 100`,
      );
      return rows.map((r) => Object.values(r)[0]).join('\n');
    });
    expect(plan).toMatch(/agent_runs_open_idx/);
  });

  it('0009: SQL in a scope that sets another workspace reads and writes nothing there', async () => {
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    await b.admin.query(
      `insert into agents (workspace_id, name, model, created_by) values ('ws-b', 'b-bot', 'm', 'bob')`,
    );
    const seen = await withUserScope(b.db, alice, async (tx) => {
      await tx.query(`select set_config('app.workspace_id', 'ws-b', true)`);
      const agents = (await tx.query(`select name from agents`)).rows;
      const members = (await tx.query(`select user_id from memberships`)).rows;
      await tx.query(`select set_config('app.workspace_id', 'ws-a', true)`);
      return { agents, members };
    });
    expect(seen).toEqual({ agents: [], members: [] });
    // Writes: an insert there (its workspace defaults to the changed setting) is refused by the
    // policies; an update finds nothing to change. Each in a scope of its own (a refused statement
    // aborts its transaction), and each scope then refused for the changed setting.
    const attempt = (sql: string) =>
      withUserScope(b.db, alice, async (tx) => {
        await tx.query(`select set_config('app.workspace_id', 'ws-b', true)`);
        return (await tx.query(sql)).rowCount;
      }).catch((err: unknown) => err as { code?: string; cause?: { code?: string } });
    const inserted = await attempt(`insert into agents (name, model) values ('planted', 'm')`);
    expect(inserted).toMatchObject({ code: '42501' });
    const updated = await attempt(`update agents set name = 'hijacked' where workspace_id = 'ws-b'`);
    expect(updated === 0 || isUserContextError(updated)).toBe(true);
    const { rows } = await b.admin.query<{ name: string }>(
      `select name from agents where workspace_id = 'ws-b' order by name`,
    );
    expect(rows.map((r) => r.name)).toEqual(['b-bot']);
    await b.admin.query(`delete from agents where name = 'b-bot'`);
  });

  it("0011: SQL in a user's scope plants no audit record; the audit sink's land", async () => {
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    const plant = (workspace: string | null, user: string | null) =>
      withUserScope(b.db, alice, (tx) =>
        tx.query(
          `insert into audit_log (time, action, decision, source, reason, workspace_id, user_id)
           values (now(), 'planted', 'allow', 'header', 'ok', $1, $2)`,
          [workspace, user],
        ),
      );
    for (const [workspace, user] of [
      ['ws-a', 'bob'],
      ['ws-a', 'alice'],
      [null, null],
    ] as const)
      await expect(plant(workspace, user), `${workspace}/${user}`).rejects.toMatchObject({ code: '42501' });
    const errors: unknown[] = [];
    const sink = postgresAuditSink(b.db, { onError: (err) => errors.push(err) });
    const record = {
      time: new Date().toISOString(),
      action: 'sunk',
      decision: 'allow',
      source: 'header',
      reason: 'ok',
    } as const;
    sink.emit({ ...record, workspaceId: 'ws-a', userId: 'alice' });
    sink.emit({ ...record });
    await sink.flush();
    expect(errors).toEqual([]);
    const { rows } = await b.admin.query(
      `select action, workspace_id from audit_log where action in ('planted', 'sunk') order by workspace_id`,
    );
    expect(rows).toEqual([
      { action: 'sunk', workspace_id: 'ws-a' },
      { action: 'sunk', workspace_id: null },
    ]);
  });

  it("0013: a row's author is the scope's user, and stays so; what the application updates still updates", async () => {
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    const agent = await b.admin.query<{ id: string }>(
      `insert into agents (workspace_id, name, model, created_by) values ('ws-a', 'authored', 'm', 'alice') returning id::text as id`,
    );
    const agentId = agent.rows[0]!.id;
    const inScope = (sql: string, params: unknown[] = []) =>
      withUserScope(b.db, alice, (tx) => tx.query(sql, params));
    // Naming another member as the author of a new row, or writing a run's state, result or creation
    // time: the columns the application never writes take their defaults (no privilege on them).
    for (const sql of [
      `insert into agent_runs (agent_id, created_by) values ($1, 'carol')`,
      `insert into agent_runs (agent_id, status, result) values ($1, 'completed', '"forged"')`,
      `insert into agent_runs (agent_id, created_at) values ($1, now() - interval '400 days')`,
      `insert into agents (name, model, created_by) values ('x', 'm', 'carol')`,
      `insert into documents (title, created_by) values ('x', 'carol')`,
    ])
      await expect(inScope(sql, sql.includes('$1') ? [agentId] : []), sql).rejects.toThrow(
        /permission denied/,
      );
    // Nor through the author's default, which reads a setting SQL in the scope can change: the
    // restrictive policies hold it to the sealed user.
    for (const sql of [
      `insert into agent_runs (agent_id) values ($1)`,
      `insert into agents (name, model) values ('x', 'm')`,
      `insert into documents (title) values ('x')`,
    ])
      await expect(
        withUserScope(b.db, alice, async (tx) => {
          await tx.query(`select set_config('app.user_id', 'carol', true)`);
          return tx.query(sql, sql.includes('$1') ? [agentId] : []);
        }),
        sql,
      ).rejects.toThrow(/row-level security/);
    // Rewriting an author, a run's input or its creation time: no privilege on those columns.
    const run = await inScope(
      `insert into agent_runs (agent_id, input) values ($1, '"in"') returning id::text as id`,
      [agentId],
    );
    const runId = (run.rows[0] as { id: string }).id;
    for (const sql of [
      `update agent_runs set created_by = 'carol' where id = $1`,
      `update agent_runs set input = '"changed"' where id = $1`,
      `update agent_runs set created_at = now() - interval '1 day' where id = $1`,
      `update agents set created_by = 'carol' where id = $1`,
    ])
      await expect(inScope(sql, [sql.includes('agents ') ? agentId : runId]), sql).rejects.toThrow(
        /permission denied/,
      );
    // The application's own updates pass, and an admin edits another admin's agent.
    await inScope(
      `update agent_runs set status = 'running', run_id = 'r1', updated_at = now() where id = $1`,
      [runId],
    );
    const carolAdmin = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    await b.admin.query(`update memberships set roles = '{admin,member}' where user_id = 'carol'`);
    try {
      await withUserScope(b.db, carolAdmin, (tx) =>
        tx.query(`update agents set name = 'renamed', updated_at = now() where id = $1`, [agentId]),
      );
    } finally {
      await b.admin.query(`update memberships set roles = '{member}' where user_id = 'carol'`);
    }
    const { rows } = await b.admin.query(
      `select r.created_by as run_author, r.status, a.name, a.created_by as agent_author
         from agent_runs r join agents a on a.id = r.agent_id where r.id = $1`,
      [runId],
    );
    expect(rows).toEqual([
      { run_author: 'alice', status: 'running', name: 'renamed', agent_author: 'alice' },
    ]);
    await b.admin.query(`delete from agent_runs where id = $1`, [runId]);
    await b.admin.query(`delete from agents where id = $1`, [agentId]);
  });

  it('0019: dates the roles of memberships that were there before it by their creation', async () => {
    // Rolled back to before 0019 (and 0020), a membership written then, and 0019 again: it runs as the
    // owner, with row-level security forced on it too (found by an upgrade rehearsal: its update saw no
    // row, and every token was refused once the API checked grants).
    const after = MIGRATIONS.slice(MIGRATIONS.indexOf('0019_membership_role_grants'));
    expect((await migrate(b.admin, { direction: 'down', count: after.length })).map((m) => m.name)).toEqual(
      [...after].reverse(),
    );
    await b.admin.query(
      `insert into memberships (workspace_id, user_id, roles, created_at)
       values ('ws-a', 'veteran', '{admin,member}', '2026-01-02T03:04:05Z')`,
    );
    expect((await migrate(b.admin)).map((m) => m.name)).toEqual(after);
    const { rows } = await b.admin.query<{ role_since: Record<string, string>; undated: number }>(
      `select role_since, (select count(*)::int from memberships where roles <> '{}' and role_since = '{}') as undated
         from memberships where workspace_id = 'ws-a' and user_id = 'veteran'`,
    );
    expect(rows[0]!.undated).toBe(0);
    expect(Object.keys(rows[0]!.role_since).sort()).toEqual(['admin', 'member']);
    expect(Date.parse(rows[0]!.role_since.admin!)).toBe(Date.parse('2026-01-02T03:04:05Z'));
    await b.admin.query(`delete from memberships where user_id = 'veteran'`);
  });

  it('0019: dates each role by its grant, whoever writes the row, and no scope dates one back', async () => {
    const since = async (user: string) =>
      (
        await b.admin.query<{ role_since: Record<string, string> }>(
          `select role_since from memberships where workspace_id = 'ws-a' and user_id = $1`,
          [user],
        )
      ).rows[0]?.role_since;
    await b.admin.query(
      `insert into memberships (workspace_id, user_id, roles, role_since)
       values ('ws-a', 'grantee', '{member}', '{"member": "2000-01-01T00:00:00+00:00", "admin": "2000-01-01T00:00:00+00:00"}')`,
    );
    const first = await since('grantee');
    expect(Object.keys(first!)).toEqual(['member']);
    expect(Date.parse(first!.member!)).toBeGreaterThan(Date.parse('2026-01-01'));
    // An admin's scope raises the member to admin, and tries to date both grants back.
    const admin = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    await withUserScope(b.db, admin, (tx) =>
      tx.query(
        `update memberships set roles = '{member,admin}',
                role_since = '{"member": "2000-01-01T00:00:00+00:00", "admin": "2000-01-01T00:00:00+00:00"}'
          where user_id = 'grantee'`,
      ),
    );
    const raised = await since('grantee');
    // The role held already keeps its time; the new one gets the statement's.
    expect(raised!.member).toBe(first!.member);
    expect(Date.parse(raised!.admin!)).toBeGreaterThan(Date.parse(first!.member!));
    // Taken away and given again: a new grant.
    await b.admin.query(`update memberships set roles = '{member}' where user_id = 'grantee'`);
    expect(Object.keys((await since('grantee'))!)).toEqual(['member']);
    await b.admin.query(`update memberships set roles = '{member,admin}' where user_id = 'grantee'`);
    expect(Date.parse((await since('grantee'))!.admin!)).toBeGreaterThan(Date.parse(raised!.admin!));
    // Moved to another user by an admin's scope: that user's grants are new, not the row's old ones
    // (found by review: a removed member's old token came back with another member's grant times).
    const before = await since('grantee');
    await withUserScope(b.db, admin, (tx) =>
      tx.query(`update memberships set user_id = 'grantee-2' where user_id = 'grantee'`),
    );
    const moved = await since('grantee-2');
    expect(Date.parse(moved!.member!)).toBeGreaterThan(Date.parse(before!.member!));
    expect(Date.parse(moved!.admin!)).toBeGreaterThan(Date.parse(before!.admin!));
    // A null among the roles is no role (it failed the trigger, and 0019's own update).
    await b.admin.query(`update memberships set roles = array['member', null] where user_id = 'grantee-2'`);
    expect(Object.keys((await since('grantee-2'))!)).toEqual(['member']);
    await b.admin.query(`delete from memberships where user_id in ('grantee', 'grantee-2')`);
  });

  it('0004 leaves one run record per workflow and workspace, the one its workflow wrote to', async () => {
    // node-pg-migrate reads a count of 0 as "all": refused rather than reverting every migration.
    for (const count of [0, -1, 1.5, Number.NaN])
      await expect(migrate(b.admin, { direction: 'down', count }), String(count)).rejects.toThrow(/count/);
    expect(
      (await migrate(b.admin, { direction: 'down', count: MIGRATIONS.length - 3 })).map((m) => m.name),
    ).toEqual(MIGRATIONS.slice(3).reverse());
    const agent = async (ws: string) =>
      (
        await b.admin.query<{ id: string }>(
          `insert into agents (workspace_id, name, model, created_by) values ($1, 'dup', 'm', 'x') returning id::text as id`,
          [ws],
        )
      ).rows[0]!.id;
    const [agentA, agentB] = [await agent('ws-a'), await agent('ws-b')];
    // What overlapping ensureRunRecord attempts could leave: the workflow wrote to one row only.
    const run = async (ws: string, agentId: string, workflowId: string | null, status: string, at: string) =>
      (
        await b.admin.query<{ id: string }>(
          `insert into agent_runs (workspace_id, agent_id, workflow_id, status, created_by, created_at, updated_at)
           values ($1, $2, $3, $4, 'x', $5, $5) returning id::text as id`,
          [ws, agentId, workflowId, status, at],
        )
      ).rows[0]!.id;
    await run('ws-a', agentA, 'wf-dup', 'pending', '2026-01-01T00:00:00Z');
    const written = await run('ws-a', agentA, 'wf-dup', 'completed', '2026-01-01T00:00:01Z');
    await run('ws-a', agentA, 'wf-dup', 'pending', '2026-01-01T00:00:02Z');
    const otherWorkspace = await run('ws-b', agentB, 'wf-dup', 'pending', '2026-01-01T00:00:00Z');
    const noWorkflow = [
      await run('ws-a', agentA, null, 'pending', '2026-01-01T00:00:00Z'),
      await run('ws-a', agentA, null, 'pending', '2026-01-01T00:00:00Z'),
    ];

    expect((await migrate(b.admin)).map((m) => m.name)).toEqual(MIGRATIONS.slice(3));
    const { rows } = await b.admin.query<{ id: string }>(
      `select id::text as id from agent_runs where agent_id in ($1, $2) order by id`,
      [agentA, agentB],
    );
    expect(rows.map((r) => r.id)).toEqual([written, otherWorkspace, ...noWorkflow].sort());
    await expect(run('ws-a', agentA, 'wf-dup', 'pending', '2026-01-01T00:00:03Z')).rejects.toThrow(
      /agent_runs_workspace_workflow_key/,
    );
    await assertIsolation(b.admin, { appRole: 'app_user', tenantTables: ['workspaces'], seal: true });
    // Agents with runs cannot be deleted (0005): their runs go first.
    await b.admin.query(`delete from agent_runs where agent_id in ($1, $2)`, [agentA, agentB]);
    await b.admin.query(`delete from agents where id in ($1, $2)`, [agentA, agentB]);
  });

  it('0006 stores the ids identity providers issue, and still refuses what the id format refuses', async () => {
    const member = (userId: string) =>
      b.admin.query(
        `insert into memberships (workspace_id, user_id, roles) values ('ws-a', $1, '{member}')`,
        [userId],
      );
    const workspace = (id: string) =>
      b.admin.query(`insert into workspaces (id, name) values ($1, 'x')`, [id]);
    await member('auth0|5f7c8ec7c33c6c004bbafe82');
    await member('dana+agents@example.com');
    await workspace('org|acme');
    for (const bad of ['|auth0', 'alice smith', "x'--", 'josé', 'a\nb']) {
      await expect(member(bad), bad).rejects.toThrow(/memberships_user_id_check/);
      await expect(workspace(bad), bad).rejects.toThrow(/workspaces_id_check/);
    }
    // Rolling back refuses while such an id is stored, rather than dropping the check.
    await expect(migrate(b.admin, { direction: 'down', count: MIGRATIONS.length - 5 })).rejects.toThrow(
      /check/,
    );
    await b.admin.query(
      `delete from memberships where user_id in ('auth0|5f7c8ec7c33c6c004bbafe82', 'dana+agents@example.com')`,
    );
    await b.admin.query(`delete from workspaces where id = 'org|acme'`);
  });

  it('can be rolled back and re-applied', async () => {
    const down = await migrate(b.admin, { direction: 'down', count: MIGRATIONS.length });
    expect(down.map((m) => m.name)).toEqual([...MIGRATIONS].reverse());
    // Nothing of the sealed scope is left behind by its rollback.
    expect((await b.admin.query(`select 1 from pg_namespace where nspname = 'user_scope'`)).rows).toEqual([]);
    const up = await migrate(b.admin);
    expect(up).toHaveLength(MIGRATIONS.length);
    await assertIsolation(b.admin, { appRole: 'app_user', tenantTables: ['workspaces'], seal: true });
  });
});

describe('agent platform migrations on postgres with pgcrypto installed already', () => {
  it('0009 uses the pgcrypto it finds, in its own schema', async () => {
    const database = await createTestDatabase('migrate-pgcrypto');
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    try {
      await pool.query('create extension pgcrypto schema public');
      const db = fromPgPool(pool, { seal: true });
      expect((await migrate(db)).map((m) => m.name)).toContain('0009_sealed_scopes');
      await assertIsolation(db, { appRole: 'app_user', tenantTables: ['workspaces'], checkLogin: false });
      await pool.query(`insert into workspaces (id, name) values ('ws-a', 'A')`);
      await pool.query(
        `insert into memberships (workspace_id, user_id, roles) values ('ws-a', 'alice', '{member}')`,
      );
      const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
      expect(
        await withUserScope(db, alice, async (tx) => (await tx.query('select id from workspaces')).rows),
      ).toEqual([{ id: 'ws-a' }]);
    } finally {
      await pool.end();
      await database.drop();
    }
  });
});

describe('agent platform migrations on postgres where everyone may create in public', () => {
  it('take that back from PUBLIC, so that no scope can plant a function in it', async () => {
    // PostgreSQL 13 and 14 grant it so; 15 withdrew it.
    const database = await createTestDatabase('migrate-public-create');
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    try {
      await pool.query('grant create on schema public to public');
      const db = fromPgPool(pool, { seal: true });
      await migrate(db);
      const { rows } = await pool.query<{ app: boolean; anyone: boolean }>(
        `select has_schema_privilege('app_user', 'public', 'CREATE') as app,
                exists (select 1 from pg_namespace n, aclexplode(n.nspacl) a
                         where n.nspname = 'public' and a.grantee = 0 and a.privilege_type = 'CREATE') as anyone`,
      );
      expect(rows).toEqual([{ app: false, anyone: false }]);
      await assertIsolation(db, { appRole: 'app_user', tenantTables: ['workspaces'], checkLogin: false });
    } finally {
      await pool.end();
      await database.drop();
    }
  });
});

describe('agent platform migrations on postgres, from several processes at once', () => {
  it('all succeed when replicas start together on a fresh database, and apply each migration once', async () => {
    // Each pool of one connection stands for a process starting. The role bootstrap's GRANTs rewrite
    // the schema's catalog row: without a lock of their own they failed with "tuple concurrently
    // updated" (node-pg-migrate's lock covers only the migrations).
    for (let round = 0; round < 4; round++) {
      const database = await createTestDatabase('migrate-race');
      const pools = Array.from({ length: 8 }, () => new pg.Pool({ connectionString: database.url, max: 1 }));
      try {
        const results = await Promise.allSettled(pools.map((pool) => migrate(fromPgPool(pool))));
        const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
        expect(failures, `round ${round}`).toEqual([]);
        const applied = results.flatMap((r) => (r.status === 'fulfilled' ? r.value.map((m) => m.name) : []));
        expect(applied.sort()).toEqual([...MIGRATIONS]);
      } finally {
        await Promise.all(pools.map((pool) => pool.end()));
        await database.drop();
      }
    }
  });
});

describe('agent platform migrations on postgres, beside live traffic', () => {
  const count = (name: string) => MIGRATIONS.indexOf(name) + 1;

  it('give up a lock after lockTimeoutMs, keep what committed before, and try again', async () => {
    const database = await createTestDatabase('migrate-locks');
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    const traffic = new pg.Client({ connectionString: database.url });
    try {
      const db = fromPgPool(pool, { seal: true });
      await migrate(db, { count: count('0013_authors_are_the_scope_user') });
      await traffic.connect();
      // A long read of agent_runs: 0015 needs that table exclusively (it adds columns).
      await traffic.query('begin');
      await traffic.query('select count(*) from agent_runs');
      const applied = async () =>
        (await pool.query<{ name: string }>('select name from pgmigrations order by id')).rows.map(
          (r) => r.name,
        );
      // One try: 0015 gives up its lock wait, named; 0014 committed on its own before it (all pending
      // migrations in one transaction rolled it back too, and held its locks until then).
      const err = await migrate(db, { lockTimeoutMs: 100, lockAttempts: 1 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: '55P03' });
      expect(await applied()).toEqual(MIGRATIONS.slice(0, count('0014_agent_schedules_name_their_agent')));
      // Tries again while the read goes on, and passes once it ends.
      const log: string[] = [];
      const done = migrate(db, { lockTimeoutMs: 100, lockAttempts: 4, log: (m) => log.push(m) });
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await traffic.query('commit');
      expect((await done).map((m) => m.name)).toEqual(
        MIGRATIONS.slice(count('0014_agent_schedules_name_their_agent')),
      );
      expect(log).toContainEqual(
        expect.stringMatching(/^migrate: lock wait \(55P03\); try 2 of 4 in 1000 ms$/),
      );
      expect(await applied()).toEqual(MIGRATIONS);
    } finally {
      await traffic.end().catch(() => undefined);
      await pool.end();
      await database.drop();
    }
  });

  it("wait for another migrator's run without a limit: the lock limit is for tables (found by review)", async () => {
    const database = await createTestDatabase('migrate-queue');
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    const other = new pg.Client({ connectionString: database.url });
    try {
      await other.connect();
      // Another process migrating: node-pg-migrate's advisory lock, held for two seconds.
      await other.query('select pg_advisory_lock($1)', [String(PG_MIGRATE_LOCK_ID)]);
      const released = new Promise((resolve) => setTimeout(resolve, 2_000)).then(() =>
        other.query('select pg_advisory_unlock($1)', [String(PG_MIGRATE_LOCK_ID)]),
      );
      // A lock limit of 100 ms and one try: a wait for that lock under the limit gave up (55P03).
      const ran = await migrate(fromPgPool(pool, { seal: true }), { lockTimeoutMs: 100, lockAttempts: 1 });
      await released;
      expect(ran.map((m) => m.name)).toEqual(MIGRATIONS);
    } finally {
      await other.end().catch(() => undefined);
      await pool.end();
      await database.drop();
    }
  });

  it('refuse lock settings outside their range', async () => {
    const db = { session: () => Promise.reject(new Error('not reached')) } as unknown as Parameters<
      typeof migrate
    >[0];
    await expect(migrate(db, { lockTimeoutMs: 0 })).rejects.toThrow(/lockTimeoutMs/);
    await expect(migrate(db, { lockAttempts: 0.5 })).rejects.toThrow(/lockAttempts/);
  });
});
