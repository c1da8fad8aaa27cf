// An update-with-start the plugin refuses, against a connection that records what would reach the
// server: nothing does, and the operation's handle settles with the refusal (SDK 1.24 rejects it only
// from its own handler, which the plugin hands the refusal to).
import {
  WithStartWorkflowOperation,
  WorkflowClient,
  type WorkflowClientInterceptor,
  type WorkflowClientOptions,
} from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, KeyRing, generateKeySet, runAsUser } from '../../src/index.js';
import { edgeSource } from './edge-source.js';
import { UserContextWorkflowClientInterceptor } from '../../src/client/interceptors.js';

const edge = KeyRing.fromJSON(generateKeySet('update-with-start').edge);

/** A client whose only server call records its request and fails; `inner` runs inside the plugin's. */
function clientWith(inner?: WorkflowClientInterceptor) {
  const { source, audit } = edgeSource(edge);
  const sent: unknown[] = [];
  const connection = {
    workflowService: {
      executeMultiOperation: (request: unknown) => {
        sent.push(request);
        return Promise.reject(new Error('reached the server'));
      },
      signalWithStartWorkflowExecution: (request: unknown) => {
        sent.push(request);
        return Promise.reject(new Error('reached the server'));
      },
    },
    withDeadline: (_deadline: unknown, fn: () => unknown) => fn(),
  } as unknown as WorkflowClientOptions['connection'];
  const client = new WorkflowClient({
    connection,
    interceptors: [new UserContextWorkflowClientInterceptor(source), ...(inner ? [inner] : [])],
  });
  return { client, sent, audit };
}

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

describe('a call that issues two tokens (signalWithStart, update-with-start)', () => {
  const alice = { userId: 'alice', workspaceId: 'ws-1', roles: ['member'] };
  const records = (audit: ReturnType<typeof clientWith>['audit']) =>
    audit.events.map((e) => [e.action, e.decision, e.reason]);
  // A call name no actor token can bind (over 1000 characters), after a start token that can be issued.
  const tooLong = 'n'.repeat(1000);

  it('records no allowed start when the actor token is refused, and sends nothing', async () => {
    // Found by review: the start token's allow record was emitted before the actor token was refused.
    const { client, sent, audit } = clientWith();
    await expect(
      runAsUser(alice, () =>
        client.signalWithStart('wf', { workflowId: 'w1', taskQueue: 'tq', signal: tooLong, signalArgs: [] }),
      ),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    const op = operation();
    await expect(
      runAsUser(alice, () =>
        client.executeUpdateWithStart(tooLong, { args: [], startWorkflowOperation: op }),
      ),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    await expect(op.workflowHandle()).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect(sent).toEqual([]);
    expect(records(audit)).toEqual([
      ['client.signalWithStart', 'deny', ErrorCodes.MISCONFIGURED],
      ['client.startUpdateWithStart', 'deny', ErrorCodes.MISCONFIGURED],
    ]);
  });

  it('records both tokens as allowed, start first, when both are issued', async () => {
    const { client, sent, audit } = clientWith();
    await expect(
      runAsUser(alice, () =>
        client.signalWithStart('wf', { workflowId: 'w1', taskQueue: 'tq', signal: 'note', signalArgs: [] }),
      ),
    ).rejects.toMatchObject({ cause: { message: 'reached the server' } });
    expect(sent).toHaveLength(1);
    expect(records(audit)).toEqual([
      ['client.signalWithStart', 'allow', 'ok'],
      ['client.signalWithStart', 'allow', 'ok'],
    ]);
    const [start, actor] = audit.events;
    expect(start!.tokenId).toBeTruthy();
    expect(actor!.tokenId).toBeTruthy();
    expect(start!.tokenId).not.toBe(actor!.tokenId);
  });
});
