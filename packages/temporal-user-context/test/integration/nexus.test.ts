// Nexus: the caller workflow's context reaches the operation handler; without it the call is refused.
import { randomUUID } from 'node:crypto';
import { Client, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished, vi } from 'vitest';
import {
  ErrorCodes,
  UserContextPlugin,
  runAsUser,
  type KeyRing,
  type NexusCallerPolicy,
} from 'temporal-user-context';
import {
  SCHEDULED_BY_ID,
  alice,
  copiedStartHeaderClient,
  failureTypeOf,
  forgeryOf,
  nthScheduledRun,
  startHarness,
  type Harness,
} from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath, pluginlessWorker } from '../fixtures/harness.js';
import { cancelsOf, holdGate, whoHandler } from '../fixtures/nexus-handler.js';

const workflowsPath = fixtureWorkflowsPath;
/** The server's HTTP API, where an attacker can send Nexus requests itself ('' when unknown). */
const httpAddress = inject('temporalHttpAddress');
// The direct-request attacks need the server's HTTP API: known with the harness's own dev server, or
// given as TEMPORAL_HTTP_ADDRESS beside TEMPORAL_ADDRESS. CI must never skip them silently.
if (!httpAddress && process.env.CI) {
  throw new Error('CI: the Nexus attack tests need the server HTTP API: set TEMPORAL_HTTP_ADDRESS');
}
let h: Harness;
let endpoint: string;
let endpointId: string | undefined;
let endpointVersion: unknown;

beforeAll(async () => {
  h = await startHarness({
    workflowsPath,
    activities,
    worker: { nexusServices: [whoHandler] },
    // Nexus results come back namespace-bound: the SDK gives Nexus handlers no workflow context.
    plugin: { codec: { acceptNamespaceBound: true } },
  });
  endpoint = `who-${randomUUID().slice(0, 8)}`;
  const created = await h.connection.operatorService.createNexusEndpoint({
    spec: { name: endpoint, target: { worker: { namespace: h.namespace, taskQueue: h.taskQueue } } },
  });
  endpointId = created.endpoint?.id ?? undefined;
  endpointVersion = created.endpoint?.version;
});
afterAll(async () => {
  if (endpointId)
    await h.connection.operatorService
      .deleteNexusEndpoint({ id: endpointId, version: endpointVersion as never })
      .catch(() => undefined);
  await h?.stop();
});

/** A handler worker with `plugin` on a task queue of its own, and a Nexus endpoint that targets it. */
async function handlerEndpoint(
  plugin: UserContextPlugin,
): Promise<{ worker: Worker; name: string; id: string; remove: () => Promise<void> }> {
  const taskQueue = `nx-handler-${randomUUID()}`;
  const worker = await Worker.create({
    connection: h.nativeConnection,
    namespace: h.namespace,
    taskQueue,
    workflowsPath,
    activities,
    nexusServices: [whoHandler],
    plugins: [plugin],
  });
  const name = `who-${randomUUID().slice(0, 8)}`;
  const created = await h.connection.operatorService.createNexusEndpoint({
    spec: { name, target: { worker: { namespace: h.namespace, taskQueue } } },
  });
  const remove = () =>
    h.connection.operatorService
      .deleteNexusEndpoint({ id: created.endpoint!.id!, version: created.endpoint!.version as never })
      .then(
        () => undefined,
        () => undefined,
      );
  return { worker, name, id: created.endpoint!.id!, remove };
}

/**
 * A handler with no clock skew and an edge client that issues 2 s start windows: a test can then let a
 * window pass.
 */
async function strictWindows() {
  const handler = await handlerEndpoint(
    new UserContextPlugin({
      keys: h.workerRing,
      audit: h.audit,
      codec: { acceptNamespaceBound: true },
      verifier: { clockSkewSeconds: 0 },
    }),
  );
  const edge = new Client({
    connection: h.connection,
    namespace: h.namespace,
    plugins: [new UserContextPlugin({ keys: h.edgeRing, audit: h.audit, startWindowSeconds: 2 })],
  });
  return { ...handler, edge };
}

/** A started `parked` operation, as its caller's history and description show it. */
interface Parked {
  /** The operation token the server holds: the handler's own, sealed by the guard. */
  token: string;
  /** The handler's own token (`parked-<request id>`), which its cancel receives. */
  own: string;
  /** The scheduling event's Nexus header: what any reader of the caller's history has. */
  header: string;
}

