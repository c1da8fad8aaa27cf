// What the edge puts on record for a call that issues a token, against a connection that records what
// would reach the server: an allow record only for a call that is then sent, and none for one refused
// or failing after a token was issued (a second token refused, search attributes the mirror cannot take).
import { WithStartWorkflowOperation } from '@temporalio/client';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { Auditor, ErrorCodes, KeyRing, generateKeySet, memoryAuditSink, runAsUser } from '../../src/index.js';
import { runInNexusScope } from '../../src/worker/scope.js';
import { edgeSource, recordingClients } from './edge-source.js';

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

describe("a start's id policies", () => {
  // Found by review: a start that returns another's run (USE_EXISTING) or ends it (TERMINATE_EXISTING)
  // was on record like any other start.
  it('are in the allow record of the start that gives them, and absent from one that gives none', async () => {
    const { client, audit } = recordingClients(edge);
    const start = { workflowId: 'w1', taskQueue: 'tq' };
    await expect(
      runAsUser(alice, () =>
        client.start('wf', {
          ...start,
          workflowIdConflictPolicy: 'TERMINATE_EXISTING',
          workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
        }),
      ),
    ).rejects.toSatisfy(reachedServer);
    await expect(
      runAsUser(alice, () =>
        client.signalWithStart('wf', {
          ...start,
          signal: 'note',
          signalArgs: [],
          workflowIdReusePolicy: 'REJECT_DUPLICATE',
        }),
      ),
    ).rejects.toSatisfy(reachedServer);
    await expect(
      runAsUser(alice, () =>
        client.executeUpdateWithStart('note', { args: [], startWorkflowOperation: operation() }),
      ),
    ).rejects.toSatisfy(reachedServer);
    await expect(runAsUser(alice, () => client.start('wf', start))).rejects.toSatisfy(reachedServer);
    expect(audit.events.map((e) => [e.action, e.detail])).toEqual([
      ['client.start', 'id conflict policy TERMINATE_EXISTING; id reuse policy ALLOW_DUPLICATE_FAILED_ONLY'],
      ['client.signalWithStart', 'id reuse policy REJECT_DUPLICATE'],
      // The actor's token: its record is the call's, not the start's.
      ['client.signalWithStart', undefined],
      ['client.startUpdateWithStart', 'id conflict policy USE_EXISTING'],
      ['client.startUpdateWithStart', undefined],
      ['client.start', undefined],
    ]);
  });
});

