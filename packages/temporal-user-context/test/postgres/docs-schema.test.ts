// The example schema of docs/data-isolation.md ("What the library needs in your schema"), run as
// written: it passes the start-up guard, scopes read and write only their workspace, and the audit
// sink writes into its audit_log. A change to the example that breaks any of it fails here.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { parseUserContext } from '../../src/context/index.js';
import { assertIsolation, postgresAuditSink, withUserScope } from '../../src/postgres/index.js';
import { rejection } from './fixture.js';

const docs = readFileSync(resolve(import.meta.dirname, '../../../../docs/data-isolation.md'), 'utf8');
const marker = docs.indexOf('<!-- example-schema -->');
const block = /```sql\n([\s\S]*?)```/.exec(docs.slice(marker));
const schema = block?.[1] ?? '';

const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
const carol = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['member'] });
const bob = parseUserContext({ userId: 'bob', workspaceId: 'ws-b', roles: ['member'] });

describe.each(BACKENDS)('the example schema of docs/data-isolation.md on %s', (kind) => {
  let b: Backend;
  beforeAll(async () => {
    expect(marker).toBeGreaterThan(0);
    expect(schema).toContain('create table memberships');
    b = await openBackend(kind, { prefix: 'docschema' });
    await b.admin.session(async (s) => {
      // The roles, as the page says to make them (cluster-wide: another test file may be making them).
      for (const role of ['app_owner', 'app_user'])
        await s.exec(
          `do $$ begin create role ${role} nologin; exception when duplicate_object or unique_violation then null; end $$`,
        );
      await s.exec(
        'grant usage, create on schema public to app_owner; grant usage on schema public to app_user',
      );
      await s.exec('set role app_owner');
      await s.exec(schema);
      await s.exec('reset role');
    });
    await b.admin.query(
      `insert into memberships values ('ws-a', 'alice', '{admin,member}'), ('ws-a', 'carol', '{member}'),
         ('ws-b', 'bob', '{member}')`,
    );
  }, 60_000);
  afterAll(async () => {
    await b?.close();
  });

  it('passes the start-up guard', async () => {
    const report = await assertIsolation(b.admin, { appRole: 'app_user' });
    expect(report.tenantTables).toEqual(['audit_log', 'memberships', 'notes']);
  });

  it('keeps each scope to its workspace, and authors to its user', async () => {
    await withUserScope(b.db, alice, (tx) => tx.query(`insert into notes (body) values ('a1')`));
    await withUserScope(b.db, bob, (tx) => tx.query(`insert into notes (body) values ('b1')`));
    const read = (ctx: typeof alice) =>
      withUserScope(
        b.db,
        ctx,
        async (tx) =>
          (await tx.query<{ body: string; created_by: string }>('select body, created_by from notes')).rows,
      );
    expect(await read(carol)).toEqual([{ body: 'a1', created_by: 'alice' }]);
    expect(await read(bob)).toEqual([{ body: 'b1', created_by: 'bob' }]);
    // A member reads their own membership; an admin, the workspace's.
    const members = (ctx: typeof alice) =>
      withUserScope(b.db, ctx, async (tx) =>
        (await tx.query<{ user_id: string }>('select user_id from memberships order by user_id')).rows.map(
          (r) => r.user_id,
        ),
      );
    expect(await members(carol)).toEqual(['carol']);
    expect(await members(alice)).toEqual(['alice', 'carol']);
    // Another workspace named, or an author: refused.
    expect(
      await rejection(
        withUserScope(b.db, alice, (tx) =>
          tx.query(`insert into notes (workspace_id, body) values ('ws-b', 'x')`),
        ),
      ),
    ).toMatchObject({ message: expect.stringMatching(/permission denied/) });
    expect(
      await rejection(withUserScope(b.db, alice, (tx) => tx.query(`update notes set workspace_id = 'ws-b'`))),
    ).toMatchObject({ message: expect.stringMatching(/permission denied/) });
  });

  it("takes the audit sink's records, of a workspace and of none, and shows a workspace's to its admins", async () => {
    const errors: unknown[] = [];
    const sink = postgresAuditSink(b.db, { onError: (err) => errors.push(err) });
    const record = {
      time: new Date().toISOString(),
      decision: 'allow',
      source: 'header',
      reason: 'ok',
    } as const;
    sink.emit({ ...record, action: 'docs.workspace', workspaceId: 'ws-a', userId: 'alice' });
    sink.emit({ ...record, action: 'docs.system' });
    await sink.flush();
    expect(errors).toEqual([]);
    const seen = (ctx: typeof alice) =>
      withUserScope(
        b.db,
        ctx,
        async (tx) =>
          (await tx.query<{ action: string }>(`select action from audit_log where action like 'docs.%'`))
            .rows,
      );
    expect(await seen(alice)).toEqual([{ action: 'docs.workspace' }]);
    // A user's scope writes none: a record naming someone else, or of no workspace.
    for (const [workspace, user] of [
      ['ws-a', 'alice'],
      [null, null],
    ] as const)
      expect(
        await rejection(
          withUserScope(b.db, carol, (tx) =>
            tx.query(
              `insert into audit_log (time, action, decision, source, reason, workspace_id, user_id)
               values (now(), 'docs.forged', 'allow', 'header', 'ok', $1, $2)`,
              [workspace, user],
            ),
          ),
        ),
        `${workspace}/${user}`,
      ).toMatchObject({ message: expect.stringMatching(/row-level security/) });
    expect(await seen(carol)).toEqual([]);
    const all = await b.admin.query(
      `select action from audit_log where action like 'docs.%' order by action`,
    );
    expect(all.rows).toEqual([{ action: 'docs.system' }, { action: 'docs.workspace' }]);
  });
});
