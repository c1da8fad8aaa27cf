// Key rotation against a real server (case 24): what a retired key still does, days after its cut-off.
import { randomUUID } from 'node:crypto';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  activateKeySet,
  generateKeySet,
  issueContextToken,
  stageKeySet,
} from 'temporal-user-context';
import { failureTypeOf } from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { pluginlessWorker, useFixtureHarness } from '../fixtures/harness.js';

// The edge set as an old backup kept it, and the set in use: rotated ten days ago, with no grace.
const backup = generateKeySet('test-edge').edge;
const rotatedAt = Date.now() - 10 * 86_400_000;
const h = useFixtureHarness({
  keys: activateKeySet(stageKeySet(backup), { graceSeconds: 0, now: rotatedAt }),
});

/** A worker of the fixture activities with the rotated worker set, reading lineage as `activityLineage`. */
async function activityWorker(activityLineage: 'header' | 'server') {
  const taskQueue = `victim-${activityLineage}-${randomUUID()}`;
  const worker = await Worker.create({
    connection: h.nativeConnection,
    namespace: h.namespace,
    taskQueue,
    activities,
    plugins: [new UserContextPlugin({ keys: h.workerRing, audit: h.audit, activityLineage })],
  });
  return { worker, taskQueue };
}

describe('a copy of a retired signing key', () => {
  // Found by review: the docs said such a copy mints nothing workers take a day after the cut-off. It
  // holds where workers date lineages by the server's record; with the header's lineage (the default)
  // a worker of the copy's holder states a start inside the token's window (the rogue-worker limit,
  // docs/threat-model.md, case 24).
  it("mints no one that workers take when they read the server's lineage; with the header's, a forged start passes", async () => {
    const notAfter = Math.floor(rotatedAt / 1000);
    const mallory = { userId: 'mallory', workspaceId: 'ws-victim', roles: ['owner'] };
    // A workflow of the copy's holder, on a worker without the plugin, that writes the header it mints.
    const rogueQueue = `rogue-${randomUUID()}`;
    const rogue = await pluginlessWorker(h, rogueQueue, true);
    const attack = async (taskQueue: string) => {
      const workflowId = `rogue-${randomUUID()}`;
      const { header } = await issueContextToken(KeyRing.fromJSON(backup), mallory, {
        namespace: h.namespace,
        use: 'start',
        workflowId,
        now: () => (notAfter - 30) * 1000,
      });
      const forged = { ...header, lin: { root: workflowId, wf: workflowId, start: (notAfter - 20) * 1000 } };
      return h.rawClient.workflow.execute('whoamiOn', {
        taskQueue: rogueQueue,
        workflowId,
        args: [taskQueue],
        memo: { forge: { header: JSON.stringify(forged) } },
      });
    };
    const refusals: Record<string, string | undefined> = {};
    await rogue.runUntil(async () => {
      for (const lineage of ['header', 'server'] as const) {
        const victim = await activityWorker(lineage);
        refusals[lineage] = await victim.worker.runUntil(failureTypeOf(attack(victim.taskQueue)));
      }
    });
    expect(refusals).toEqual({ header: undefined, server: ErrorCodes.LINEAGE_MISMATCH });
    // The server's word: the lineage started ten days after the token's window.
    expect(
      h.audit.events
        .filter((e) => e.userId === mallory.userId && e.decision === 'deny')
        .map((e) => [e.action, e.reason, e.detail]),
    ).toEqual([
      ['activity.execute', ErrorCodes.LINEAGE_MISMATCH, 'lineage started after the token start window'],
    ]);
  });
});
