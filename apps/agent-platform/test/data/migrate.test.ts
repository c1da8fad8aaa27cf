import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertIsolation } from 'temporal-user-context/postgres';
import { BACKENDS, type Backend } from '../../../../test-support/db-backends.js';
import { migrate } from '../../src/data/migrate.js';
import { openPlatformDb } from './helpers.js';

const TENANT_TABLES = ['agent_runs', 'agents', 'audit_log', 'documents', 'memberships', 'workspaces'];

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
    const report = await assertIsolation(b.admin, { appRole: 'app_user', tenantTables: ['workspaces'] });
    expect(report.tenantTables).toEqual(TENANT_TABLES);
  });

  it('leave every table owned by the owner role, with RLS enabled and forced', async () => {
    const { rows } = await b.admin.query<{ relname: string; owner: string; rls: boolean; force: boolean }>(
      `select c.relname, pg_get_userbyid(c.relowner) as owner, c.relrowsecurity as rls, c.relforcerowsecurity as force
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind = 'r' order by c.relname`,
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

  it('can be rolled back and re-applied', async () => {
    const down = await migrate(b.admin, { direction: 'down', count: 3 });
    expect(down.map((m) => m.name)).toEqual(['0003_audit_log', '0002_agents', '0001_tenancy']);
    const up = await migrate(b.admin);
    expect(up).toHaveLength(3);
    await assertIsolation(b.admin, { appRole: 'app_user', tenantTables: ['workspaces'] });
  });
});
