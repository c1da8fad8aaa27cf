// Determinism: histories recorded on the real dev server replay without non-determinism errors, with
// the plugin installed, after a key rotation (case 24): workflow code never verifies, verdicts are
// recorded in history, and retired codec keys stay decrypt-only.
//
// `replay-*` histories are rewritten by `RECORD_HISTORIES=1`; `kept-*` ones are not: they hold what
// current code can no longer record. `kept-updates-refused-after-acceptance-*` was recorded before
// refused updates were withdrawn before acceptance: the update from another workspace to a handler
// without a validator was accepted, then rejected. Runs in flight from then must still replay.
// `kept-unbound-start-*` were recorded before start tokens bound how a workflow starts: their headers
// carry no `b`, their workflow code stated no start in `lin`. `kept-unshared-verification-*` were
// recorded before getUserContext() shared one verification no caller cancels: a cancelled caller
// cancelled the local activity and the next call started another; they replay on that path
// (`SHARED_VERIFICATION_PATCH`), which without the patch fails with a nondeterminism error.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  generateKeySet,
  UserContextPlugin,
  memoryAuditSink,
  retireKey,
  rotateKeySet,
  runAsUser,
  workerKeySet,
  type KeySetJson,
} from 'temporal-user-context';
import { alice, bob, carol } from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath, useFixtureHarness } from '../fixtures/harness.js';

const historiesDir = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));

// Test-only keys, committed with the histories they recorded (never use them anywhere else).
const recordingKeys = JSON.parse(readFileSync(`${historiesDir}keys.json`, 'utf8')) as KeySetJson;

const h = useFixtureHarness({ keys: recordingKeys });

/**
 * The worker ring after a key rotation: fresh active keys, the recording codec key kept decrypt-only,
 * and the recording signing and sealing keys retired (removed). Replay needs the old codec key to
 * decode history, but never a token key: workflow code does not verify, and verification verdicts are
 * recorded in history (found by review: the ring kept the token keys, so the test could not show it).
 */
function rotatedPlugin(): UserContextPlugin {
  let set = rotateKeySet(recordingKeys);
  for (const kind of [recordingKeys.signing, recordingKeys.sealing])
    set = retireKey(set, kind.find((k) => k.status === 'active')!.kid);
  const ring = KeyRing.fromJSON(workerKeySet(set));
  // What the replay has: no key that opens or verifies the recorded tokens.
  for (const kind of [recordingKeys.signing, recordingKeys.sealing])
    for (const { kid } of kind)
      if (ring.signing.has(kid) || ring.sealing.has(kid)) throw new Error(`kept ${kid}`);
  return new UserContextPlugin({ keys: ring, audit: memoryAuditSink() });
}

async function record(): Promise<Array<{ name: string; workflowId: string; history: History }>> {
  const runs: Array<[string, string, unknown[]]> = [
    ['viaActivity', 'viaActivity', []],
    ['viaLocalActivity', 'viaLocalActivity', []],
    ['viaChild', 'viaChild', []],
    ['viaContinueAsNew', 'viaContinueAsNew', [1]],
    ['viaGetUserContext', 'viaGetUserContext', []],
    ['getUserContextAfterCancel', 'getUserContextAfterCancel', []],
    ['getUserContextSharedWithCancelled', 'getUserContextSharedWithCancelled', []],
  ];
  const out: Array<{ name: string; workflowId: string; history: History }> = [];
  for (const [name, type, args] of runs) {
    const workflowId = `replay-${name}-${Date.now()}`;
    await runAsUser(alice, () =>
      h.client.workflow.execute(type, { taskQueue: h.taskQueue, workflowId, args }),
    );
    out.push({ name, workflowId, history: await h.rawClient.workflow.getHandle(workflowId).fetchHistory() });
  }
  // Signals, updates and queries, including refused ones, in one history.
  const handle = await runAsUser(alice, () =>
    h.client.workflow.start('interactive', {
      taskQueue: h.taskQueue,
      workflowId: `replay-interactive-${Date.now()}`,
    }),
  );
  await runAsUser(carol, () => handle.executeUpdate('note', { args: ['n1'] }));
  await runAsUser(carol, () => handle.query('progress'));
  await runAsUser(alice, () => handle.signal('go', 'done'));
  await handle.result();
  out.push({ name: 'interactive', workflowId: handle.workflowId, history: await handle.fetchHistory() });
  // Updates refused before acceptance (with and without a validator) next to accepted ones.
  const updates = await runAsUser(alice, () =>
    h.client.workflow.start('updates', {
      taskQueue: h.taskQueue,
      workflowId: `replay-updates-${Date.now()}`,
    }),
  );
  for (const update of ['guarded', 'unguarded']) {
    await expect(
      runAsUser(bob, () => updates.executeUpdate(update, { args: ['refused'] })),
    ).rejects.toThrow();
    await runAsUser(carol, () => updates.executeUpdate(update, { args: ['accepted'] }));
  }
  await runAsUser(alice, () => updates.signal('finish'));
  await updates.result();
  out.push({ name: 'updates', workflowId: updates.workflowId, history: await updates.fetchHistory() });
  return out;
}

