import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, isUserContextError, parseUserContext, type UserContext } from 'temporal-user-context';
import { withUserScope, type ScopedTransaction } from 'temporal-user-context/postgres';
import { BACKENDS, type Backend } from '../../../../test-support/db-backends.js';
import {
  AgentRepository,
  AgentRunRepository,
  DocumentRepository,
  LastAdminError,
  MembershipRepository,
  ScheduleRepository,
  WorkspaceRepository,
} from '../../src/data/repositories/index.js';
import { openPlatformDb } from './helpers.js';

const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] });
const carol = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['member'] });
const bob = parseUserContext({ userId: 'bob', workspaceId: 'ws-b', roles: ['admin', 'member'] });

describe.each(BACKENDS)('repositories on %s', (kind) => {
  let b: Backend;
  const scoped = <T>(ctx: UserContext, fn: (tx: ScopedTransaction) => Promise<T>) =>
    withUserScope(b.db, ctx, fn);
  let agentA: string;
  let agentB: string;
  let docB: string;

  beforeAll(async () => {
    b = await openPlatformDb(kind, 'repos', 1);
    agentA = (
      await scoped(alice, (tx) =>
        new AgentRepository(tx).create({ name: 'A-bot', model: 'm1', tools: ['docs'] }),
      )
    ).id;
    agentB = (await scoped(bob, (tx) => new AgentRepository(tx).create({ name: 'B-bot', model: 'm1' }))).id;
    await scoped(alice, async (tx) => {
      const docs = new DocumentRepository(tx);
      await docs.create({ title: 'Plan A', body: 'alpha secret' });
      await docs.create({ title: '50% off_sale', body: 'literal wildcard' });
    });
    docB = (
      await scoped(bob, (tx) => new DocumentRepository(tx).create({ title: 'Plan B', body: 'bravo secret' }))
    ).id;
  });
  afterAll(async () => {
    await b?.close();
  });

  it('inserts take workspace and author from the context', async () => {
    const agent = await scoped(carol, (tx) => new AgentRepository(tx).get(agentA));
    expect(agent).toMatchObject({ workspaceId: 'ws-a', createdBy: 'alice', name: 'A-bot', tools: ['docs'] });
    const row = await b.admin.query(`select workspace_id, created_by from agents where id = $1`, [agentB]);
    expect(row.rows).toEqual([{ workspace_id: 'ws-b', created_by: 'bob' }]);
  });

  it('cross-workspace reads return nothing', async () => {
    expect(await scoped(alice, (tx) => new AgentRepository(tx).get(agentB))).toBeUndefined();
    expect((await scoped(alice, (tx) => new AgentRepository(tx).list())).map((a) => a.name)).toEqual([
      'A-bot',
    ]);
    expect(await scoped(alice, (tx) => new DocumentRepository(tx).get(docB))).toBeUndefined();
    expect(await scoped(alice, (tx) => new DocumentRepository(tx).search('secret'))).toHaveLength(1);
    expect(await scoped(alice, (tx) => new WorkspaceRepository(tx).current())).toMatchObject({ id: 'ws-a' });
  });

  it('cross-workspace writes are refused or affect 0 rows', async () => {
    expect(
      await scoped(alice, (tx) => new AgentRepository(tx).update(agentB, { name: 'pwned' })),
    ).toBeUndefined();
    expect(await scoped(alice, (tx) => new AgentRepository(tx).delete(agentB))).toBe('missing');
    // Naming another workspace: no privilege on the column (it takes the scope's default) …
    await expect(
      scoped(alice, (tx) =>
        tx.query(`insert into agents (workspace_id, name, model) values ('ws-b', 'x', 'm')`),
      ),
    ).rejects.toThrow(/permission denied/);
    // … and a default changed through the setting is refused by the policy.
    await expect(
      scoped(alice, async (tx) => {
        await tx.query(`select set_config('app.workspace_id', 'ws-b', true)`);
        return tx.query(`insert into agents (name, model) values ('x', 'm')`);
      }),
    ).rejects.toThrow(/row-level security/);
    // A run pointing at another workspace's agent: the composite foreign key refuses it.
    await expect(
      scoped(alice, (tx) => new AgentRunRepository(tx).create({ agentId: agentB })),
    ).rejects.toThrow(/foreign key/);
    const b1 = await b.admin.query<{ name: string }>(`select name from agents where id = $1`, [agentB]);
    expect(b1.rows).toEqual([{ name: 'B-bot' }]);
  });

  it('a member reads agents and documents but cannot write them: the database requires the admin role', async () => {
    const asCarol = <T>(fn: (tx: ScopedTransaction) => Promise<T>) => scoped(carol, fn);
    expect((await asCarol((tx) => new AgentRepository(tx).list())).map((a) => a.name)).toContain('A-bot');
    expect(await asCarol((tx) => new DocumentRepository(tx).search('Plan'))).not.toEqual([]);
    await expect(asCarol((tx) => new AgentRepository(tx).create({ name: 'x', model: 'm' }))).rejects.toThrow(
      /row-level security/,
    );
    await expect(
      asCarol((tx) => new DocumentRepository(tx).create({ title: 'x', body: 'y' })),
    ).rejects.toThrow(/row-level security/);
    expect(
      await asCarol((tx) => new AgentRepository(tx).update(agentA, { name: 'renamed' })),
    ).toBeUndefined();
    expect(await asCarol((tx) => new AgentRepository(tx).delete(agentA))).toBe('missing');
    expect((await asCarol((tx) => tx.query(`update documents set body = 'changed'`))).rowCount).toBe(0);
    expect((await asCarol((tx) => tx.query(`delete from documents`))).rowCount).toBe(0);
    const rows = await b.admin.query<{ name: string }>(`select name from agents where id = $1`, [agentA]);
    expect(rows.rows).toEqual([{ name: 'A-bot' }]);
    expect(
      (await b.admin.query(`select 1 from documents where workspace_id = 'ws-a' and body = 'alpha secret'`))
        .rows,
    ).toHaveLength(1);
    // An admin whose token claims admin but whose membership does not grant it is a member here too.
    const claimsAdmin = parseUserContext({ ...carol, roles: ['admin', 'member'] });
    await expect(
      scoped(claimsAdmin, (tx) => new AgentRepository(tx).create({ name: 'x', model: 'm' })),
    ).rejects.toThrow(/row-level security/);
  });

  it('agent runs: create, status, lookup by workflow id, all within the workspace', async () => {
    const run = await scoped(alice, (tx) =>
      new AgentRunRepository(tx).create({ agentId: agentA, workflowId: 'wf-a-1', input: { q: 'hi' } }),
    );
    expect(run).toMatchObject({
      workspaceId: 'ws-a',
      status: 'pending',
      input: { q: 'hi' },
      createdBy: 'alice',
    });
    const done = await scoped(carol, (tx) =>
      new AgentRunRepository(tx).setStatus(run.id, 'completed', { result: { a: 1 } }),
    );
    expect(done).toMatchObject({ status: 'completed', result: { a: 1 } });
    expect(await scoped(bob, (tx) => new AgentRunRepository(tx).findByWorkflowId('wf-a-1'))).toBeUndefined();
    expect(await scoped(bob, (tx) => new AgentRunRepository(tx).setStatus(run.id, 'failed'))).toBeUndefined();
    expect(await scoped(carol, (tx) => new AgentRunRepository(tx).listForAgent(agentA))).toHaveLength(1);
  });

  it("agent runs: an idempotency key is its author's own in the workspace, once, with its digest", async () => {
    const digest = 'd'.repeat(43);
    const withKey = (ctx: UserContext, key: string, workflowId: string, d = digest) =>
      scoped(ctx, (tx) =>
        new AgentRunRepository(tx).create({
          agentId: ctx === bob ? agentB : agentA,
          workflowId,
          idempotency: { key, digest: d },
        }),
      );
    const first = await withKey(alice, 'k-1', 'wf-key-1');
    // Found by its author only; another member of the workspace, or another workspace, finds nothing.
    expect(await scoped(alice, (tx) => new AgentRunRepository(tx).findByIdempotencyKey('k-1'))).toMatchObject(
      {
        run: { id: first.id },
        digest,
      },
    );
    expect(
      await scoped(carol, (tx) => new AgentRunRepository(tx).findByIdempotencyKey('k-1')),
    ).toBeUndefined();
    expect(await scoped(bob, (tx) => new AgentRunRepository(tx).findByIdempotencyKey('k-1'))).toBeUndefined();
    // The same key again by its author is refused by the unique index; others may use it.
    await expect(withKey(alice, 'k-1', 'wf-key-2')).rejects.toMatchObject({ code: '23505' });
    await withKey(carol, 'k-1', 'wf-key-3');
    await withKey(bob, 'k-1', 'wf-key-4');
    // A key without a digest of the shape the API writes, or one too long, is refused by the checks.
    await expect(withKey(alice, 'k-2', 'wf-key-5', 'short')).rejects.toMatchObject({ code: '23514' });
    await expect(withKey(alice, 'x'.repeat(256), 'wf-key-6')).rejects.toMatchObject({ code: '23514' });
    // Reopening a failed start: only from START_FAILED, back to pending without its error.
    const reopen = () => scoped(alice, (tx) => new AgentRunRepository(tx).reopenStartFailed(first.id));
    expect(await reopen()).toBeUndefined();
    await scoped(alice, (tx) => new AgentRunRepository(tx).markStartFailed(first.id));
    expect(await reopen()).toMatchObject({ status: 'pending', error: null });
  });

  it('agent runs: a later status replaces the error of an earlier one', async () => {
    const run = await scoped(alice, (tx) =>
      new AgentRunRepository(tx).create({ agentId: agentA, workflowId: 'wf-a-restart' }),
    );
    // What the API writes when its start call fails, though the server may have started the workflow.
    await scoped(alice, (tx) =>
      new AgentRunRepository(tx).setStatus(run.id, 'failed', { error: 'START_FAILED' }),
    );
    const running = await scoped(alice, (tx) => new AgentRunRepository(tx).markRunning(run.id, 'run-1'));
    expect(running).toMatchObject({ status: 'running', error: null, runId: 'run-1' });
    await scoped(alice, (tx) =>
      new AgentRunRepository(tx).setStatus(run.id, 'failed', { error: 'RUN_FAILED' }),
    );
    const done = await scoped(alice, (tx) =>
      new AgentRunRepository(tx).setStatus(run.id, 'completed', { result: { ok: true } }),
    );
    expect(done).toMatchObject({ status: 'completed', error: null, result: { ok: true } });
    // A finished run is not marked running again.
    expect(await scoped(alice, (tx) => new AgentRunRepository(tx).markRunning(run.id))).toBeUndefined();
  });

  it('agent runs: an ending recorded from outside (terminated, timed out, a write the workflow could not make) only replaces pending or running', async () => {
    const repo = (tx: ScopedTransaction) => new AgentRunRepository(tx);
    const make = async (workflowId: string, status?: 'completed' | 'cancelled' | 'failed' | 'running') => {
      const run = await scoped(alice, (tx) => repo(tx).create({ agentId: agentA, workflowId }));
      if (status === 'running') await scoped(alice, (tx) => repo(tx).markRunning(run.id));
      else if (status)
        await scoped(alice, (tx) => repo(tx).setStatus(run.id, status, { error: 'CANCELLED' }));
      return run;
    };
    const pending = await make('wf-end-pending');
    const running = await make('wf-end-running', 'running');
    expect(
      await scoped(alice, (tx) =>
        repo(tx).markEnded(pending.id, 'wf-end-pending', { status: 'failed', error: 'RUN_TIMED_OUT' }),
      ),
    ).toMatchObject({
      status: 'failed',
      error: 'RUN_TIMED_OUT',
    });
    expect(
      await scoped(alice, (tx) =>
        repo(tx).markEnded(running.id, 'wf-end-running', { status: 'failed', error: 'RUN_TERMINATED' }),
      ),
    ).toMatchObject({
      status: 'failed',
      error: 'RUN_TERMINATED',
    });
    // A result the workflow could not write, with its status: an earlier error (START_FAILED, before
    // the workflow claimed the record) goes.
    const unwritten = await make('wf-end-unwritten');
    await scoped(alice, (tx) => repo(tx).setStatus(unwritten.id, 'running', { error: 'START_FAILED' }));
    expect(
      await scoped(alice, (tx) =>
        repo(tx).markEnded(unwritten.id, 'wf-end-unwritten', { status: 'cancelled', result: { steps: 2 } }),
      ),
    ).toMatchObject({ status: 'cancelled', error: null, result: { steps: 2 } });
    // Endings the workflow recorded stay; so does everything under another workflow id or workspace.
    for (const status of ['completed', 'cancelled', 'failed'] as const) {
      const run = await make(`wf-end-${status}`, status);
      expect(
        await scoped(alice, (tx) =>
          repo(tx).markEnded(run.id, `wf-end-${status}`, { status: 'failed', error: 'RUN_TERMINATED' }),
        ),
      ).toBeUndefined();
      expect(await scoped(alice, (tx) => repo(tx).get(run.id))).toMatchObject({ status });
    }
    const other = await make('wf-end-other', 'running');
    expect(
      await scoped(alice, (tx) =>
        repo(tx).markEnded(other.id, 'wf-end-pending', { status: 'failed', error: 'RUN_TERMINATED' }),
      ),
    ).toBeUndefined();
    expect(
      await scoped(bob, (tx) =>
        repo(tx).markEnded(other.id, 'wf-end-other', { status: 'failed', error: 'RUN_TERMINATED' }),
      ),
    ).toBeUndefined();
    expect(await scoped(alice, (tx) => repo(tx).get(other.id))).toMatchObject({ status: 'running' });
    // A claim under way when the run was terminated, committing late, does not undo the recorded ending.
    expect(await scoped(alice, (tx) => repo(tx).markRunning(running.id, 'late'))).toBeUndefined();
    expect(await scoped(alice, (tx) => repo(tx).get(running.id))).toMatchObject({
      status: 'failed',
      error: 'RUN_TERMINATED',
    });
  });

  it("agent runs: one record per workflow and workspace; writes limited to the workflow's own", async () => {
    const claim = (ctx: UserContext, input: number, agentId = agentA) =>
      scoped(ctx, (tx) =>
        new AgentRunRepository(tx).ensureForWorkflow({ agentId, workflowId: 'wf-a-once', input }),
      );
    const first = (await claim(alice, 1))!;
    // The same user's claim again (an activity's retry): the same record, its first input kept.
    expect(await claim(alice, 2)).toMatchObject({ id: first.id, input: 1 });
    // Another member's claim of the workflow's record (one written first for a schedule's run, say), or
    // a claim for another agent: nothing.
    expect(await claim(carol, 3)).toBeUndefined();
    expect(await claim(alice, 4, agentB)).toBeUndefined();
    await expect(
      scoped(alice, (tx) => new AgentRunRepository(tx).create({ agentId: agentA, workflowId: 'wf-a-once' })),
    ).rejects.toThrow(/agent_runs_workspace_workflow_key/);
    // Another workspace may use the same workflow id: no cross-tenant block, nothing revealed.
    const other = await scoped(bob, (tx) =>
      new AgentRunRepository(tx).ensureForWorkflow({ agentId: agentB, workflowId: 'wf-a-once' }),
    );
    expect(other!.id).not.toBe(first.id);

    const runs = (tx: ScopedTransaction) => new AgentRunRepository(tx);
    expect(await scoped(alice, (tx) => runs(tx).getForWorkflow(first.id, 'wf-a-once'))).toMatchObject({
      id: first.id,
    });
    expect(await scoped(alice, (tx) => runs(tx).getForWorkflow(first.id, 'wf-a-other'))).toBeUndefined();
    expect(
      await scoped(alice, (tx) =>
        runs(tx).setStatus(first.id, 'completed', {}, { workflowId: 'wf-a-other' }),
      ),
    ).toBeUndefined();
    expect(await scoped(alice, (tx) => runs(tx).get(first.id))).toMatchObject({ status: 'pending' });
    expect(
      await scoped(alice, (tx) => runs(tx).setStatus(first.id, 'completed', {}, { workflowId: 'wf-a-once' })),
    ).toMatchObject({ status: 'completed' });
  });

  it('an agent with runs is not deleted: its run records are the workspace history (the key refuses it too)', async () => {
    const agent = await scoped(alice, (tx) => new AgentRepository(tx).create({ name: 'ran', model: 'm1' }));
    await scoped(alice, (tx) =>
      new AgentRunRepository(tx).create({ agentId: agent.id, workflowId: 'wf-kept' }),
    );
    expect(await scoped(alice, (tx) => new AgentRepository(tx).delete(agent.id))).toBe('in-use');
    expect(await scoped(alice, (tx) => new AgentRunRepository(tx).findByWorkflowId('wf-kept'))).toBeDefined();
    // Past the repository, the foreign key (restrict, migration 0005) keeps the records all the same.
    await expect(
      scoped(alice, (tx) => tx.query('delete from agents where id = $1', [agent.id])),
    ).rejects.toThrow(/foreign key/);
    const fresh = await scoped(alice, (tx) =>
      new AgentRepository(tx).create({ name: 'unused', model: 'm1' }),
    );
    expect(await scoped(alice, (tx) => new AgentRepository(tx).delete(fresh.id))).toBe('deleted');
    // A run that commits between the count and the delete: the key refuses, under a savepoint, and
    // the answer is the same (the transaction stays usable: the agent is still readable after).
    const racing = await scoped(alice, (tx) =>
      new AgentRepository(tx).create({ name: 'racing', model: 'm1' }),
    );
    const raced = await scoped(alice, async (tx) => {
      const sneaky = {
        ...tx,
        query: async <R extends object>(sql: string, params?: readonly unknown[]) => {
          const result = await tx.query<R>(sql, params);
          if (sql.includes('count(*)::int as runs'))
            await new AgentRunRepository(tx).create({ agentId: racing.id, workflowId: 'wf-raced' });
          return result;
        },
      };
      const outcome = await new AgentRepository(sneaky).delete(racing.id);
      return { outcome, still: await new AgentRepository(tx).get(racing.id) };
    });
    expect(raced.outcome).toBe('in-use');
    expect(raced.still?.id).toBe(racing.id);
    // The later tests count ws-a's agents and runs: the provisioning login removes these.
    for (const id of [agent.id, racing.id]) {
      await b.admin.query('delete from agent_runs where agent_id = $1', [id]);
      await b.admin.query('delete from agents where id = $1', [id]);
    }
  });

  it("schedule rows: counted with Temporal's listing under the limit, old unlisted ones dropped, per workspace", async () => {
    const reserve = (ctx: UserContext, scheduleId: string, listed: string[] = []) =>
      scoped(ctx, (tx) =>
        new ScheduleRepository(tx).reserve({ scheduleId, limit: 2, listed, staleAfterMs: 60_000 }),
      );
    const rowsOf = async (ctx: UserContext) =>
      (
        await scoped(ctx, (tx) =>
          tx.query<{ schedule_id: string; created_by: string }>(
            'select schedule_id, created_by from agent_schedules order by schedule_id',
          ),
        )
      ).rows;
    expect(await reserve(carol, 's-1')).toBe(true);
    // A schedule Temporal lists without a row (created before the table, or by another path) counts.
    expect(await reserve(alice, 's-2', ['s-old'])).toBe(false);
    // A schedule both listed and recorded counts once.
    expect(await reserve(alice, 's-2', ['s-1'])).toBe(true);
    expect(await reserve(alice, 's-3', ['s-1', 's-2'])).toBe(false);
    // Another workspace counts its own, and sees none of these rows.
    expect(await reserve(bob, 's-b1')).toBe(true);
    expect(await rowsOf(bob)).toEqual([{ schedule_id: 's-b1', created_by: 'bob' }]);
    expect(await rowsOf(carol)).toEqual([
      { schedule_id: 's-1', created_by: 'carol' },
      { schedule_id: 's-2', created_by: 'alice' },
    ]);
    // A row is written only as its creator: the author takes its default (no privilege on the column),
    // and the policy holds that default, which reads a setting, to the sealed user.
    await expect(
      scoped(carol, (tx) =>
        tx.query(`insert into agent_schedules (schedule_id, created_by) values ('s-x', 'alice')`),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(
      scoped(carol, async (tx) => {
        await tx.query(`select set_config('app.user_id', 'alice', true)`);
        return tx.query(`insert into agent_schedules (schedule_id) values ('s-x')`);
      }),
    ).rejects.toThrow(/row-level security/);
    // Unlisted rows are dropped only once old enough for the listing to have caught up.
    expect(await reserve(alice, 's-3', ['s-2'])).toBe(false);
    await b.admin.query(
      `update agent_schedules set created_at = now() - interval '10 minutes' where schedule_id = 's-1'`,
    );
    expect(await reserve(alice, 's-3', ['s-2'])).toBe(true);
    // A deleted schedule is not counted while the listing still shows it; its mark goes once old.
    await scoped(carol, (tx) => new ScheduleRepository(tx).markDeleted('s-2'));
    expect(await reserve(alice, 's-4', ['s-2', 's-3'])).toBe(true);
    expect(await reserve(alice, 's-5', ['s-2', 's-3'])).toBe(false);
    await b.admin.query(
      `update agent_schedules set deleted_at = now() - interval '10 minutes' where schedule_id = 's-2'`,
    );
    expect(await reserve(alice, 's-5', ['s-3', 's-4'])).toBe(false);
    expect((await rowsOf(alice)).map((r) => r.schedule_id)).toEqual(['s-3', 's-4']);
    await b.admin.query(`delete from agent_schedules`);
  });

  it('schedule rows name their agent: a create for an agent gone is refused, and a recent row keeps the agent', async () => {
    const agent = await scoped(alice, (tx) =>
      new AgentRepository(tx).create({ name: 'scheduled', model: 'm' }),
    );
    const reserve = (scheduleId: string, agentId: string) =>
      scoped(alice, (tx) =>
        new ScheduleRepository(tx).reserve({
          scheduleId,
          agentId,
          limit: 10,
          listed: [],
          staleAfterMs: 60_000,
        }),
      );
    const names = (agentId: string) =>
      scoped(alice, (tx) => new ScheduleRepository(tx).namesAgent(agentId, 60_000));
    expect(await names(agent.id)).toBe(false);
    expect(await reserve('s-agent', agent.id)).toBe(true);
    // The delete's check sees the row before Temporal's listing shows the schedule.
    expect(await names(agent.id)).toBe(true);
    // Deleted, or old enough for the listing to show it if it exists: the row no longer keeps the agent.
    await scoped(alice, (tx) => new ScheduleRepository(tx).markDeleted('s-agent'));
    expect(await names(agent.id)).toBe(false);
    expect(await reserve('s-agent-2', agent.id)).toBe(true);
    await b.admin.query(
      `update agent_schedules set created_at = now() - interval '10 minutes' where schedule_id = 's-agent-2'`,
    );
    expect(await names(agent.id)).toBe(false);
    // Another workspace's agent id is no agent here.
    expect(await scoped(bob, (tx) => new ScheduleRepository(tx).namesAgent(agent.id, 60_000))).toBe(false);
    // An agent deleted before the create's check: refused, no row written.
    await b.admin.query('delete from agents where id = $1', [agent.id]);
    expect(await reserve('s-agent-3', agent.id)).toBe('agent-missing');
    expect(
      (await b.admin.query(`select 1 from agent_schedules where schedule_id = 's-agent-3'`)).rowCount,
    ).toBe(0);
    await b.admin.query(`delete from agent_schedules`);
  });

  it("schedule rows: an idempotency key is its author's own while the row counts; stale or deleted, it is free", async () => {
    const digest = 'e'.repeat(43);
    const reserve = (ctx: UserContext, scheduleId: string, d = digest, staleAfterMs = 60_000) =>
      scoped(ctx, (tx) =>
        new ScheduleRepository(tx).reserve({
          scheduleId,
          limit: 10,
          listed: [],
          staleAfterMs,
          idempotency: { key: 'sk-1', digest: d },
        }),
      );
    expect(await reserve(alice, 'k-s-1')).toBe(true);
    // The same key again: the first create's schedule, whatever the request says of it.
    expect(await reserve(alice, 'k-s-2')).toEqual({ prior: { scheduleId: 'k-s-1', sameRequest: true } });
    expect(await reserve(alice, 'k-s-3', 'f'.repeat(43))).toEqual({
      prior: { scheduleId: 'k-s-1', sameRequest: false },
    });
    // Another member's key, another workspace's: their own.
    expect(await reserve(carol, 'k-s-4')).toBe(true);
    expect(await reserve(bob, 'k-s-5')).toBe(true);
    // Marked deleted (a failed create, a deleted schedule), the row frees the key.
    await scoped(alice, (tx) => new ScheduleRepository(tx).markDeleted('k-s-1'));
    expect(await reserve(alice, 'k-s-6')).toBe(true);
    // A row Temporal does not list, once stale, is dropped first: its key is free too.
    expect(await reserve(alice, 'k-s-7', digest, 0)).toBe(true);
    const keys = await scoped(alice, async (tx) =>
      (
        await tx.query<{ schedule_id: string }>(
          `select schedule_id from agent_schedules where idempotency_key = 'sk-1' and deleted_at is null`,
        )
      ).rows.map((r) => r.schedule_id),
    );
    // Every row of the workspace Temporal did not list went stale at once (carol's and k-s-6 too).
    expect(keys).toEqual(['k-s-7']);
    await b.admin.query(`delete from agent_schedules`);
  });

  it('case 14: raw hostile ids in repository lookups find nothing and change nothing', async () => {
    const hostile = [`x'; SET LOCAL app.workspace_id = 'ws-b'; --`, `' OR 1=1--`, `${agentB}' OR '1'='1`];
    for (const id of hostile) {
      expect(await scoped(alice, (tx) => new AgentRepository(tx).get(id))).toBeUndefined();
      expect(await scoped(alice, (tx) => new AgentRepository(tx).delete(id))).toBe('missing');
      expect(await scoped(alice, (tx) => new DocumentRepository(tx).findByTitle(id))).toEqual([]);
      expect(await scoped(alice, (tx) => new DocumentRepository(tx).search(id))).toEqual([]);
      expect(await scoped(alice, (tx) => new AgentRunRepository(tx).findByWorkflowId(id))).toBeUndefined();
    }
    // LIKE wildcards in a search term are literal.
    expect((await scoped(alice, (tx) => new DocumentRepository(tx).search('%'))).map((d) => d.title)).toEqual(
      ['50% off_sale'],
    );
    const count = await b.admin.query('select 1 from agents');
    expect(count.rowCount).toBe(2);
  });

  it('case 15: two workspaces interleaved on a pool of size 1 never see each other', async () => {
    const read = (ctx: UserContext) =>
      scoped(ctx, async (tx) => {
        const agents = await new AgentRepository(tx).list();
        await new Promise((r) => setTimeout(r, 1));
        const docs = await new DocumentRepository(tx).list();
        return { ws: ctx.workspaceId, seen: [...agents, ...docs].map((x) => x.workspaceId) };
      });
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => read(i % 2 ? alice : bob)));
    for (const r of results) {
      expect(r.seen.length).toBeGreaterThan(0);
      expect(new Set(r.seen)).toEqual(new Set([r.ws]));
    }
  });

  it('memberships: admin manages the workspace, a member sees only themself and cannot grant', async () => {
    expect((await scoped(alice, (tx) => new MembershipRepository(tx).list())).map((m) => m.userId)).toEqual([
      'alice',
      'carol',
    ]);
    expect((await scoped(carol, (tx) => new MembershipRepository(tx).list())).map((m) => m.userId)).toEqual([
      'carol',
    ]);
    await expect(
      scoped(carol, (tx) => new MembershipRepository(tx).upsert('carol', ['admin', 'member'])),
    ).rejects.toThrow(/row-level security/);
    // An admin of ws-b cannot touch ws-a's members.
    expect(await scoped(bob, (tx) => new MembershipRepository(tx).remove('carol'))).toBe(false);
    expect(await scoped(alice, (tx) => new MembershipRepository(tx).upsert('dave', ['member']))).toBe(
      'added',
    );
  });

  it('the last admin can be neither removed nor demoted; with a second admin, either can go', async () => {
    const members = () => scoped(alice, (tx) => new MembershipRepository(tx).list());
    await expect(scoped(alice, (tx) => new MembershipRepository(tx).remove('alice'))).rejects.toBeInstanceOf(
      LastAdminError,
    );
    await expect(
      scoped(alice, (tx) => new MembershipRepository(tx).upsert('alice', ['member'])),
    ).rejects.toBeInstanceOf(LastAdminError);
    // Rolled back: alice is still the admin.
    expect((await members()).find((m) => m.userId === 'alice')?.roles).toContain('admin');
    expect(await scoped(alice, (tx) => new MembershipRepository(tx).upsert('erin', ['admin']))).toBe('added');
    expect(
      await scoped(alice, (tx) => new MembershipRepository(tx).upsert('alice', ['admin', 'member'])),
    ).toBe('changed');
    expect(await scoped(alice, (tx) => new MembershipRepository(tx).remove('erin'))).toBe(true);
  });

  it('cases 11/12: a member removed by the admin is refused on the next scoped call', async () => {
    const dave = parseUserContext({ userId: 'dave', workspaceId: 'ws-a', roles: ['member'] });
    expect(await scoped(dave, (tx) => new AgentRepository(tx).list())).toHaveLength(1);
    expect(await scoped(alice, (tx) => new MembershipRepository(tx).remove('dave'))).toBe(true);
    const err = await scoped(dave, (tx) => new AgentRepository(tx).list()).catch((e: unknown) => e);
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
  });

  it('case 16: an unscoped transaction as the app role sees no tenant rows', async () => {
    const counts = await b.db.transaction(async (tx) => {
      await tx.query('set local role app_user');
      const out: number[] = [];
      for (const t of ['workspaces', 'memberships', 'agents', 'agent_runs', 'documents', 'audit_log']) {
        out.push((await tx.query(`select 1 from ${t}`)).rowCount);
      }
      return out;
    });
    expect(counts).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

describe('run and schedule records under concurrency (postgres)', () => {
  let b: Backend;
  let agentId: string;
  beforeAll(async () => {
    b = await openPlatformDb('postgres', 'runrec', 4);
    agentId = (
      await withUserScope(b.db, alice, (tx) => new AgentRepository(tx).create({ name: 'A-bot', model: 'm1' }))
    ).id;
  });
  afterAll(async () => {
    await b?.close();
  });

  /** Waits until `n` sessions of this database wait on a lock (fails after 20 s). */
  const lockWaiters = (n: number) =>
    vi.waitFor(
      async () => {
        const { rows } = await b.admin.query<{ n: number }>(
          `select count(*)::int as n from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock'`,
        );
        expect(rows[0]!.n).toBe(n);
      },
      { timeout: 20_000, interval: 20 },
    );

  it('two overlapping claims of one workflow record leave one row and return it to both', async () => {
    // An activity attempt that timed out but is still in its transaction, and its retry.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let inserted!: () => void;
    const didInsert = new Promise<void>((resolve) => (inserted = resolve));
    const claim = { agentId, workflowId: 'wf-overlap' };
    const first = withUserScope(b.db, alice, async (tx) => {
      const run = await new AgentRunRepository(tx).ensureForWorkflow(claim);
      inserted();
      await held;
      return run;
    });
    await Promise.race([didInsert, first]);
    const second = withUserScope(b.db, alice, (tx) => new AgentRunRepository(tx).ensureForWorkflow(claim));
    // The retry reaches the insert and waits on the uncommitted row: the race the test is about.
    await lockWaiters(1);
    release();
    const [a, c] = await Promise.all([first, second]);
    expect(c!.id).toBe(a!.id);
    // Another member's claim of the same workflow's record gets nothing (nor its input).
    expect(
      await withUserScope(b.db, carol, (tx) => new AgentRunRepository(tx).ensureForWorkflow(claim)),
    ).toBeUndefined();
    const { rows } = await b.admin.query(`select 1 from agent_runs where workflow_id = 'wf-overlap'`);
    expect(rows).toHaveLength(1);
  });

  it("an agent's delete and a schedule create for it at once: the create waits, then finds the agent gone", async () => {
    const doomed = (
      await withUserScope(
        b.db,
        alice,
        (tx) => new AgentRepository(tx).create({ name: 'doomed', model: 'm' }),
        {
          requireRole: 'admin',
        },
      )
    ).id;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let checked!: () => void;
    const didCheck = new Promise<void>((resolve) => (checked = resolve));
    // The delete's transaction: the check (under the schedule lock), the delete, then held open.
    const deletion = withUserScope(
      b.db,
      alice,
      async (tx) => {
        const named = await new ScheduleRepository(tx).namesAgent(doomed, 60_000);
        const outcome = named ? 'scheduled' : await new AgentRepository(tx).delete(doomed);
        checked();
        await held;
        return outcome;
      },
      { requireRole: 'admin' },
    );
    await Promise.race([didCheck, deletion]);
    const create = withUserScope(b.db, carol, (tx) =>
      new ScheduleRepository(tx).reserve({
        scheduleId: 'c-doomed',
        agentId: doomed,
        limit: 10,
        listed: [],
        staleAfterMs: 60_000,
      }),
    );
    try {
      // The create waits for the delete's transaction (both take the workspace's schedule lock).
      await lockWaiters(1);
    } finally {
      release();
    }
    expect(await Promise.all([deletion, create])).toEqual(['deleted', 'agent-missing']);
    expect(
      (await b.admin.query(`select 1 from agent_schedules where schedule_id = 'c-doomed'`)).rowCount,
    ).toBe(0);
  });

  it("two schedule creates at once under a limit of one: the second waits for the first's row and is refused", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reserved!: () => void;
    const didReserve = new Promise<void>((resolve) => (reserved = resolve));
    const reserve = (scheduleId: string) => ({ scheduleId, limit: 1, listed: [], staleAfterMs: 60_000 });
    const first = withUserScope(b.db, alice, async (tx) => {
      const ok = await new ScheduleRepository(tx).reserve(reserve('c-1'));
      reserved();
      await held;
      return ok;
    });
    await Promise.race([didReserve, first]);
    const second = withUserScope(b.db, carol, (tx) => new ScheduleRepository(tx).reserve(reserve('c-2')));
    // The second reaches the workspace's lock and waits on it.
    await lockWaiters(1);
    release();
    expect(await Promise.all([first, second])).toEqual([true, false]);
  });
});

// Two connections at once: PGlite has one, so this runs on PostgreSQL only.
describe('membership changes that race (postgres)', () => {
  let b: Backend;
  beforeAll(async () => {
    b = await openPlatformDb('postgres', 'race');
    await b.admin.query(`update memberships set roles = '{admin,member}' where user_id = 'carol'`);
  });
  afterAll(async () => {
    await b?.close();
  });

  it('an admin removed while their own change waited for its turn cannot undo the removal', async () => {
    const carolAdmin = parseUserContext({ userId: 'carol', workspaceId: 'ws-a', roles: ['admin', 'member'] });
    // Carol's scope passes its membership check; before her change runs, alice removes her (committed).
    const err = await withUserScope(b.db, carolAdmin, async (tx) => {
      await withUserScope(b.db, alice, (other) => new MembershipRepository(other).remove('carol'));
      return new MembershipRepository(tx).upsert('carol', ['admin', 'member']);
    }).catch((e: unknown) => e);
    expect(isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)).toBe(true);
    const { rows } = await b.admin.query(`select roles from memberships where user_id = 'carol'`);
    expect(rows).toEqual([]);
  });
});
