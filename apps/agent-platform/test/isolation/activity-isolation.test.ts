// Issue 4 from a real activity on the real dev server: cross-workspace reads return nothing, writes are
// refused, and a membership revoked while a workflow waits is refused at its next activity (case 11).
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import {
  failureTypeOf,
  nthScheduledRun,
  startHarness,
  type Harness,
} from '../../../../test-support/harness.js';
import type { Backend } from '../../../../test-support/db-backends.js';
import { openPlatformDb } from '../data/helpers.js';
import { makeActivities } from './fixtures.js';

const workflowsPath = fileURLToPath(new URL('./workflows.ts', import.meta.url));
const alice = { userId: 'alice', workspaceId: 'ws-a', roles: ['admin', 'member'] };
const carol = { userId: 'carol', workspaceId: 'ws-a', roles: ['member'] };
const bob = { userId: 'bob', workspaceId: 'ws-b', roles: ['admin', 'member'] };

let h: Harness;
let b: Backend;
let bobAgentId: string;

beforeAll(async () => {
  b = await openPlatformDb('postgres', 'actiso');
  await b.admin.query(
    `insert into agents (workspace_id, name, instructions, model, created_by) values ('ws-a', 'alpha', '', 'local', 'alice')`,
  );
  const { rows } = await b.admin.query<{ id: string }>(
    `insert into agents (workspace_id, name, instructions, model, created_by) values ('ws-b', 'bravo', '', 'local', 'bob') returning id`,
  );
  bobAgentId = rows[0]!.id;
  h = await startHarness({ workflowsPath, activities: makeActivities(b.db) });
});
afterAll(async () => {
  await h?.stop();
  await b?.close();
});

const run = <T>(user: typeof alice, type: string, args: unknown[] = []) =>
  runAsUser(user, () =>
    h.client.workflow.execute(type, { taskQueue: h.taskQueue, workflowId: `${type}-${randomUUID()}`, args }),
  ) as Promise<T>;