describe("a schedule's end", () => {
  // Found by review: a schedule's token lasts 366 days, and the schedule fired on after that, every run
  // refused by workers (USER_CONTEXT_LINEAGE_MISMATCH) while nothing said why.
  type Sent = { schedule?: { spec?: { endTime?: { seconds?: { toNumber(): number } | number } } } };
  const endOf = (request: unknown) => {
    const seconds = (request as Sent).schedule?.spec?.endTime?.seconds;
    return typeof seconds === 'number' ? seconds : seconds?.toNumber();
  };
  const create = (spec: { startAt?: Date; endAt?: Date; jitter?: string }) => ({
    scheduleId: 's1',
    spec: { intervals: [{ every: '1h' }], ...spec },
    action: { type: 'startWorkflow' as const, workflowType: 'wf', taskQueue: 'tq' },
  });
  const windowEnd = () => Date.now() / 1000 + 366 * 86_400;

  it('is set inside its token window, less jitter, when the schedule gives none', async () => {
    const { schedules, sent } = recordingClients(edge);
    const before = windowEnd();
    await expect(runAsUser(alice, () => schedules.create(create({ jitter: '1h' })))).rejects.toSatisfy(
      reachedServer,
    );
    const after = windowEnd();
    expect(endOf(sent[0])).toBeGreaterThanOrEqual(Math.floor(before) - 3600);
    expect(endOf(sent[0])).toBeLessThanOrEqual(Math.ceil(after) - 3600);
  });

  it('is kept when it comes earlier, and a later one is refused before anything is sent', async () => {
    const { schedules, sent, audit } = recordingClients(edge);
    const soon = new Date(Date.now() + 30 * 86_400_000);
    await expect(runAsUser(alice, () => schedules.create(create({ endAt: soon })))).rejects.toSatisfy(
      reachedServer,
    );
    expect(endOf(sent[0])).toBe(Math.floor(soon.getTime() / 1000));
    const late = new Date(Date.now() + 366 * 86_400_000 - 60_000);
    // Inside the window, but not once the jitter is counted.
    await expect(
      runAsUser(alice, () => schedules.create(create({ endAt: late, jitter: '5m' }))),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    expect(sent).toHaveLength(1);
    expect(records(audit)).toEqual([
      ['schedule.create', 'allow', 'ok'],
      ['schedule.create', 'deny', ErrorCodes.MISCONFIGURED],
    ]);
  });

  it('refuses a negative jitter, one that leaves no time in the window, and a start after the end', async () => {
    // Found by review: a jitter past the window set an end in the past, a negative one an end past the
    // window, and a start after the window a schedule that begins after it ends: each created silently.
    const { schedules, sent } = recordingClients(edge);
    const late = new Date(Date.now() + 400 * 86_400_000);
    for (const spec of [{ jitter: '-1h' }, { jitter: '400d' }, { startAt: late }] as const)
      await expect(
        runAsUser(alice, () => schedules.create(create(spec))),
        JSON.stringify(spec),
      ).rejects.toMatchObject({
        code: ErrorCodes.MISCONFIGURED,
      });
    expect(sent).toEqual([]);
  });
});

/** A Nexus handler's scope for alice, auditing into `handlerAudit`. */
function aliceHandler() {
  const handlerAudit = memoryAuditSink();
  const handler = {
    context: alice,
    allowedSystem: [],
    audit: { namespace: 'default', workflowId: 'caller', activityType: 'nexus:svc/op' },
    auditor: new Auditor([handlerAudit]),
  };
  return { handler, handlerAudit };
}

describe('a client call from work a handler left running', () => {
  // Found by review: once the handler settled, its scope closed and the call passed for code outside
  // every handler, as whatever user an edge scope inside it named.
  it('is refused once the handler settled, whoever an edge scope names, and sends nothing', async () => {
    const { client, sent, audit } = recordingClients(edge);
    const { handler, handlerAudit } = aliceHandler();
    const mallory = { userId: 'mallory', workspaceId: 'ws-2', roles: ['member'] };
    const start = () => runAsUser(mallory, () => client.start('wf', { workflowId: 'w1', taskQueue: 'tq' }));
    let release!: () => void;
    const later = new Promise<void>((resolve) => (release = resolve));
    let leftover!: Promise<unknown>;
    let during!: Promise<unknown>;
    let control!: Promise<unknown[]>;
    await runInNexusScope(handler, async () => {
      during = start().catch((e: unknown) => e);
      leftover = later.then(start);
      // Nor may it cancel or terminate a run (found by review: they carry no context, and went on).
      const victim = client.getHandle('victim');
      control = later.then(() =>
        Promise.all([
          victim.cancel().catch((e: unknown) => e),
          victim.terminate('x').catch((e: unknown) => e),
        ]),
      );
    });
    release();
    await expect(leftover).rejects.toMatchObject({ code: ErrorCodes.MISSING });
    expect(await control).toMatchObject([{ code: ErrorCodes.MISSING }, { code: ErrorCodes.MISSING }]);
    expect(await during).toMatchObject({ code: ErrorCodes.EXPLICIT_MISMATCH });
    expect(sent).toEqual([]);
    expect(records(audit)).toEqual([['client.start', 'deny', ErrorCodes.EXPLICIT_MISMATCH]]);
    // The leftover call's refusal is the handler's, filed under its user, not under whom it named.
    expect(handlerAudit.events).toMatchObject([
      {
        action: 'client.start',
        decision: 'deny',
        reason: ErrorCodes.MISSING,
        userId: 'alice',
        workspaceId: 'ws-1',
        workflowId: 'caller',
        detail: expect.stringContaining('named mallory in ws-2'),
      },
      { action: 'client.cancel', decision: 'deny', reason: ErrorCodes.MISSING, userId: 'alice' },
      { action: 'client.terminate', decision: 'deny', reason: ErrorCodes.MISSING, userId: 'alice' },
    ]);
  });

  // Found by review: schedule changes (which carry no context) were recorded as asked by no one.
  it("may not change a schedule either: refused on the handler's record, and only once it settled", async () => {
    const { source, audit } = edgeSource(edge);
    const { handler, handlerAudit } = aliceHandler();
    const target = { kind: 'schedule', namespace: 'default', id: 'nightly', detail: 'trigger' } as const;
    let release!: () => void;
    const later = new Promise<void>((resolve) => (release = resolve));
    let during: unknown = 'not asked';
    let leftover!: Promise<unknown>;
    await runInNexusScope(handler, async () => {
      during = source.scheduleControlRefusal('schedule.patch', target);
      leftover = later.then(() =>
        runAsUser(alice, () => source.scheduleControlRefusal('schedule.patch', target)),
      );
    });
    release();
    expect(during).toBeUndefined();
    expect(await leftover).toMatchObject({ code: ErrorCodes.MISSING });
    expect(source.scheduleControlRefusal('schedule.delete', target)).toBeUndefined();
    expect(audit.events).toEqual([]);
    expect(handlerAudit.events).toMatchObject([
      {
        action: 'schedule.patch',
        decision: 'deny',
        reason: ErrorCodes.MISSING,
        userId: 'alice',
        workflowId: 'caller',
        detail: expect.stringMatching(/^schedule nightly; trigger: .*named alice in ws-1$/),
      },
    ]);
  });
});
