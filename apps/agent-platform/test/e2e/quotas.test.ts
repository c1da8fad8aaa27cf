// Per-workspace limits of the API: one member's runs or schedules share the worker, the model provider
// and the database with every workspace.
import { randomUUID } from 'node:crypto';
import { Client, WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withUserScope } from 'temporal-user-context/postgres';
import { runRequestDigest } from '../../src/api/idempotency.js';
import { AgentRunRepository } from '../../src/data/repositories/index.js';
import { otherApi, startPlatform, until, type Json, type Platform } from './harness.js';

let p: Platform;
const acmeAgent = () => p.agentIds['ws-acme'] as string;

beforeAll(async () => {
  // A 3 s settle pause: a start that must fall inside it does on a loaded machine too (found by a
  // flakiness review: 1 s left that start a margin it used 80 ms of, under load).
  p = await startPlatform({
    prefix: 'agent_quotas',
    api: { quotas: { openRuns: 2, schedules: 1, settlePauseMs: 3000 } },
  });
});

afterAll(async () => {
  await p?.stop();
});

/** A new workspace with one member and one agent (provisioned as the test login), and the member's token. */
async function workspaceOf(workspaceId: string, userId: string): Promise<{ agentId: string; token: string }> {
  await p.pool.query(`insert into workspaces (id, name) values ($1, $1)`, [workspaceId]);
  await p.pool.query(`insert into memberships (workspace_id, user_id, roles) values ($1, $2, '{member}')`, [
    workspaceId,
    userId,
  ]);
  const agent = await p.pool.query<{ id: string }>(
    `insert into agents (workspace_id, name, model, created_by) values ($1, 'a', 'm', $2) returning id::text as id`,
    [workspaceId, userId],
  );
  const token = await p.issuer.mint({ user: userId, workspace: workspaceId, roles: ['member'] });
  return { agentId: agent.rows[0]!.id, token };
}

/** Another member of a workspace made by {@link workspaceOf}. */
async function memberOf(workspaceId: string, userId: string): Promise<{ token: string }> {
  await p.pool.query(`insert into memberships (workspace_id, user_id, roles) values ($1, $2, '{member}')`, [
    workspaceId,
    userId,
  ]);
  return { token: await p.issuer.mint({ user: userId, workspace: workspaceId, roles: ['member'] }) };
}

/**
 * A keyed run of a new workspace's member, started on a queue no worker polls (never claimed), then
 * reported failed: what a start that timed out after the server acted leaves.
 */
async function startReportedFailed(workspaceId: string, userId: string) {
  const { agentId, token } = await workspaceOf(workspaceId, userId);
  const url = `/workspaces/${workspaceId}/agents/${agentId}/runs`;
  const key = `late-${randomUUID()}`;
  const body = { input: 'started after all' };
  const first = await p.idleCall(token, 'POST', url, body, { 'idempotency-key': key });
  expect(first.statusCode).toBe(202);
  await p.pool.query(`update agent_runs set status = 'failed', error = 'START_FAILED' where id = $1`, [
    first.body_.runId,
  ]);
  return { token, url, key, body, first };
}

