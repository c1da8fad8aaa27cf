// A workflow run by a worker without this plugin (anyone who may run a worker in the namespace) can
// schedule activities onto any task queue with a token copied from history and `lin` facts of its
// choosing. With `activityLineage: 'header'` (the default) the guard reads those facts; with
// `'server'` it asks the server for the activity's run instead (docs/wire-format.md, Limits).
import { randomUUID } from 'node:crypto';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextPlugin, runAsUser } from 'temporal-user-context';
import { alice, failureTypeOf, forgeryOf } from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { pluginlessWorker, useFixtureHarness } from '../fixtures/harness.js';

const h = useFixtureHarness();

/** A worker running only activities, with the plugin set to `activityLineage`. */
function activityWorker(activityLineage: 'header' | 'server') {
  const taskQueue = `victim-${activityLineage}-${randomUUID()}`;
  return Worker.create({
    connection: h.nativeConnection,
    namespace: h.namespace,
    taskQueue,
    activities,
    plugins: [new UserContextPlugin({ keys: h.workerRing, audit: h.audit, activityLineage })],
  }).then((worker) => ({ worker, taskQueue }));
}

describe('activities scheduled by a rogue workflow', () => {
  it("run as the copied token's user when the lineage comes from the header, and are refused when it comes from the server", async () => {
    // The victim: any run of alice's; its start header and start time are all the attacker reads.
    const victim = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `rogue-victim-${randomUUID()}`,
      }),
    );
    const forged = await forgeryOf(h, victim);
    const rogueQueue = `rogue-${randomUUID()}`;
    const rogue = await pluginlessWorker(h, rogueQueue, true);
    // The rogue workflow's own id is the activity's (server data); the rest of `lin` names the victim.
    const attack = async (taskQueue: string) => {
      const workflowId = `rogue-${randomUUID()}`;
      const header = {
        ...JSON.parse(forged.header),
        lin: { ...JSON.parse(forged.header).lin, wf: workflowId },
      };
      return h.rawClient.workflow.execute('whoamiOn', {
        taskQueue: rogueQueue,
        workflowId,
        args: [taskQueue],
        memo: { forge: { header: JSON.stringify(header) } },
      });
    };
    const trusting = await activityWorker('header');
    const confirming = await activityWorker('server');
    await rogue.runUntil(async () => {
      // The documented limit of the default.
      expect(await trusting.worker.runUntil(attack(trusting.taskQueue))).toEqual(alice);
      expect(await failureTypeOf(confirming.worker.runUntil(attack(confirming.taskQueue)))).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
    });
    await victim.terminate();
  });

  it("with the lineage from the server, genuine activities still run: top level, a child's, and after continue-as-new", async () => {
    const { worker, taskQueue } = await activityWorker('server');
    // Workflows of the harness worker send their activities to this queue through the fixture
    // `whoamiOn`, from a top-level run, a child, and a run that continued as new.
    const run = (workflow: string, args: unknown[]) =>
      runAsUser(alice, () =>
        h.client.workflow.execute(workflow, {
          taskQueue: h.taskQueue,
          workflowId: `genuine-${randomUUID()}`,
          args,
        }),
      );
    await worker.runUntil(async () => {
      expect(await run('whoamiOn', [taskQueue])).toEqual(alice);
      expect(await run('whoamiOnFromChild', [taskQueue])).toEqual(alice);
      expect(await run('whoamiOnAfterContinueAsNew', [taskQueue])).toEqual(alice);
    });
  });
});