/** Starts alice's `parkedNexus` caller on the shared endpoint, once its operation has started. */
async function parkedCaller(): Promise<{ caller: WorkflowHandleWithFirstExecutionRunId } & Parked> {
  const caller = await runAsUser(alice, () =>
    h.client.workflow.start('parkedNexus', {
      taskQueue: h.taskQueue,
      workflowId: `nx-parked-${randomUUID()}`,
      args: [endpoint],
    }),
  );
  return { caller, ...(await parkedOperation(caller)) };
}

/** Waits until the `parkedNexus` caller's operation has started, and reads it. */
async function parkedOperation(caller: WorkflowHandle): Promise<Parked> {
  const token = await vi.waitFor(
    async () => {
      const token = (await caller.describe()).raw.pendingNexusOperations?.[0]?.operationToken;
      expect(token).toBeTruthy();
      return token!;
    },
    { timeout: 10_000 },
  );
  const { events } = await caller.fetchHistory();
  const scheduled = events?.find(
    (e) => e.nexusOperationScheduledEventAttributes,
  )?.nexusOperationScheduledEventAttributes;
  const header = scheduled?.nexusHeader?.['user-context'];
  expect(header).toBeTruthy();
  return { token, own: `parked-${scheduled!.requestId}`, header: header! };
}

/** A cancel request sent straight to the server's HTTP API, as anyone who may call the endpoint can. */
function directCancel(
  endpointId: string,
  token: string,
  headers: Record<string, string>,
  operation = 'parked',
) {
  return fetch(`${httpAddress}/nexus/endpoints/${endpointId}/services/who/${operation}/cancel`, {
    method: 'POST',
    headers: { 'nexus-operation-token': token, ...headers },
  });
}

