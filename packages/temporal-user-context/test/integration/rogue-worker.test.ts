// A workflow run by a worker without this plugin (anyone who may run a worker in the namespace) can
// schedule activities onto any task queue with a token copied from history and `lin` facts of its
// choosing. With `activityLineage: 'header'` (the default) the guard reads those facts; with
// `'server'` it asks the server for the activity's run instead (docs/wire-format.md, Limits).
import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { describe, expect, it, vi } from 'vitest';
import {
  ACTOR_HEADER,
  ErrorCodes,
  ORIGINATOR_HEADER,
  encodeHeader,
  UserContextPlugin,
  decodeHeader,
  issueContextToken,
  runAsUser,
} from 'temporal-user-context';
import {
  alice,
  carol,
  failureTypeOf,
  forgeryOf,
  headerWritingClient,
} from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath, pluginlessWorker, useFixtureHarness } from '../fixtures/harness.js';

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

/**
 * A run of alice's (any: its start header and start time are all the attacker reads), what the attacker
 * makes of it (`forgeryOf`), and a worker without the plugin that writes the forged header.
 */
async function victimAndRogue() {
  const victim = await runAsUser(alice, () =>
    h.client.workflow.start('interactive', {
      taskQueue: h.taskQueue,
      workflowId: `rogue-victim-${randomUUID()}`,
    }),
  );
  const forged = await forgeryOf(h, victim);
  const rogueQueue = `rogue-${randomUUID()}`;
  const rogue = await pluginlessWorker(h, rogueQueue, true);
  return { victim, forged, rogueQueue, rogue };
}

/**
 * Runs `attack` against an activity worker that takes the lineage from the header, which must run it as
 * `expected` (the documented limit of the default), and against one that takes it from the server,
 * which must refuse it.
 */
async function headerPassesServerRefuses(
  attack: (taskQueue: string) => Promise<unknown>,
  expected: unknown,
): Promise<void> {
  const trusting = await activityWorker('header');
  const confirming = await activityWorker('server');
  expect(await trusting.worker.runUntil(attack(trusting.taskQueue))).toEqual(expected);
  expect(await failureTypeOf(confirming.worker.runUntil(attack(confirming.taskQueue)))).toBe(
    ErrorCodes.LINEAGE_MISMATCH,
  );
}

