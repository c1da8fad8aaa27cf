// Nexus: the caller workflow's context reaches the operation handler; without it the call is refused.
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import {
  SCHEDULED_BY_ID,
  alice,
  copiedStartHeaderClient,
  failureTypeOf,
  nthScheduledRun,
  startHarness,
  type Harness,
} from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { whoHandler } from '../fixtures/nexus-handler.js';

const workflowsPath = fileURLToPath(new URL('../fixtures/workflows.ts', import.meta.url));
let h: Harness;
let endpoint: string;
let endpointId: string | undefined;
let endpointVersion: unknown;

beforeAll(async () => {
  h = await startHarness({
    workflowsPath,
    activities,
    worker: { nexusServices: [whoHandler] },
    // Nexus results come back namespace-bound: the SDK gives Nexus handlers no workflow context.
    plugin: { codec: { acceptNamespaceBound: true } },
  });
  endpoint = `who-${randomUUID().slice(0, 8)}`;
  const created = await h.connection.operatorService.createNexusEndpoint({
    spec: { name: endpoint, target: { worker: { namespace: h.namespace, taskQueue: h.taskQueue } } },
  });
  endpointId = created.endpoint?.id ?? undefined;
  endpointVersion = created.endpoint?.version;
});
afterAll(async () => {
  if (endpointId)
    await h.connection.operatorService
      .deleteNexusEndpoint({ id: endpointId, version: endpointVersion as never })
      .catch(() => undefined);
  await h?.stop();
});

describe('Nexus', () => {
  it('the handler runs as the caller workflow originator', async () => {
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId: `nx-${randomUUID()}`,
        args: [endpoint],
      }),
    );
    expect(result).toEqual(alice);
  });

  it('a caller workflow without a context cannot reach the handler', async () => {
    // The raw start is refused by the workflow itself before any Nexus call is scheduled.
    const code = await failureTypeOf(
      h.rawClient.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId: `nx-${randomUUID()}`,
        args: [endpoint],
      }),
    );
    expect(code).toBe(ErrorCodes.MISSING);
  });

  it('a Nexus call that arrives without the header (caller worker without the plugin) is refused by the handler', async () => {
    const taskQueue = `plain-${randomUUID()}`;
    const plain = await Worker.create({
      connection: h.nativeConnection,
      namespace: h.namespace,
      taskQueue,
      workflowsPath,
      activities,
      dataConverter: h.rawClient.options.dataConverter,
    });
    const workflowId = `nx-plain-${randomUUID()}`;
    const code = await plain.runUntil(
      failureTypeOf(h.rawClient.workflow.execute('viaNexus', { taskQueue, workflowId, args: [endpoint] })),
    );
    expect(code).toBe(ErrorCodes.MISSING);
    expect(
      h.audit.events.some(
        (e) => e.action === 'nexus.start' && e.decision === 'deny' && e.workflowId === workflowId,
      ),
    ).toBe(true);
  });

  it('a scheduled run reaches the handler as the schedule creator; a run only claiming the schedule does not', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const schedule = await runAsUser(alice, () =>
      h.client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '1h' }] },
        action: {
          type: 'startWorkflow',
          workflowType: 'viaNexus',
          taskQueue: h.taskQueue,
          workflowId: `${scheduleId}-wf`,
          args: [endpoint],
        },
      }),
    );
    await schedule.trigger();
    const genuine = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(genuine).result()).toEqual(alice);
    // The handler confirms the caller with the server, as activities do: the copied header and the
    // client-set search attribute are not enough.
    const attacker = await copiedStartHeaderClient(h, genuine);
    const workflowId = `${scheduleId}-wf-2031-01-01T00:00:00Z`;
    const code = await failureTypeOf(
      attacker.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId,
        args: [endpoint],
        typedSearchAttributes: [{ key: SCHEDULED_BY_ID, value: scheduleId }],
      }),
    );
    expect(code).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(
      h.audit.events.some(
        (e) =>
          e.action === 'nexus.start' &&
          e.decision === 'deny' &&
          e.workflowId === workflowId &&
          e.reason === ErrorCodes.LINEAGE_MISMATCH,
      ),
    ).toBe(true);
    await schedule.delete();
  });
});
