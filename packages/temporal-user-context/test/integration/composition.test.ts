// Beside what an application already has in its client and worker: its own workflow interceptor
// modules, other plugins, its own payload codec.
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import { alice, failureTypeOf, startHarness, type Harness } from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath } from '../fixtures/harness.js';

const appInterceptors = fileURLToPath(new URL('../fixtures/app-interceptors.ts', import.meta.url));

describe("an application's workflow interceptor module outside this plugin's", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      workflowsPath: fixtureWorkflowsPath,
      activities,
      worker: { interceptors: { workflowModules: [appInterceptors] } },
    });
  });
  afterAll(async () => h?.stop());

  it('schedules work before calling next(): it runs as the originator', async () => {
    // Found by review: this plugin's `execute` (the innermost) read the start header, so an activity
    // scheduled before it went without the originator and was refused as missing.
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute('viaActivity', {
        taskQueue: h.taskQueue,
        workflowId: `app-lookup-${randomUUID()}`,
        memo: { lookup: true },
      }),
    );
    expect(result).toEqual({ lookedUpAs: alice, result: alice });
  });

  it('a run started without a context is still refused, its early activity too', async () => {
    const workflowId = `app-lookup-raw-${randomUUID()}`;
    const code = await failureTypeOf(
      h.rawClient.workflow.execute('viaActivity', {
        taskQueue: h.taskQueue,
        workflowId,
        memo: { lookup: true },
      }),
    );
    expect(code).toBe(ErrorCodes.MISSING);
    const refused = h.audit.events.filter((e) => e.workflowId === workflowId && e.decision === 'deny');
    expect(refused.map((e) => e.action)).toContain('activity.execute');
  });
});