describe('Nexus', () => {
  it('the handler runs as the caller workflow originator', async () => {
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId: `nx-${randomUUID()}`,
        args: [endpoint],
      }),
    );
    expect(result).toEqual(alice);
  });

  it("a refusal raised by the handler's own code fails the operation with its code, once, not retried", async () => {
    // The handler starts a workflow through its worker's client; that worker holds no issuing key.
    const workflowId = `nx-${randomUUID()}`;
    const clientRefusals = () =>
      h.audit.events.filter((e) => e.action === 'client.start' && e.reason === ErrorCodes.MISCONFIGURED)
        .length;
    const before = clientRefusals();
    const code = await failureTypeOf(
      runAsUser(alice, () =>
        h.client.workflow.execute('viaNexus', {
          taskQueue: h.taskQueue,
          workflowId,
          args: [endpoint, 'spawn'],
        }),
      ),
    );
    expect(code).toBe(ErrorCodes.MISCONFIGURED);
    // One attempt: the guard admitted the request once, and the handler's client refused once.
    expect(
      h.audit.events
        .filter((e) => e.action === 'nexus.start' && e.workflowId === workflowId)
        .map((e) => e.decision),
    ).toEqual(['allow']);
    expect(clientRefusals() - before).toBe(1);
  });

  it('a caller workflow without a context cannot reach the handler', async () => {
    // The raw start is refused by the workflow itself before any Nexus call is scheduled.
    const code = await failureTypeOf(
      h.rawClient.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId: `nx-${randomUUID()}`,
        args: [endpoint],
      }),
    );
    expect(code).toBe(ErrorCodes.MISSING);
  });

  it('a Nexus call that arrives without the header (caller worker without the plugin) is refused by the handler', async () => {
    const taskQueue = `plain-${randomUUID()}`;
    const plain = await pluginlessWorker(h, taskQueue);
    const workflowId = `nx-plain-${randomUUID()}`;
    const code = await plain.runUntil(
      failureTypeOf(h.rawClient.workflow.execute('viaNexus', { taskQueue, workflowId, args: [endpoint] })),
    );
    expect(code).toBe(ErrorCodes.MISSING);
    // Refused before the server was asked: the record's ids are the links' claim, and it says so.
    expect(
      h.audit.events
        .filter((e) => e.action === 'nexus.start' && e.workflowId === workflowId)
        .map((e) => [e.decision, e.detail]),
    ).toEqual([['deny', 'unconfirmed caller: Nexus start without a user context']]);
  });

  it('a caller that writes its own nexus-link, naming another workflow of the same namespace, is refused', async () => {
    // The victim: any run of alice's. Its start header is in its history, its run id and start time in
    // its description: all an attacker who can read history needs.
    const victim = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `nx-victim-${randomUUID()}`,
      }),
    );
    const forged = await forgeryOf(h, victim, 5);
    const taskQueue = `forger-${randomUUID()}`;
    const forger = await pluginlessWorker(h, taskQueue, true);
    const workflowId = `nx-forger-${randomUUID()}`;
    const code = await forger.runUntil(
      failureTypeOf(
        h.rawClient.workflow.execute('viaNexus', {
          taskQueue,
          workflowId,
          args: [endpoint],
          memo: { forge: forged },
        }),
      ),
    );
    expect(code).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // The handler saw the forged caller, and refused it after asking the server. The record names the
    // victim only as the links' claim: the victim did not make this request.
    const seen = h.audit.events.filter(
      (e) => e.action === 'nexus.start' && e.workflowId === victim.workflowId,
    );
    expect(seen.map((e) => [e.decision, e.reason, e.detail])).toEqual([
      [
        'deny',
        ErrorCodes.LINEAGE_MISMATCH,
        'unconfirmed caller: the workflow the Nexus request names has no such start attempt in flight',
      ],
    ]);
    await victim.terminate();
  });

  it('a forged link naming a run whose own start attempt is in flight must name that event and operation', async () => {
    holdGate.close();
    const victim = await runAsUser(alice, () =>
      h.client.workflow.start('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId: `nx-held-${randomUUID()}`,
        args: [endpoint, 'hold'],
      }),
    );
    try {
      // The victim's start attempt is in flight, held by the handler.
      const eventId = await vi.waitFor(
        async () => {
          const op = (await victim.describe()).raw.pendingNexusOperations?.[0];
          expect(op?.operation).toBe('hold');
          return Number(op!.scheduledEventId);
        },
        { timeout: 10_000 },
      );
      const taskQueue = `forger-${randomUUID()}`;
      const forger = await pluginlessWorker(h, taskQueue, true);
      const attempt = async (event: number, operation: 'whoami' | 'hold') =>
        failureTypeOf(
          h.rawClient.workflow.execute('viaNexus', {
            taskQueue,
            workflowId: `nx-forger-${randomUUID()}`,
            args: [endpoint, operation],
            memo: { forge: await forgeryOf(h, victim, event) },
          }),
        );
      await forger.runUntil(async () => {
        // Another event of the run, and the right event for another operation: both refused.
        expect(await attempt(eventId + 1, 'whoami')).toBe(ErrorCodes.LINEAGE_MISMATCH);
        expect(await attempt(eventId, 'whoami')).toBe(ErrorCodes.LINEAGE_MISMATCH);
      });
      const refusals = h.audit.events.filter(
        (e) => e.action === 'nexus.start' && e.workflowId === victim.workflowId && e.decision === 'deny',
      );
      expect(refusals.map((e) => e.detail)).toEqual([
        'unconfirmed caller: the workflow the Nexus request names has no such start attempt in flight',
        'unconfirmed caller: the workflow the Nexus request names has no such start attempt in flight',
      ]);
    } finally {
      holdGate.open();
    }
    expect(await victim.result()).toEqual(alice);
  });

  it('a cancel from the workflow that holds the operation reaches the handler as its originator', async () => {
    const { caller, token, own } = await parkedCaller();
    // The server holds the handler's token sealed with who started the operation.
    expect(token.startsWith('tuc1.')).toBe(true);
    expect(token).not.toContain(own);
    await runAsUser(alice, () => caller.signal('cancelParked'));
    expect(await caller.result()).toBe(token);
    expect(cancelsOf.get(own)).toEqual([alice]);
    const seen = h.audit.events.filter(
      (e) => e.action === 'nexus.cancel' && e.workflowId === caller.workflowId,
    );
    expect(seen.map((e) => [e.decision, e.userId, e.runId])).toEqual([
      ['allow', alice.userId, caller.firstExecutionRunId],
    ]);
  });

  it('a caller reset after its operation started cancels it from the run it was reset to', async () => {
    const { caller, token, own } = await parkedCaller();
    // Reset to the caller's last workflow task: the server carries the pending operation over.
    const taskDone = await vi.waitFor(
      async () => {
        const events = (await caller.fetchHistory()).events ?? [];
        const started = events.findIndex((e) => e.nexusOperationStartedEventAttributes);
        const done = events.slice(started).find((e) => e.workflowTaskCompletedEventAttributes);
        expect(started >= 0 && done).toBeTruthy();
        return done!.eventId!;
      },
      { timeout: 10_000 },
    );
    const { runId } = await h.client.workflowService.resetWorkflowExecution({
      namespace: h.namespace,
      workflowExecution: { workflowId: caller.workflowId, runId: caller.firstExecutionRunId },
      workflowTaskFinishEventId: taskDone,
      requestId: randomUUID(),
      reason: 'test: reset a Nexus caller',
    });
    const resetRun = h.client.workflow.getHandle(caller.workflowId, runId!);
    expect(await parkedOperation(resetRun)).toMatchObject({ token, own });
    await runAsUser(alice, () => resetRun.signal('cancelParked'));
    expect(await resetRun.result()).toBe(token);
    expect(cancelsOf.get(own)).toEqual([alice]);
    const seen = h.audit.events.filter(
      (e) => e.action === 'nexus.cancel' && e.workflowId === caller.workflowId,
    );
    expect(seen.map((e) => [e.decision, e.runId])).toEqual([['allow', runId]]);
  });

  it.skipIf(!httpAddress)(
    'a cancel sent straight to the endpoint, with a header and operation token copied from history, is refused',
    async () => {
      const { caller, token, own, header } = await parkedCaller();
      const other = await parkedCaller();
      const before = h.audit.events.length;
      const statuses = [
        // The header and token of the operation, while its caller has asked for no cancel.
        (await directCancel(endpointId!, token, { 'user-context': header })).status,
        // The same header with another operation's token, and with the handler's bare token.
        (await directCancel(endpointId!, other.token, { 'user-context': header })).status,
        (await directCancel(endpointId!, own, { 'user-context': header })).status,
        // No header at all.
        (await directCancel(endpointId!, token, {})).status,
      ];
      expect(statuses).toEqual([400, 400, 400, 400]);
      expect([cancelsOf.get(own), cancelsOf.get(other.own)]).toEqual([undefined, undefined]);
      const refusals = h.audit.events.slice(before).filter((e) => e.action === 'nexus.cancel');
      expect(refusals.map((e) => [e.decision, e.reason, e.workflowId, e.detail])).toEqual([
        // The ids are the sealed caller's; that the caller sent the cancel is what was not confirmed.
        [
          'deny',
          ErrorCodes.LINEAGE_MISMATCH,
          caller.workflowId,
          'unconfirmed sender: the run that started the operation has no cancel of it in flight',
        ],
        [
          'deny',
          ErrorCodes.LINEAGE_MISMATCH,
          other.caller.workflowId,
          'unconfirmed sender: lineage names another workflow',
        ],
        ['deny', ErrorCodes.LINEAGE_MISMATCH, undefined, 'the operation token is not bound to a caller'],
        ['deny', ErrorCodes.MISSING, undefined, 'Nexus cancel without a user context'],
      ]);
      // The caller's own cancel still reaches the handler; the copied one, sent again after it, does not.
      await runAsUser(alice, () => caller.signal('cancelParked'));
      expect(await caller.result()).toBe(token);
      expect((await directCancel(endpointId!, token, { 'user-context': header })).status).toBe(400);
      expect(cancelsOf.get(own)).toEqual([alice]);
      await other.caller.terminate();
    },
  );

  it("callers below the root are confirmed against the root's chain: a child, and a run after continue-as-new past the window", async () => {
    // Strict: no clock skew, 2 s windows. The continued run calls after its chain's window closed, so it
    // passes only if the chain's first run is what the token is checked against.
    const { worker, name, remove, edge } = await strictWindows();
    const start = (workflow: string, args: unknown[]) =>
      runAsUser(alice, () =>
        edge.workflow.execute(workflow, {
          taskQueue: h.taskQueue,
          workflowId: `nx-deep-${randomUUID()}`,
          args,
        }),
      );
    onTestFinished(remove);
    await worker.runUntil(async () => {
      expect(await start('viaNexusFromChild', [name])).toEqual(alice);
      expect(await start('viaNexusAfterContinueAsNew', [name, 3000])).toEqual(alice);
    });
  });

  it("a workflow retry after the start window calls as the chain's user, confirmed by the server", async () => {
    const { worker: strict, name, remove, edge } = await strictWindows();
    onTestFinished(remove);
    const workflowId = `nx-late-retry-${randomUUID()}`;
    await strict.runUntil(async () => {
      // The retry's start event is written as its first attempt fails, 3 s in: past the 2 s window.
      const answer = await runAsUser(alice, () =>
        edge.workflow.execute('viaNexusAfterLateRetry', {
          taskQueue: h.taskQueue,
          workflowId,
          args: [name, 3],
          retry: { initialInterval: '100ms', maximumAttempts: 2 },
        }),
      );
      expect(answer).toEqual(alice);
    });
  });

  it("a new run of a closed caller's workflow id, replaying its header after the start window, is refused", async () => {
    const { worker: strict, name, remove, edge } = await strictWindows();
    onTestFinished(remove);
    const workflowId = `nx-reused-${randomUUID()}`;
    await strict.runUntil(async () => {
      // The genuine run: its call passes, confirmed by the server.
      const victim = await runAsUser(alice, () =>
        edge.workflow.start('viaNexus', { taskQueue: h.taskQueue, workflowId, args: [name] }),
      );
      expect(await victim.result()).toEqual(alice);
      // Same id, a new chain; the header states the first chain's start, the server's link is genuine.
      const forge = await forgeryOf(h, victim);
      await new Promise((resolve) => setTimeout(resolve, 3500)); // past the 2 s window
      const forgerQueue = `forger-${randomUUID()}`;
      const forger = await pluginlessWorker(h, forgerQueue, true);
      const code = await forger.runUntil(
        failureTypeOf(
          h.rawClient.workflow.execute('viaNexus', {
            taskQueue: forgerQueue,
            workflowId,
            args: [name],
            memo: { forge },
          }),
        ),
      );
      expect(code).toBe(ErrorCodes.LINEAGE_MISMATCH);
      expect(
        h.audit.events
          .filter((e) => e.action === 'nexus.start' && e.workflowId === workflowId)
          .map((e) => [e.decision, e.reason, e.decision === 'deny' ? e.detail : 'ok']),
      ).toEqual([
        ['allow', 'ok', 'ok'],
        // The server confirmed this caller (its link is genuine): no qualifier.
        ['deny', ErrorCodes.LINEAGE_MISMATCH, 'lineage started after the token start window'],
      ]);
    });
  });

  it('a scheduled run reaches the handler as the schedule creator; a run only claiming the schedule does not', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const schedule = await runAsUser(alice, () =>
      h.client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '1h' }] },
        action: {
          type: 'startWorkflow',
          workflowType: 'viaNexus',
          taskQueue: h.taskQueue,
          workflowId: `${scheduleId}-wf`,
          args: [endpoint],
        },
      }),
    );
    await schedule.trigger();
    const genuine = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(genuine).result()).toEqual(alice);
    // The handler confirms the caller with the server, as activities do: the copied header and the
    // client-set search attribute are not enough.
    const attacker = await copiedStartHeaderClient(h, genuine);
    const workflowId = `${scheduleId}-wf-2031-01-01T00:00:00Z`;
    const code = await failureTypeOf(
      attacker.workflow.execute('viaNexus', {
        taskQueue: h.taskQueue,
        workflowId,
        args: [endpoint],
        typedSearchAttributes: [{ key: SCHEDULED_BY_ID, value: scheduleId }],
      }),
    );
    expect(code).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(
      h.audit.events.some(
        (e) =>
          e.action === 'nexus.start' &&
          e.decision === 'deny' &&
          e.workflowId === workflowId &&
          e.reason === ErrorCodes.LINEAGE_MISMATCH,
      ),
    ).toBe(true);
    await schedule.delete();
  });
});