describe('per-workspace quotas', () => {
  it('a retry with the idempotency key of a failed start is refused at the limit, and its record stays failed', async () => {
    const { agentId, token } = await workspaceOf('ws-idempotent', 'ivy');
    const ivy = { userId: 'ivy', workspaceId: 'ws-idempotent', roles: ['member'] };
    const key = `failed-${randomUUID()}`;
    const body = { input: 'at the limit' };
    const failed = await withUserScope(p.db, ivy, async (tx) => {
      const repo = new AgentRunRepository(tx);
      const run = await repo.create({
        agentId,
        workflowId: `agent-run-${randomUUID()}`,
        input: body,
        idempotency: { key, digest: runRequestDigest(agentId, body) },
      });
      return repo.markStartFailed(run.id);
    });
    const url = `/workspaces/ws-idempotent/agents/${agentId}/runs`;
    for (let i = 0; i < 2; i++)
      expect((await p.idleCall(token, 'POST', url, { input: `run ${i}` })).statusCode).toBe(202);
    const retry = await p.idleCall(token, 'POST', url, body, { 'idempotency-key': key });
    expect(retry.body_).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' });
    const { rows } = await p.pool.query(`select status, error from agent_runs where id = $1`, [failed?.id]);
    expect(rows).toEqual([{ status: 'failed', error: 'START_FAILED' }]);
  });

  it('a retry with the key of a start reported failed that took effect answers its run, at the limit too', async () => {
    const { token, url, key, body, first } = await startReportedFailed('ws-late-start', 'liv');
    for (let i = 0; i < 2; i++)
      expect((await p.idleCall(token, 'POST', url, { input: `run ${i}` })).statusCode).toBe(202);
    const retry = await p.idleCall(token, 'POST', url, body, { 'idempotency-key': key });
    expect(retry.statusCode).toBe(202);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body_).toEqual({ ...first.body_, status: 'running' });
    // Nothing reopened or started: the record waits for its workflow's claim.
    const { rows } = await p.pool.query(`select status, error from agent_runs where id = $1`, [
      first.body_.runId,
    ]);
    expect(rows).toEqual([{ status: 'failed', error: 'START_FAILED' }]);
  });

  it('a keyed retry that finds no run, then meets the one its first attempt started, answers the record as it was', async () => {
    const { token, url, key, body, first } = await startReportedFailed('ws-late-race', 'rae');
    // An API whose look for the run comes before the server has it (the first attempt's start still
    // on its way): it reopens the record and starts it, and the server refuses a second run.
    const racing = new Client({ connection: p.client.connection, namespace: p.namespace });
    const getHandle = racing.workflow.getHandle.bind(racing.workflow);
    racing.workflow.getHandle = ((...args: Parameters<typeof getHandle>) =>
      Object.assign(getHandle(...args), {
        describe: () => Promise.reject(new WorkflowNotFoundError('not yet', args[0], undefined)),
      })) as typeof racing.workflow.getHandle;
    const api = await otherApi(p, { client: racing });
    try {
      const retry = await api.inject({
        method: 'POST',
        url,
        headers: { authorization: `Bearer ${token}`, 'idempotency-key': key },
        payload: body,
      });
      expect(retry.statusCode).toBe(202);
      expect(JSON.parse(retry.body)).toEqual({ ...first.body_, status: 'failed' });
      // Back to START_FAILED until its workflow claims it: not left pending (counted) for good.
      const { rows } = await p.pool.query(`select status, error from agent_runs where id = $1`, [
        first.body_.runId,
      ]);
      expect(rows).toEqual([{ status: 'failed', error: 'START_FAILED' }]);
    } finally {
      await api.close();
    }
  });

  it('starts at the same moment take turns: no more open runs than the limit', async () => {
    const open = async () =>
      (
        await p.pool.query(
          `select count(*)::int as n from agent_runs where workspace_id = 'ws-globex' and status in ('pending', 'running')`,
        )
      ).rows[0].n as number;
    const before = await open();
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        p.idleCall('bob', 'POST', `/workspaces/ws-globex/agents/${p.agentIds['ws-globex'] as string}/runs`, {
          input: 'at once',
        }),
      ),
    );
    const accepted = results.filter((r) => r.statusCode === 202);
    expect(results.filter((r) => r.statusCode === 429)).toHaveLength(6 - accepted.length);
    expect(before).toBe(0);
    expect(accepted).toHaveLength(2);
    expect(await open()).toBe(2);
    // Ended from outside: the next start (the test below) finds room once the records are settled.
    for (const r of accepted)
      await p.testClient.workflow.getHandle(r.body_.workflowId as string).terminate('quota test');
    // The refused starts' settling changed nothing: the workspace's next one waits out the pause.
    await new Promise((resolve) => setTimeout(resolve, 3100));
  });

  it('refuses a run past the open runs of the workspace (429, audited), not another workspace', async () => {
    // Runs on the queue no worker polls stay open.
    const start = (who: string, ws: string, agentId: string) =>
      p.idleCall(who, 'POST', `/workspaces/${ws}/agents/${agentId}/runs`, { input: 'hello' });
    const started: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await start('alice', 'ws-acme', acmeAgent());
      expect(res.statusCode).toBe(202);
      started.push(res.body_.workflowId as string);
    }
    const refused = await start('carol', 'ws-acme', acmeAgent());
    expect(refused.body_).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' });
    expect(
      p.apiAudit.events.filter(
        (e) => e.action === 'runs.start' && e.decision === 'deny' && e.workspaceId === 'ws-acme',
      ),
    ).toMatchObject([{ reason: 'QUOTA_EXCEEDED', userId: 'carol' }]);
    // Another workspace has its own.
    expect((await start('bob', 'ws-globex', p.agentIds['ws-globex'] as string)).statusCode).toBe(202);
    // A run terminated from outside (its workflow cannot record that) no longer counts: at the limit,
    // the open records are brought up to date with Temporal first. (Not within the settle pause after a
    // settling that changed nothing, as carol's refused start's did: refused starts do not become a
    // stream of describes.)
    await p.testClient.workflow.getHandle(started[0]!).terminate('quota test');
    expect((await start('carol', 'ws-acme', acmeAgent())).statusCode).toBe(429);
    await new Promise((resolve) => setTimeout(resolve, 3100));
    expect((await start('carol', 'ws-acme', acmeAgent())).statusCode).toBe(202);
    const { rows } = await p.pool.query(`select status from agent_runs where workflow_id = $1`, [started[0]]);
    expect(rows).toEqual([{ status: 'failed' }]);
  });

  it('at the limit, records of runs Temporal does not know are settled: never started, or lost past retention', async () => {
    // A workspace of its own, at its limit of two with records only the database has.
    const { agentId, token } = await workspaceOf('ws-initech', 'ivan');
    const record = async (runId: string | null) =>
      (
        await p.pool.query<{ id: string }>(
          `insert into agent_runs (workspace_id, agent_id, workflow_id, run_id, status, created_by, created_at, updated_at)
           values ('ws-initech', $1, $2, $3, $4, 'ivan', now() - interval '2 minutes', now() - interval '2 minutes')
           returning id::text as id`,
          [agentId, `agent-run-${randomUUID()}`, runId, runId ? 'running' : 'pending'],
        )
      ).rows[0]!.id;
    // Never started (the API stopped between its record and the start); started, then gone.
    const unstarted = await record(null);
    const lost = await record(randomUUID());
    const started = await p.idleCall(token, 'POST', `/workspaces/ws-initech/agents/${agentId}/runs`, {
      input: 'after settling',
    });
    expect(started.statusCode).toBe(202);
    const { rows } = await p.pool.query<{ id: string; status: string; error: string }>(
      `select id::text as id, status, error from agent_runs where id in ($1, $2) order by error`,
      [unstarted, lost],
    );
    expect(rows).toEqual([
      { id: lost, status: 'failed', error: 'RUN_LOST' },
      { id: unstarted, status: 'failed', error: 'START_FAILED' },
    ]);
    await p.testClient.workflow.getHandle(started.body_.workflowId as string).terminate('quota test');
  });

  /**
   * A new workspace's run whose creator is removed while it waits for instructions, then cancelled
   * through Temporal: its workflow records the cancellation as its creator, which the live membership
   * check refuses, so Temporal has the run closed (`CANCELLED`) while its record still says `running`.
   */
  async function runEndedWhileCreatorRemoved(workspaceId: string, userId: string, key?: string) {
    const { agentId, token } = await workspaceOf(workspaceId, userId);
    const url = `/workspaces/${workspaceId}/agents/${agentId}/runs`;
    const body = { input: 'Tell me about roadmap', followUpSeconds: 120 };
    const started = await p.call(token, 'POST', url, body, key ? { 'idempotency-key': key } : undefined);
    expect(started.statusCode).toBe(202);
    const runId = started.body_.runId as string;
    await until(
      () => p.call(token, 'GET', `/runs/${runId}`),
      (r) => (r.body_.progress as Json | undefined)?.status === 'waiting',
    );
    const membership = [workspaceId, userId];
    await p.pool.query(`delete from memberships where workspace_id = $1 and user_id = $2`, membership);
    const handle = p.testClient.workflow.getHandle(started.body_.workflowId as string);
    await handle.cancel();
    await handle.result().catch(() => undefined);
    const recordOf = async () =>
      (
        await p.pool.query<{ status: string; error: string | null }>(
          `select status, error from agent_runs where id = $1`,
          [runId],
        )
      ).rows[0];
    expect(await recordOf()).toEqual({ status: 'running', error: null });
    const readmit = () =>
      p.pool.query(
        `insert into memberships (workspace_id, user_id, roles) values ($1, $2, '{member}')`,
        membership,
      );
    return { agentId, token, url, body, runId, recordOf, readmit };
  }

  it('at the limit, a record whose run could not write its ending is closed from Temporal, and frees its slot', async () => {
    const { url, recordOf } = await runEndedWhileCreatorRemoved('ws-unwritten', 'uma');
    // Another member, with one run open (on the queue no worker polls): the workspace is at its limit
    // of two, counting the record that still says running.
    const { token } = await memberOf('ws-unwritten', 'vera');
    const open = await p.idleCall(token, 'POST', url, { input: 'stays open' });
    expect(open.statusCode).toBe(202);
    const next = await p.idleCall(token, 'POST', url, { input: 'after settling' });
    expect(next.statusCode).toBe(202);
    expect(await recordOf()).toEqual({ status: 'cancelled', error: 'CANCELLED' });
    for (const r of [open, next])
      await p.testClient.workflow.getHandle(r.body_.workflowId as string).terminate('quota test');
  });

  it('a keyed retry of a run that ended without writing its ending answers the ending, and records it', async () => {
    const key = `run-${randomUUID()}`;
    const { token, url, body, runId, recordOf, readmit } = await runEndedWhileCreatorRemoved(
      'ws-unwritten-key',
      'ursula',
      key,
    );
    // Back in the workspace, the creator retries the start whose answer they never got.
    await readmit();
    const retry = await p.call(token, 'POST', url, body, { 'idempotency-key': key });
    expect(retry.statusCode).toBe(202);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body_).toMatchObject({ runId, status: 'cancelled' });
    expect(await recordOf()).toEqual({ status: 'cancelled', error: 'CANCELLED' });
  });

  it('settling leaves a record reopened moments ago by a retry with its key, however old the record', async () => {
    const { agentId, token } = await workspaceOf('ws-reopened', 'rita');
    const record = async (createdAgo: string, updatedAgo: string) =>
      (
        await p.pool.query<{ id: string }>(
          `insert into agent_runs (workspace_id, agent_id, workflow_id, status, created_by, created_at, updated_at)
           values ('ws-reopened', $1, $2, 'pending', 'rita', now() - $3::interval, now() - $4::interval)
           returning id::text as id`,
          [agentId, `agent-run-${randomUUID()}`, createdAgo, updatedAgo],
        )
      ).rows[0]!.id;
    // Both unknown to Temporal and written minutes ago; one reopened (START_FAILED -> pending) just now.
    const reopened = await record('3 minutes', '0 seconds');
    const unstarted = await record('2 minutes', '2 minutes');
    const started = await p.idleCall(token, 'POST', `/workspaces/ws-reopened/agents/${agentId}/runs`, {
      input: 'after settling',
    });
    expect(started.statusCode).toBe(202);
    const { rows } = await p.pool.query(
      `select id::text as id, status, error from agent_runs where id in ($1, $2) order by created_at`,
      [reopened, unstarted],
    );
    expect(rows).toEqual([
      { id: reopened, status: 'pending', error: null },
      { id: unstarted, status: 'failed', error: 'START_FAILED' },
    ]);
    await p.testClient.workflow.getHandle(started.body_.workflowId as string).terminate('quota test');
  });

  it('settling at the limit looks at ten records at a time, those looked at least recently first', async () => {
    const { agentId, token } = await workspaceOf('ws-hooli', 'gavin');
    // An API with room for twelve open runs, on the queue no worker polls: they stay running.
    const wide = await otherApi(p, { quotas: { openRuns: 12 } });
    const start = async () => {
      const res = await wide.inject({
        method: 'POST',
        url: `/workspaces/ws-hooli/agents/${agentId}/runs`,
        headers: { authorization: `Bearer ${token}` },
        payload: { input: 'rotation' },
      });
      return { status: res.statusCode, workflowId: (JSON.parse(res.body) as Json).workflowId as string };
    };
    const workflows: string[] = [];
    try {
      for (let i = 0; i < 12; i++) {
        const started = await start();
        expect(started.status).toBe(202);
        workflows.push(started.workflowId);
      }
      // The newest ended outside its workflow: only a settling that reaches it makes room.
      await p.testClient.workflow.getHandle(workflows[11]!).terminate('rotation test');
      // The first settling looks at the ten oldest (all running): nothing changes, refused.
      expect((await start()).status).toBe(429);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      // The next looks at the two it has not looked at yet, finds the terminated one: room.
      const after = await start();
      expect(after.status).toBe(202);
      workflows.push(after.workflowId);
      const { rows } = await p.pool.query(`select status, error from agent_runs where workflow_id = $1`, [
        workflows[11],
      ]);
      expect(rows).toEqual([{ status: 'failed', error: 'RUN_TERMINATED' }]);
    } finally {
      await wide.close();
      for (const id of workflows.slice(0, 11).concat(workflows.slice(12)))
        await p.testClient.workflow
          .getHandle(id)
          .terminate('rotation test')
          .catch(() => undefined);
    }
  });

  it('refuses a schedule past the workspace limit at once (429, audited); a deleted one no longer counts', async () => {
    const create = () =>
      p.call('alice', 'POST', `/workspaces/ws-acme/agents/${acmeAgent()}/schedules`, {
        everySeconds: 86_400,
        input: 'daily',
      });
    const first = await create();
    expect(first.statusCode).toBe(201);
    const id = first.body_.scheduleId as string;
    // Temporal's listing shows the new schedule only a while later: the API's own row counts it now.
    expect((await create()).body_).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' });
    expect(
      p.apiAudit.events.filter((e) => e.action === 'schedule.create' && e.decision === 'deny'),
    ).toMatchObject([{ reason: 'QUOTA_EXCEEDED', userId: 'alice' }]);
    // Once deleted it is not counted, although the listing may show it a while longer.
    expect((await p.call('alice', 'DELETE', `/workspaces/ws-acme/schedules/${id}`)).statusCode).toBe(204);
    const second = await create();
    expect(second.statusCode).toBe(201);
    await p.call('alice', 'DELETE', `/workspaces/ws-acme/schedules/${second.body_.scheduleId as string}`);
  });

  it('schedule creates at the same moment through two API processes take turns: no more than the limit', async () => {
    // Neither process's listing shows the others' new schedules yet: each create counts the rows before it.
    const creates = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        (i % 2 ? p.idleCall : p.call)(
          'alice',
          'POST',
          `/workspaces/ws-acme/agents/${acmeAgent()}/schedules`,
          {
            everySeconds: 86_400,
            input: 'at once',
          },
        ),
      ),
    );
    const created = creates.filter((r) => r.statusCode === 201).map((r) => r.body_.scheduleId as string);
    try {
      expect(created).toHaveLength(1);
      expect(creates.filter((r) => r.statusCode === 429)).toHaveLength(5);
    } finally {
      for (const id of created) await p.call('alice', 'DELETE', `/workspaces/ws-acme/schedules/${id}`);
    }
  });
});
