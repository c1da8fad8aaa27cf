// An update-with-start the plugin refuses, against a connection that records what would reach the
// server: nothing does, and the operation's handle settles with the refusal (SDK 1.24 rejects it only
// from its own handler, which the plugin hands the refusal to).
import { WithStartWorkflowOperation, type WorkflowClientInterceptor } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, KeyRing, generateKeySet } from '../../src/index.js';
import { recordingClients } from './edge-source.js';

const edge = KeyRing.fromJSON(generateKeySet('update-with-start').edge);

const clientWith = (inner?: WorkflowClientInterceptor) => recordingClients(edge, inner ? { inner } : {});

const operation = (options: { requestEagerStart?: boolean } = {}) =>
  new WithStartWorkflowOperation('wf', {
    workflowId: 'w1',
    taskQueue: 'tq',
    workflowIdConflictPolicy: 'USE_EXISTING',
    ...options,
  });

describe('an update-with-start refused by the plugin (no user in scope)', () => {
  it('rejects the call and the operation’s handle with the refusal, sends nothing, records once', async () => {
    const { client, sent, audit } = clientWith();
    const op = operation();
    await expect(
      client.executeUpdateWithStart('note', { args: [], startWorkflowOperation: op }),
    ).rejects.toMatchObject({ code: ErrorCodes.MISSING });
    await expect(op.workflowHandle()).rejects.toMatchObject({ code: ErrorCodes.MISSING });
    expect(sent).toEqual([]);
    expect(audit.events.map((e) => [e.action, e.decision, e.reason])).toEqual([
      ['client.startUpdateWithStart', 'deny', ErrorCodes.MISSING],
    ]);
  });

  it('sends nothing either when an interceptor inside the plugin’s copies the start options', async () => {
    // Found by review: a copy that dropped the refusal's getter sent the start without its header.
    const copying: WorkflowClientInterceptor = {
      startUpdateWithStart: (input, next) =>
        next({ ...input, workflowStartOptions: { ...input.workflowStartOptions, memo: { tenant: 'x' } } }),
    };
    for (const options of [{}, { requestEagerStart: false }]) {
      const { client, sent } = clientWith(copying);
      await expect(
        client.executeUpdateWithStart('note', { args: [], startWorkflowOperation: operation(options) }),
      ).rejects.toMatchObject({ code: ErrorCodes.MISSING });
      expect(sent, JSON.stringify(options)).toEqual([]);
    }
  });
});