describe('isolation from activities on the dev server (PostgreSQL, forced RLS)', () => {
  it('each workspace reads only its own rows', async () => {
    expect(await run<string[]>(alice, 'readAgents')).toEqual(['alpha']);
    expect(await run<string[]>(bob, 'readAgents')).toEqual(['bravo']);
  });

  it('cross-workspace read returns nothing, update touches nothing, insert is refused', async () => {
    const result = await run<{ read: string | null; rename: boolean; insert: string }>(
      alice,
      'crossWorkspace',
      [bobAgentId, 'ws-b'],
    );
    expect(result.read).toBeNull();
    expect(result.rename).toBe(false);
    expect(result.insert).toBe('42501'); // insufficient_privilege: new row violates row-level security policy
    const { rows } = await b.admin.query<{ name: string }>(
      `select name from agents where workspace_id = 'ws-b'`,
    );
    expect(rows.map((r) => r.name)).toEqual(['bravo']);
  });

  it('case 11: a membership removed while the workflow waits is refused at the next activity', async () => {
    const handle = await runAsUser(carol, () =>
      h.client.workflow.start('readSleepRead', {
        taskQueue: h.taskQueue,
        workflowId: `revoke-${randomUUID()}`,
      }),
    );
    // Wait until the first read has happened (or fail here: the revocation must fall between the two
    // reads), then revoke carol.
    await vi.waitFor(
      async () =>
        expect(
          (await handle.fetchHistory()).events?.some((e) => e.activityTaskCompletedEventAttributes),
        ).toBe(true),
      { timeout: 20_000, interval: 100 },
    );
    await b.admin.query(`delete from memberships where workspace_id = 'ws-a' and user_id = 'carol'`);
    await runAsUser(carol, () => handle.signal('proceed'));
    expect(await failureTypeOf(handle.result())).toBe(ErrorCodes.MEMBERSHIP_REVOKED);
    // The refusal is audited with the execution's ids, and was not retried (one attempt).
    const denials = h.audit.events.filter(
      (e) => e.workflowId === handle.workflowId && e.reason === ErrorCodes.MEMBERSHIP_REVOKED,
    );
    expect(denials.map((e) => [e.action, e.attempt, e.userId])).toEqual([['db.scope', 1, 'carol']]);
  });

  it('case 12: continue-as-new after revocation is refused at its first activity', async () => {
    await b.admin.query(
      `insert into memberships (workspace_id, user_id, roles) values ('ws-a', 'dave', '{member}')`,
    );
    const dave = { userId: 'dave', workspaceId: 'ws-a', roles: ['member'] };
    const handle = await runAsUser(dave, () =>
      h.client.workflow.start('readAfterContinueAsNew', {
        taskQueue: h.taskQueue,
        workflowId: `can-${randomUUID()}`,
        args: [0],
      }),
    );
    await waitForActivity(handle.workflowId);
    await b.admin.query(
      `update memberships set roles = '{viewer}' where workspace_id = 'ws-a' and user_id = 'dave'`,
    );
    await runAsUser(dave, () => handle.signal('proceed'));
    expect(await failureTypeOf(handle.result())).toBe(ErrorCodes.MEMBERSHIP_REVOKED);
  });

  it('case 12: a reset after revocation re-runs the activity and is refused', async () => {
    await b.admin.query(
      `insert into memberships (workspace_id, user_id, roles) values ('ws-a', 'frank', '{member}')`,
    );
    const frank = { userId: 'frank', workspaceId: 'ws-a', roles: ['member'] };
    const workflowId = `reset-${randomUUID()}`;
    expect(
      await runAsUser(frank, () =>
        h.client.workflow.execute('readAgents', { taskQueue: h.taskQueue, workflowId }),
      ),
    ).toEqual(['alpha']);
    await b.admin.query(`delete from memberships where workspace_id = 'ws-a' and user_id = 'frank'`);
    const handle = h.rawClient.workflow.getHandle(workflowId);
    const events = (await handle.fetchHistory()).events ?? [];
    const firstTask = events.find((e) => e.workflowTaskCompletedEventAttributes);
    const { runId } = await h.connection.workflowService.resetWorkflowExecution({
      namespace: h.namespace,
      workflowExecution: { workflowId, runId: (await handle.describe()).runId },
      workflowTaskFinishEventId: firstTask!.eventId,
      requestId: randomUUID(),
      reason: 'test: reset after revocation',
    });
    expect(await failureTypeOf(h.rawClient.workflow.getHandle(workflowId, runId ?? undefined).result())).toBe(
      ErrorCodes.MEMBERSHIP_REVOKED,
    );
  });

  it('case 12: a schedule run after the creator was revoked is refused', async () => {
    await b.admin.query(
      `insert into memberships (workspace_id, user_id, roles) values ('ws-a', 'erin', '{member}')`,
    );
    const erin = { userId: 'erin', workspaceId: 'ws-a', roles: ['member'] };
    const scheduleId = `sch-${randomUUID()}`;
    const schedule = await runAsUser(erin, () =>
      h.client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '1h' }] },
        action: {
          type: 'startWorkflow',
          workflowType: 'readAgents',
          taskQueue: h.taskQueue,
          workflowId: `${scheduleId}-wf`,
        },
      }),
    );
    await schedule.trigger();
    const first = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(first).result()).toEqual(['alpha']);
    await b.admin.query(`delete from memberships where workspace_id = 'ws-a' and user_id = 'erin'`);
    await schedule.trigger();
    const second = await nthScheduledRun(h.rawClient, scheduleId, 2);
    expect(await failureTypeOf(h.rawClient.workflow.getHandle(second).result())).toBe(
      ErrorCodes.MEMBERSHIP_REVOKED,
    );
    await schedule.delete();
  });
});

async function waitForActivity(workflowId: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const history = await h.rawClient.workflow.getHandle(workflowId).fetchHistory();
    if (history.events?.some((e) => e.activityTaskCompletedEventAttributes)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no activity completed');
}
