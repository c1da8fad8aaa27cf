// Per-workspace limits of the API: one member's runs or schedules share the worker, the model provider
// and the database with every workspace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlatform, until, type Json, type Platform } from './harness.js';

let p: Platform;
const acmeAgent = () => p.agentIds['ws-acme'] as string;

beforeAll(async () => {
  p = await startPlatform({ prefix: 'agent_quotas', api: { quotas: { openRuns: 2, schedules: 1 } } });
});

afterAll(async () => {
  await p?.stop();
});

describe('per-workspace quotas', () => {
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
    expect(p.apiAudit.events.filter((e) => e.action === 'runs.start' && e.decision === 'deny')).toMatchObject(
      [{ reason: 'QUOTA_EXCEEDED', userId: 'carol', workspaceId: 'ws-acme' }],
    );
    // Another workspace has its own.
    expect((await start('bob', 'ws-globex', p.agentIds['ws-globex'] as string)).statusCode).toBe(202);
    // Once a run ends, there is room again.
    await p.testClient.workflow.getHandle(started[0]!).terminate('quota test');
    await p.db.query(`update agent_runs set status = 'cancelled' where workflow_id = $1`, [started[0]]);
    expect((await start('carol', 'ws-acme', acmeAgent())).statusCode).toBe(202);
  });

  it('refuses a schedule past the workspace limit (429, audited)', async () => {
    const create = () =>
      p.call('alice', 'POST', `/workspaces/ws-acme/agents/${acmeAgent()}/schedules`, {
        everySeconds: 86_400,
        input: 'daily',
      });
    const first = await create();
    expect(first.statusCode).toBe(201);
    const id = first.body_.scheduleId as string;
    try {
      // The limit counts the schedules the listing shows, which catches up with a new one shortly after.
      await until(
        () => p.call('alice', 'GET', '/workspaces/ws-acme/schedules'),
        (r) => ((r.body_.schedules as Json[] | undefined) ?? []).some((s) => s.scheduleId === id),
        15_000,
      );
      expect((await create()).body_).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' });
      expect(
        p.apiAudit.events.filter((e) => e.action === 'schedule.create' && e.decision === 'deny'),
      ).toMatchObject([{ reason: 'QUOTA_EXCEEDED', userId: 'alice' }]);
    } finally {
      await p.call('alice', 'DELETE', `/workspaces/ws-acme/schedules/${id}`);
    }
  });
});