describe('replay', () => {
  it('histories recorded in this run replay deterministically under a rotated key ring', async () => {
    const recorded = await record();
    if (process.env.RECORD_HISTORIES) {
      mkdirSync(historiesDir, { recursive: true });
      for (const f of readdirSync(historiesDir)) if (f.startsWith('replay-')) rmSync(`${historiesDir}${f}`);
      for (const { workflowId, history } of recorded)
        writeFileSync(`${historiesDir}${workflowId}.json`, historyToJSON(history));
    }
    for (const { name, workflowId, history } of recorded) {
      await expect(
        Worker.runReplayHistory(
          { workflowsPath: fixtureWorkflowsPath, plugins: [rotatedPlugin()] },
          history,
          workflowId,
        ),
        name,
      ).resolves.toBeUndefined();
    }
  });

  it('committed histories (recorded by an earlier version) still replay', async () => {
    const files = readdirSync(historiesDir).filter(
      (f) => (f.startsWith('replay-') || f.startsWith('kept-')) && f.endsWith('.json'),
    );
    // Every committed history, by what it records: a file lost by accident would otherwise pass unseen.
    expect(files.map((f) => f.replace(/-\d+\.json$/, '')).sort()).toEqual([
      'kept-unbound-start-viaActivity',
      'kept-unbound-start-viaContinueAsNew',
      'kept-unshared-verification-getUserContextAfterCancel',
      'kept-unshared-verification-getUserContextSharedWithCancelled',
      'kept-updates-refused-after-acceptance',
      'replay-interactive',
      'replay-updates',
      'replay-viaActivity',
      'replay-viaChild',
      'replay-viaContinueAsNew',
      'replay-viaGetUserContext',
      'replay-viaLocalActivity',
    ]);
    const refusedAfterAcceptance = files.find((f) => f.startsWith('kept-updates-refused-after-acceptance-'));
    expect(refusedAfterAcceptance).toBeDefined();
    const accepted = historyFromJSON(
      JSON.parse(readFileSync(`${historiesDir}${refusedAfterAcceptance}`, 'utf8')),
    ).events?.map((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.meta?.updateId);
    expect(accepted).toContain('from-bob');
    for (const file of files) {
      const history = historyFromJSON(JSON.parse(readFileSync(`${historiesDir}${file}`, 'utf8')));
      // The id the history was recorded under (a kept file may have been renamed): payloads are bound to it.
      const workflowId =
        history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowId ||
        file.replace(/\.json$/, '');
      await expect(
        Worker.runReplayHistory(
          { workflowsPath: fixtureWorkflowsPath, plugins: [rotatedPlugin()] },
          history,
          workflowId,
        ),
        file,
      ).resolves.toBeUndefined();
    }
  });

  const otherNamespace = inject('temporalOtherNamespace');
  it.skipIf(!otherNamespace)(
    "a history of another namespace replays under a plugin that serves it, its payloads' namespace",
    async () => {
      const keys = generateKeySet('other-namespace');
      const workerRing = KeyRing.fromJSON(keys.worker);
      const audit = memoryAuditSink();
      const client = new Client({
        connection: h.connection,
        namespace: otherNamespace,
        plugins: [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit })],
      });
      const taskQueue = `other-ns-${randomUUID()}`;
      const worker = await Worker.create({
        connection: h.nativeConnection,
        namespace: otherNamespace,
        taskQueue,
        workflowsPath: fixtureWorkflowsPath,
        activities,
        plugins: [new UserContextPlugin({ keys: workerRing, audit })],
      });
      const workflowId = `replay-other-ns-${randomUUID()}`;
      await worker.runUntil(
        runAsUser(alice, () => client.workflow.execute('viaActivity', { taskQueue, workflowId })),
      );
      const history = await client.workflow.getHandle(workflowId).fetchHistory();
      const replay = (plugin: UserContextPlugin) =>
        Worker.runReplayHistory(
          { workflowsPath: fixtureWorkflowsPath, plugins: [plugin] },
          history,
          workflowId,
        );
      await expect(
        replay(new UserContextPlugin({ keys: workerRing, audit, namespace: otherNamespace })),
      ).resolves.toBeUndefined();
      // A plugin that knows no namespace replays as the SDK's 'default': the codec refuses the payloads.
      await expect(replay(new UserContextPlugin({ keys: workerRing, audit }))).rejects.toThrow(
        ErrorCodes.PAYLOAD_TAMPERED,
      );
    },
  );
});