describe('activities scheduled by a rogue workflow', () => {
  it("run as the copied token's user when the lineage comes from the header, and are refused when it comes from the server", async () => {
    const { victim, forged, rogueQueue, rogue } = await victimAndRogue();
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
    await rogue.runUntil(headerPassesServerRefuses(attack, alice));
    await victim.terminate();
  });

  it("that restart the victim's own workflow id with copied start facts pass on the header's lineage, and are refused on the server's (check 10)", async () => {
    // The rogue run takes the victim's id (ending it) within the token's window and states the victim's
    // start in `lin` (type and queue: both in history). Only the server's record of the
    // rogue run's start, a `whoamiOn` on the rogue queue, tells it apart.
    const { victim, forged, rogueQueue, rogue } = await victimAndRogue();
    const attack = (taskQueue: string) =>
      h.rawClient.workflow.execute('whoamiOn', {
        taskQueue: rogueQueue,
        workflowId: victim.workflowId,
        workflowIdConflictPolicy: 'TERMINATE_EXISTING',
        args: [taskQueue],
        memo: { forge: { header: forged.header } },
      });
    await rogue.runUntil(headerPassesServerRefuses(attack, alice));
    const refusal = h.audit.events.find(
      (e) => e.workflowId === victim.workflowId && e.decision === 'deny' && e.action === 'activity.execute',
    );
    expect(refusal?.detail).toContain('another workflow type or on another task queue');
  });

  it('carry an actor copied from another run when the lineage comes from the header, and not when it comes from the server', async () => {
    // Carol acts on alice's run V: her actor token, bound to V, is in V's history for 300 s.
    const victim = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `rogue-victim-${randomUUID()}`,
      }),
    );
    await runAsUser(carol, () => victim.signal('go', 'x'));
    // (The server buffers a signal while a workflow task is in flight: wait for it in history.)
    const copied = await vi.waitFor(
      async () => {
        const signaled = (await victim.fetchHistory()).events?.find(
          (e) => e.workflowExecutionSignaledEventAttributes,
        )?.workflowExecutionSignaledEventAttributes;
        const header = decodeHeader(signaled?.header?.fields ?? {}, ACTOR_HEADER);
        expect(header).toBeDefined();
        return header!;
      },
      { timeout: 10_000 },
    );
    // The rogue run M is genuinely alice's (the edge issued its start token); its worker runs without
    // the plugin and sends Carol's actor along, its `lin` naming V as M's root.
    const rogueQueue = `rogue-${randomUUID()}`;
    const rogue = await pluginlessWorker(h, rogueQueue, true);
    const attack = async (taskQueue: string) => {
      const workflowId = `rogue-${randomUUID()}`;
      const { header } = await issueContextToken(h.edgeRing, alice, {
        namespace: h.namespace,
        use: 'start',
        workflowId,
      });
      const own = { root: workflowId, start: Date.now(), wf: workflowId };
      const forge = {
        header: JSON.stringify({ ...header, lin: own }),
        // The rogue states the call the token was issued for, as it states the root (check 11).
        actor: JSON.stringify({ ...copied, lin: { ...own, root: victim.workflowId, hn: 'signal:go' } }),
      };
      return h.rawClient.workflow.execute('whoActsOn', {
        taskQueue: rogueQueue,
        workflowId,
        args: [taskQueue],
        memo: { forge },
      });
    };
    // The documented limit of the default: the rogue's `lin` is believed. With the server's root, Carol's
    // token (bound to V) is not an actor of M's lineage: the activity runs as alice without an actor, and
    // currentActor() throws the refusal.
    await rogue.runUntil(headerPassesServerRefuses(attack, carol));
    const records = h.audit.events.filter(
      (e) => e.action === 'activity.actor' && e.activityType === 'whoActs',
    );
    expect(records.map((e) => [e.decision, e.userId, e.reason, e.detail])).toEqual([
      ['allow', 'carol', 'ok', undefined],
      ['deny', undefined, ErrorCodes.LINEAGE_MISMATCH, 'actor token was issued for another workflow'],
    ]);
    await victim.result(); // Carol's `go` finished it
  });

  it("a call stated in a rogue parent's lineage is not inherited: a child's actor acts only in its own handler's call (check 11)", async () => {
    // Carol signals alice's run W ('first'): her actor token binds W and that call. Once W has closed, a
    // rogue run takes W's id and starts an honest child whose start header states W's lineage and the
    // call (`hn`); the copied actor header, its `b` dropped, then reaches the child's handler. The
    // child's activities must state their own handler's call, never one inherited from a parent.
    const w = `rogue-w-${randomUUID()}`;
    const genuine = await runAsUser(alice, () =>
      h.client.workflow.start('twoSignals', { taskQueue: h.taskQueue, workflowId: w }),
    );
    await runAsUser(carol, () => genuine.signal('first', 'x'));
    await runAsUser(alice, () => genuine.signal('done'));
    expect(await genuine.result()).toEqual({ 'first:x': carol.userId });
    const events = (await genuine.fetchHistory()).events ?? [];
    const started = events[0]?.workflowExecutionStartedEventAttributes;
    const originator = decodeHeader(started?.header?.fields ?? {}, ORIGINATOR_HEADER)!;
    const signaled = events.find(
      (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'first',
    )?.workflowExecutionSignaledEventAttributes;
    const { b: _b, ...actor } = decodeHeader(signaled?.header?.fields ?? {}, ACTOR_HEADER)!;
    const { startTime } = await genuine.describe();
    const lin = {
      root: w,
      start: startTime.getTime(),
      wf: w,
      wt: 'twoSignals',
      tq: h.taskQueue,
      hn: 'signal:first',
    };
    const rogueQueue = `rogue-${randomUUID()}`;
    const rogue = await pluginlessWorker(h, rogueQueue, true);
    const childId = `${w}-child`;
    const result = await rogue.runUntil(async () => {
      const parent = await h.rawClient.workflow.start('twoSignalsChildOn', {
        taskQueue: rogueQueue,
        workflowId: w,
        args: [h.taskQueue, childId],
        memo: {
          forge: { header: JSON.stringify(originator), child: JSON.stringify({ ...originator, lin }) },
        },
      });
      const attacker = headerWritingClient(h, { [ACTOR_HEADER]: encodeHeader(actor) });
      const child = attacker.workflow.getHandle(childId);
      await vi.waitFor(() => child.describe(), { timeout: 10_000 });
      await child.signal('first', 'y');
      await child.signal('done');
      return parent.result();
    });
    expect(result).toEqual({ 'first:y': ErrorCodes.LINEAGE_MISMATCH });
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

describe('an activity argument the worker refuses to decode', () => {
  it("fails the activity with the refusal's code as its type, which a retry policy can name", async () => {
    // A rogue worker without the codec: its workflow sends a plaintext argument to the plugin's worker.
    const rogueQueue = `rogue-plain-${randomUUID()}`;
    const plain = new Client({ connection: h.connection, namespace: h.namespace });
    const rogue = await Worker.create({
      connection: h.nativeConnection,
      namespace: h.namespace,
      taskQueue: rogueQueue,
      workflowsPath: fixtureWorkflowsPath,
    });
    const workflowId = `rogue-plain-${randomUUID()}`;
    const outcome = await rogue.runUntil(
      failureTypeOf(
        plain.workflow.execute('explicitOn', {
          taskQueue: rogueQueue,
          workflowId,
          args: [h.taskQueue, carol],
        }),
      ),
    );
    expect(outcome).toBe(ErrorCodes.PLAINTEXT_PAYLOAD);
    const { history } = await h.connection.workflowService.getWorkflowExecutionHistory({
      namespace: h.namespace,
      execution: { workflowId },
    });
    const events = history?.events ?? [];
    // One attempt: the SDK fails the task as retryable, but its type is one the retry policy names.
    expect(events.map((e) => e.activityTaskStartedEventAttributes?.attempt).filter(Boolean)).toEqual([1]);
    const failed = events.find((e) => e.activityTaskFailedEventAttributes)?.activityTaskFailedEventAttributes;
    expect(failed?.failure?.applicationFailureInfo?.type).toBe(ErrorCodes.PLAINTEXT_PAYLOAD);
    expect(
      h.audit.events.filter((e) => e.workflowId === workflowId).map((e) => [e.action, e.decision, e.reason]),
    ).toEqual([['codec.decode', 'deny', ErrorCodes.PLAINTEXT_PAYLOAD]]);
  });
});