describe('Nexus callers of another namespace', () => {
  it("are refused by default (the handler's client cannot confirm them), and trusted when nexusCallers.trustLinksFrom names them", async () => {
    const other = `xns-${randomUUID().slice(0, 8)}`;
    await h.connection.workflowService.registerNamespace({
      namespace: other,
      workflowExecutionRetentionPeriod: msToTs('1 day'),
    });
    // No payload codec here: it binds a handler's results to the handler's namespace.
    const pluginWith = (
      keys: KeyRing,
      nexusCallers?: NexusCallerPolicy,
      revocation: boolean | (() => boolean) = false,
    ) =>
      new UserContextPlugin({
        keys,
        audit: h.audit,
        codec: false,
        ...(nexusCallers ? { nexusCallers } : {}),
        ...(revocation === true ? { isRevoked: () => true } : revocation ? { isRevoked: revocation } : {}),
      });
    const workers: Worker[] = [];
    const removals: (() => Promise<void>)[] = [];
    // Also when a handler or caller worker fails to start.
    onTestFinished(async () => {
      for (const remove of removals) await remove();
    });
    const handlerFor = async (
      nexusCallers?: NexusCallerPolicy,
      revocation: boolean | (() => boolean) = false,
    ) => {
      const { worker, name, id, remove } = await handlerEndpoint(
        pluginWith(h.workerRing, nexusCallers, revocation),
      );
      workers.push(worker);
      removals.push(remove);
      return { name, id };
    };
    const confirming = await handlerFor();
    const trusting = await handlerFor({ trustLinksFrom: [other] });
    const trustingOthers = await handlerFor({ trustLinksFrom: ['some-other-namespace'] });
    const trustingRevoking = await handlerFor({ trustLinksFrom: [other] }, true);
    let hookFails = false;
    const trustingFailing = await handlerFor({ trustLinksFrom: [other] }, () => {
      if (hookFails) throw new Error('revocation-db.internal:5432 unreachable');
      return false;
    });
    /** A caller worker and edge client in `namespace`, without the codec too. */
    const callerIn = async (namespace: string, taskQueue: string) => {
      workers.push(
        await Worker.create({
          connection: h.nativeConnection,
          namespace,
          taskQueue,
          workflowsPath,
          activities,
          plugins: [pluginWith(h.workerRing)],
        }),
      );
      return new Client({ connection: h.connection, namespace, plugins: [pluginWith(h.edgeRing)] });
    };
    const callerQueue = `nx-caller-${randomUUID()}`;
    const caller = await callerIn(other, callerQueue);
    // And a caller of the handlers' own namespace.
    const localQueue = `nx-local-${randomUUID()}`;
    const localCaller = await callerIn(h.namespace, localQueue);
    const call = (endpoint: { name: string }, workflowId: string) =>
      runAsUser(alice, () =>
        caller.workflow.execute('viaNexus', { taskQueue: callerQueue, workflowId, args: [endpoint.name] }),
      );
    const park = (client: Client, taskQueue: string, endpoint: { name: string }) =>
      runAsUser(alice, () =>
        client.workflow.start('parkedNexus', {
          taskQueue,
          workflowId: `nx-x-${randomUUID()}`,
          args: [endpoint.name],
        }),
      );
    const running = workers.map((w) => w.run());
    let stopped: PromiseSettledResult<void>[] | undefined;
    try {
      const refusedId = `nx-x-${randomUUID()}`;
      expect(await failureTypeOf(call(confirming, refusedId))).toBe(ErrorCodes.LINEAGE_MISMATCH);
      expect(
        h.audit.events.filter(
          (e) => e.action === 'nexus.start' && e.workflowId === refusedId && e.namespace === other,
        ),
      ).toMatchObject([
        {
          decision: 'deny',
          reason: ErrorCodes.LINEAGE_MISMATCH,
          detail: expect.stringMatching(/^unconfirmed caller: .*another namespace cannot be confirmed/),
        },
      ]);
      expect(await call(trusting, `nx-x-${randomUUID()}`)).toEqual(alice);
      // Refused after its namespace was trusted: the ids are still the links' claim, and the record says so.
      const revokedId = `nx-x-${randomUUID()}`;
      expect(await failureTypeOf(call(trustingRevoking, revokedId))).toBe(ErrorCodes.REVOKED);
      expect(
        h.audit.events
          .filter((e) => e.action === 'nexus.start' && e.workflowId === revokedId)
          .map((e) => [e.decision, e.reason, e.detail]),
      ).toEqual([['deny', ErrorCodes.REVOKED, 'unconfirmed caller: context revoked']]);
      // A cancel carries no links: from a trusted namespace it is taken on its header, and audited so.
      const parked = await park(caller, callerQueue, trusting);
      const { token, own, header } = await parkedOperation(parked);
      const local = await park(localCaller, localQueue, trusting);
      const localOp = await parkedOperation(local);
      if (httpAddress) {
        // Its header cannot cancel an operation that a caller of the handler's own namespace started:
        // the sealed token names that caller, whose namespace the header's token was not issued for.
        const cross = await directCancel(trusting.id, localOp.token, { 'user-context': header });
        expect(cross.status).toBe(400);
        expect(
          h.audit.events.filter((e) => e.action === 'nexus.cancel' && e.workflowId === local.workflowId),
        ).toMatchObject([{ decision: 'deny', reason: ErrorCodes.AUDIENCE_MISMATCH }]);
        // Nor can its own sealed token cancel another operation: the seal names the one it was made for.
        const elsewhere = await directCancel(trusting.id, token, { 'user-context': header }, 'hold');
        expect(elsewhere.status).toBe(400);
        expect(
          h.audit.events.filter(
            (e) => e.action === 'nexus.cancel' && e.workflowId === parked.workflowId && e.decision === 'deny',
          ),
        ).toMatchObject([
          {
            reason: ErrorCodes.LINEAGE_MISMATCH,
            detail: 'unconfirmed sender: the operation token is for another operation',
          },
        ]);
        // Nor can the header of a later chain of the same caller workflow id (another context token)
        // cancel an operation the earlier chain started: the sealed token names that context token.
        const first = await park(caller, callerQueue, trusting);
        const firstOp = await parkedOperation(first);
        await first.terminate();
        const again = await runAsUser(alice, () =>
          caller.workflow.start('parkedNexus', {
            taskQueue: callerQueue,
            workflowId: first.workflowId,
            args: [trusting.name],
          }),
        );
        const againOp = await parkedOperation(again);
        const replayed = await directCancel(trusting.id, firstOp.token, { 'user-context': againOp.header });
        expect(replayed.status).toBe(400);
        expect(cancelsOf.get(firstOp.own)).toBeUndefined();
        expect(
          h.audit.events.filter((e) => e.action === 'nexus.cancel' && e.workflowId === first.workflowId),
        ).toMatchObject([{ decision: 'deny', detail: expect.stringContaining('another context token') }]);
        await again.terminate();
        // A failure that is no verdict (here the revocation hook's) is recorded by its kind, not its
        // message (hosts, ports); the caller, another namespace's, learns only that it may try again.
        const failing = await park(caller, callerQueue, trustingFailing);
        const failingOp = await parkedOperation(failing);
        hookFails = true;
        const failed = await directCancel(trustingFailing.id, failingOp.token, {
          'user-context': failingOp.header,
        });
        hookFails = false;
        expect(failed.status).toBeGreaterThanOrEqual(500);
        expect(await failed.text()).not.toContain('revocation-db');
        expect(
          h.audit.events.filter((e) => e.action === 'nexus.cancel' && e.workflowId === failing.workflowId),
        ).toMatchObject([
          { decision: 'deny', reason: 'ERROR', detail: expect.stringMatching(/error: Error$/) },
        ]);
        expect(JSON.stringify(h.audit.events)).not.toContain('revocation-db');
        await failing.terminate();
      }
      await runAsUser(alice, () => parked.signal('cancelParked'));
      expect(await parked.result()).toBe(token);
      expect(cancelsOf.get(own)).toEqual([alice]);
      expect(cancelsOf.get(localOp.own)).toBeUndefined();
      expect(
        h.audit.events.filter(
          (e) => e.action === 'nexus.cancel' && e.workflowId === parked.workflowId && e.decision === 'allow',
        ),
      ).toMatchObject([{ namespace: other, detail: expect.stringContaining('trusted on what it wrote') }]);
      await local.terminate();
      expect(await failureTypeOf(call(trustingOthers, `nx-x-${randomUUID()}`))).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
    } finally {
      // shutdown() throws for a worker that is no longer running: the others must still stop.
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      stopped = await Promise.allSettled(running);
    }
    // A worker that failed fails the test (when nothing above did first).
    for (const outcome of stopped ?? []) if (outcome.status === 'rejected') throw outcome.reason;
  });
});
