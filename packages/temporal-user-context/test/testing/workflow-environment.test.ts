// Workflow tests as docs/testing.md shows them: the SDK's TestWorkflowEnvironment given this plugin, which
// then reaches its client, its Connection and, through the NativeConnection, a Worker given no plugin.
import { randomUUID } from 'node:crypto';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
  runAsUser,
} from 'temporal-user-context';
import { alice, bob, carol } from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath } from '../fixtures/harness.js';

describe('TestWorkflowEnvironment with the plugin', () => {
  const audit = memoryAuditSink();
  // One process plays both sides in a test: an edge key set signs at the client and verifies on the worker.
  const plugin = new UserContextPlugin({ keys: KeyRing.fromJSON(generateKeySet('test').edge), audit });
  const taskQueue = `tq-${randomUUID()}`;
  let env: TestWorkflowEnvironment;
  let worker: Worker;
  let running: Promise<void>;

  beforeAll(async () => {
    env = await TestWorkflowEnvironment.createFromExistingServer({
      address: inject('temporalAddress'),
      namespace: inject('temporalNamespace'),
      plugins: [plugin],
    });
    // No `plugins` here: the worker takes the plugin from the environment's NativeConnection.
    worker = await Worker.create({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      taskQueue,
      workflowsPath: fixtureWorkflowsPath,
      activities,
    });
    running = worker.run();
  });

  afterAll(async () => {
    worker?.shutdown();
    await running;
    await env?.teardown();
  });

  it('runs workflows as the user in scope, through every boundary the workflow uses', async () => {
    const viaChild = await runAsUser(alice, () =>
      env.client.workflow.execute('viaChild', { taskQueue, workflowId: `wf-${randomUUID()}` }),
    );
    expect(viaChild).toEqual(alice);
    const workflowId = `wf-${randomUUID()}`;
    const tokenOfStart = audit.events.length;
    await runAsUser(alice, () => env.client.workflow.execute('viaActivity', { taskQueue, workflowId }));
    // The worker verified the token the client issued: the same token id on both records.
    const issued = audit.events.slice(tokenOfStart).find((e) => e.action === 'client.start');
    const verified = audit.events
      .slice(tokenOfStart)
      .find((e) => e.action === 'activity.execute' && e.workflowId === workflowId);
    expect(issued).toMatchObject({ decision: 'allow', userId: 'alice', workflowId });
    expect(verified).toMatchObject({ decision: 'allow', userId: 'alice', tokenId: issued!.tokenId });
  });

  it('refuses a start with no user in scope before it reaches the server', async () => {
    const workflowId = `wf-${randomUUID()}`;
    await expect(env.client.workflow.start('viaActivity', { taskQueue, workflowId })).rejects.toMatchObject({
      code: ErrorCodes.MISSING,
    });
    await expect(env.client.workflow.getHandle(workflowId).describe()).rejects.toThrow(/not found/i);
  });

  it('keeps the actor policy: a signal from another workspace never reaches the handler', async () => {
    const handle = await runAsUser(alice, () =>
      env.client.workflow.start('interactive', { taskQueue, workflowId: `wf-${randomUUID()}` }),
    );
    await runAsUser(bob, () => handle.signal('go', 'from bob'));
    await runAsUser(carol, () => handle.signal('go', 'from carol'));
    const result = await handle.result();
    expect(result.notes).toEqual(['signal:from carol']);
    expect(result.actorVerified).toEqual(carol);
    expect(audit.events).toContainEqual(
      expect.objectContaining({ action: 'workflow.signal', decision: 'deny', workflowId: handle.workflowId }),
    );
  });

  it('fails a workflow whose activity gets no context, naming the code', async () => {
    const workflowId = `wf-${randomUUID()}`;
    // A client on a Connection of its own, without the plugin (a client on `env.connection` has it: the
    // SDK passes a Connection's plugins to every Client built on it): it sends no header, and the
    // plugin's workflow interceptors fail the run.
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const raw = new Client({ connection, namespace: env.namespace ?? 'default' });
      const err = await raw.workflow
        .execute('viaActivity', { taskQueue, workflowId, workflowExecutionTimeout: '30s' })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(JSON.stringify((err as WorkflowFailedError).cause)).toContain(ErrorCodes.MISSING);
    } finally {
      await connection.close();
    }
  });
});
