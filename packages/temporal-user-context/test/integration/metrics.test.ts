// Decisions counted on the Temporal runtime's own metric meter, read back from its Prometheus endpoint.
import { randomUUID } from 'node:crypto';
import { Runtime } from '@temporalio/worker';
import { describe, expect, it, vi } from 'vitest';
import { ErrorCodes, memoryAuditSink, metricsAuditSink, runAsUser } from 'temporal-user-context';
import { alice, failureTypeOf } from '../../../../test-support/harness.js';
import { freePort } from '../../../../test-support/net.js';
import { useFixtureHarness } from '../fixtures/harness.js';

// Before anything in this process uses the runtime (each test file runs in a process of its own).
const metricsAddress = `127.0.0.1:${await freePort()}`;
Runtime.install({ telemetryOptions: { metrics: { prometheus: { bindAddress: metricsAddress } } } });
const trail = memoryAuditSink();
const h = useFixtureHarness({
  plugin: { audit: [trail, metricsAuditSink(Runtime.instance().metricMeter)] },
});

/** The counter's series on the endpoint: `action decision reason` → value. */
async function scraped(): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^\w*user_context_decisions\w*\{([^}]*)\} (\d+)/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    series.set(`${labels.action} ${labels.decision} ${labels.reason}`, Number(match[2]));
  }
  return series;
}

/** What the trail recorded, counted the same way. */
function counted(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of trail.events) {
    const key = `${e.action} ${e.decision} ${e.reason}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

describe('metricsAuditSink on the runtime meter', () => {
  it('counts every decision by action, decision and reason, as the trail records them', async () => {
    expect(
      await runAsUser(alice, () =>
        h.client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId: `m-${randomUUID()}` }),
      ),
    ).toMatchObject({ userId: alice.userId });
    // Started with no context: refused in the workflow (a record the workflow's sink brings to the worker).
    expect(
      await failureTypeOf(
        h.rawClient.workflow.execute('viaActivity', {
          taskQueue: h.taskQueue,
          workflowId: `m-${randomUUID()}`,
        }),
      ),
    ).toBe(ErrorCodes.MISSING);
    await vi.waitFor(async () => expect(await scraped()).toEqual(counted()), { timeout: 10_000 });
    const series = await scraped();
    expect(Object.fromEntries(series)).toEqual({
      'client.start allow ok': 1,
      'activity.execute allow ok': 1,
      [`workflow.execute deny ${ErrorCodes.MISSING}`]: 1,
    });
    // No user, workspace or id in any series.
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    expect(text).not.toContain(alice.userId);
    expect(text).not.toContain(alice.workspaceId);
  });
});
