// What the edge puts on record for a call that issues a token, against a connection that records what
// would reach the server: an allow record only for a call that is then sent, and none for one refused
// or failing after a token was issued (a second token refused, search attributes the mirror cannot take).
import { WithStartWorkflowOperation } from '@temporalio/client';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, KeyRing, generateKeySet, runAsUser, type memoryAuditSink } from '../../src/index.js';
import { recordingClients } from './edge-source.js';

const edge = KeyRing.fromJSON(generateKeySet('client-records').edge);
const alice = { userId: 'alice', workspaceId: 'ws-1', roles: ['member'] };
const records = (audit: ReturnType<typeof memoryAuditSink>) =>
  audit.events.map((e) => [e.action, e.decision, e.reason]);
const operation = () =>
  new WithStartWorkflowOperation('wf', {
    workflowId: 'w1',
    taskQueue: 'tq',
    workflowIdConflictPolicy: 'USE_EXISTING',
  });
/** The call was sent: the connection's failure, as the SDK passes it on (wrapped, or as it is). */
const reachedServer = (err: { message?: string; cause?: { message?: string } }) =>
  [err.message, err.cause?.message].includes('reached the server');

describe('a call that issues two tokens (signalWithStart, update-with-start)', () => {
  // A call name no actor token can bind (over 1000 characters), after a start token that can be issued.
  const tooLong = 'n'.repeat(1000);

  it('records no allowed start when the actor token is refused, and sends nothing', async () => {
    // Found by review: the start token's allow record was emitted before the actor token was refused.
    const { client, sent, audit } = recordingClients(edge);
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

  it('records both tokens as allowed, each once, when both are issued and the call is sent', async () => {
    const { client, sent, audit } = recordingClients(edge);
    await expect(
      runAsUser(alice, () =>
        client.signalWithStart('wf', { workflowId: 'w1', taskQueue: 'tq', signal: 'note', signalArgs: [] }),
      ),
    ).rejects.toSatisfy(reachedServer);
    await expect(
      runAsUser(alice, () =>
        client.executeUpdateWithStart('note', { args: [], startWorkflowOperation: operation() }),
      ),
    ).rejects.toSatisfy(reachedServer);
    expect(sent).toHaveLength(2);
    expect(records(audit)).toEqual([
      ['client.signalWithStart', 'allow', 'ok'],
      ['client.signalWithStart', 'allow', 'ok'],
      ['client.startUpdateWithStart', 'allow', 'ok'],
      ['client.startUpdateWithStart', 'allow', 'ok'],
    ]);
    const tokens = audit.events.map((e) => e.tokenId);
    expect(new Set(tokens).size).toBe(4);
  });
});

describe('a call whose search attributes the mirror cannot take (a key given twice)', () => {
  // Found by review: the start's allow record was emitted before the mirror threw, for a call never sent.
  const tenant = defineSearchAttributeKey('Tenant', SearchAttributeType.KEYWORD);
  const twice = [
    { key: tenant, value: 'a' },
    { key: tenant, value: 'b' },
  ];
  const mirror = { memo: 'off', searchAttributes: 'plain' } as const;

  it('sends nothing and records nothing as allowed: start, signalWithStart, update-with-start, schedule create', async () => {
    const { client, schedules, sent, audit } = recordingClients(edge, { mirror });
    const start = { workflowId: 'w1', taskQueue: 'tq', typedSearchAttributes: twice };
    const calls: Array<() => Promise<unknown>> = [
      () => client.start('wf', start),
      () => client.signalWithStart('wf', { ...start, signal: 'note', signalArgs: [] }),
      () =>
        client.executeUpdateWithStart('note', {
          args: [],
          startWorkflowOperation: new WithStartWorkflowOperation('wf', {
            ...start,
            workflowIdConflictPolicy: 'USE_EXISTING',
          }),
        }),
      () =>
        schedules.create({
          scheduleId: 's1',
          spec: { intervals: [{ every: '1h' }] },
          action: {
            type: 'startWorkflow',
            workflowType: 'wf',
            taskQueue: 'tq',
            typedSearchAttributes: twice,
          },
        }),
    ];
    for (const call of calls) await expect(runAsUser(alice, call)).rejects.toThrow(/Duplicate/i);
    expect(sent).toEqual([]);
    expect(records(audit)).toEqual([]);
  });

  it('sends and records each call whose search attributes it can take (the same calls, the key once)', async () => {
    const { client, schedules, sent, audit } = recordingClients(edge, { mirror });
    const once = twice.slice(0, 1);
    const start = { workflowId: 'w1', taskQueue: 'tq', typedSearchAttributes: once };
    await expect(runAsUser(alice, () => client.start('wf', start))).rejects.toSatisfy(reachedServer);
    await expect(
      runAsUser(alice, () =>
        schedules.create({
          scheduleId: 's1',
          spec: { intervals: [{ every: '1h' }] },
          action: { type: 'startWorkflow', workflowType: 'wf', taskQueue: 'tq', typedSearchAttributes: once },
        }),
      ),
    ).rejects.toSatisfy(reachedServer);
    expect(sent).toHaveLength(2);
    expect(records(audit)).toEqual([
      ['client.start', 'allow', 'ok'],
      ['schedule.create', 'allow', 'ok'],
    ]);
  });
});
