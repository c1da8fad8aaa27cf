// Schedules (create → every run carries a schedule-bound token) and the worker's own client.
import { createHash, randomUUID } from 'node:crypto';
import { Client, Connection, ScheduleOverlapPolicy } from '@temporalio/client';
import { describe, expect, inject, it, vi } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  ORIGINATOR_HEADER,
  UserContextPlugin,
  encodeHeader,
  generateKeySet,
  issueContextToken,
  memoryAuditSink,
  runAsUser,
} from 'temporal-user-context';
import {
  SCHEDULED_BY_ID,
  alice,
  carol,
  copiedStartHeaderClient,
  failureTypeOf,
  headerWritingClient,
  nthScheduledRun,
} from '../../../../test-support/harness.js';
import { asyncTokens, lingering } from '../fixtures/activities.js';
import { AppCodec, FieldCodec } from '../fixtures/app-codec.js';
import { aliceSchedule, hourlySchedule, useFixtureHarness } from '../fixtures/harness.js';

const h = useFixtureHarness();
// A worker that holds the issuing key too (an edge process that also runs activities).
const edgeKeys = generateKeySet('edge-keyed-worker').edge;
const edgeKeyed = useFixtureHarness({
  keys: edgeKeys,
  worker: {
    plugins: [new UserContextPlugin({ keys: KeyRing.fromJSON(edgeKeys), audit: memoryAuditSink() })],
  },
});

// An edge that does not bind schedules' arguments, in front of `h`'s workers (same keys).
const unboundArgsClient = () =>
  new Client({
    connection: h.connection,
    namespace: h.namespace,
    plugins: [
      new UserContextPlugin({ keys: h.edgeRing, audit: memoryAuditSink(), bindScheduleArguments: false }),
    ],
  });

describe('schedules', () => {
  it('a run started by the schedule acts as the schedule creator', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await aliceSchedule(h, scheduleId);
    await handle.trigger();
    const workflowId = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(workflowId).result()).toEqual(alice);
    await handle.delete();
  });

  it("a run decodes the previous run's result the scheduler hands it (overlap SKIP: the default)", async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      hourlySchedule(h, h.client, scheduleId, { workflowType: 'reportsLastResult' }),
    );
    // SKIP runs are the ones the scheduler keeps track of: each gets the last one's result (or failure).
    await handle.trigger(ScheduleOverlapPolicy.SKIP);
    const first = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(first).result()).toEqual({ user: 'alice', last: null });
    // Run ids carry their nominal time to the second: the next trigger must fall in a later second,
    // and after the scheduler saw the first run close.
    await vi.waitFor(
      async () => {
        expect((await handle.describe()).info.runningActions).toEqual([]);
      },
      { timeout: 20_000, interval: 200 },
    );
    await new Promise((r) => setTimeout(r, 1_000));
    await handle.trigger(ScheduleOverlapPolicy.SKIP);
    const second = await nthScheduledRun(h.rawClient, scheduleId, 2);
    expect(second).not.toBe(first);
    // The previous run's result was encrypted bound to that run's id: it must open in this one.
    expect(await h.rawClient.workflow.getHandle(second).result()).toEqual({
      user: 'alice',
      last: { user: 'alice', last: null },
    });
    expect(
      h.audit.events.filter(
        (e) => e.workflowId === second && e.action === 'codec.decode' && e.decision === 'deny',
      ),
    ).toEqual([]);
    await handle.delete();
  });

  it('schedule create with no user in scope is refused before the server', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    await expect(
      h.client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '1h' }] },
        action: { type: 'startWorkflow', workflowType: 'viaActivity', taskQueue: h.taskQueue },
      }),
    ).rejects.toMatchObject({ code: ErrorCodes.MISSING });
    expect(h.audit.events.filter((e) => e.detail?.startsWith(`schedule ${scheduleId}:`))).toMatchObject([
      { action: 'schedule.create', decision: 'deny', reason: ErrorCodes.MISSING },
    ]);
  });

  it('a schedule whose runs would carry a header over the size workers accept is refused at create', async () => {
    // Temporal accepts ids of up to 1,000 characters; the lineage facts of a run name the schedule and
    // the run again, so near that length every activity of every run would be refused as too large.
    const scheduleId = `sch-${'s'.repeat(900)}`;
    const largest = {
      userId: 'u'.repeat(128),
      workspaceId: 'w'.repeat(128),
      roles: Array.from({ length: 16 }, (_, i) => `r${String(i).padStart(2, '0')}`.padEnd(48, 'x')),
    };
    await expect(
      runAsUser(largest, () =>
        hourlySchedule(h, h.client, scheduleId, { workflowId: `wf-${'w'.repeat(900)}` }),
      ),
    ).rejects.toMatchObject({ code: ErrorCodes.TOO_LARGE });
    // Refused before the server: no such schedule, and the record is the refusal alone.
    await expect(h.rawClient.schedule.getHandle(scheduleId).describe()).rejects.toThrow(/not found/i);
    expect(
      h.audit.events
        .filter((e) => e.detail?.includes(scheduleId.slice(0, 20)))
        .map((e) => [e.decision, e.reason]),
    ).toEqual([['deny', ErrorCodes.TOO_LARGE]]);
  });

  it('a raw schedule (no header) starts runs that are refused', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await hourlySchedule(h, h.rawClient, scheduleId);
    await handle.trigger();
    const workflowId = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await failureTypeOf(h.rawClient.workflow.getHandle(workflowId).result())).toBe(ErrorCodes.MISSING);
    await handle.delete();
  });

  it('a schedule token used to start a workflow directly (not by its schedule) is refused', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const { header } = await issueContextToken(h.edgeRing, alice, {
      namespace: h.namespace,
      use: 'schedule',
      scheduleId,
      workflowId: `${scheduleId}-wf`,
      scheduledAction: { workflowType: 'viaActivity', taskQueue: h.taskQueue },
    });
    const attacker = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(header) });
    for (const workflowId of [
      `direct-${randomUUID()}`,
      `${scheduleId}-wf`,
      `${scheduleId}-wf-2026-01-01T00:00:00Z`,
    ]) {
      const code = await failureTypeOf(
        attacker.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }),
      );
      expect(code, workflowId).toBe(ErrorCodes.LINEAGE_MISMATCH);
    }
  });

  it('a schedule token copied into a run that claims the schedule (id and search attribute) is refused', async () => {
    // Clients may set TemporalScheduledById themselves, and a run id of the scheduled shape is free to
    // take: only the schedule's own record of the runs it started tells a scheduled run apart.
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await aliceSchedule(h, scheduleId);
    await handle.trigger();
    const genuine = await nthScheduledRun(h.rawClient, scheduleId, 1);
    expect(await h.rawClient.workflow.getHandle(genuine).result()).toEqual(alice);
    const attacker = await copiedStartHeaderClient(h, genuine);
    const claimsSchedule = [{ key: SCHEDULED_BY_ID, value: scheduleId }];
    for (const workflowId of [`${scheduleId}-wf-2031-01-01T00:00:00Z`, genuine]) {
      const code = await failureTypeOf(
        attacker.workflow.execute('viaActivity', {
          taskQueue: h.taskQueue,
          workflowId,
          typedSearchAttributes: claimsSchedule,
        }),
      );
      expect(code, workflowId).toBe(ErrorCodes.LINEAGE_MISMATCH);
    }
    await handle.delete();
  });

  it("an update that keeps the creator's header but changes what runs, or where, does not run as the creator", async () => {
    // The SDK's update() copies the action's headers, so the creator's token stays; the token binds the
    // workflow type and task queue it was created with, and workers compare them (check 7).
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await aliceSchedule(h, scheduleId);
    try {
      await h.rawClient.schedule.getHandle(scheduleId).update((previous) => ({
        ...previous,
        action: { ...previous.action, workflowType: 'viaLocalActivity' },
      }));
      await handle.trigger();
      const changed = await nthScheduledRun(h.rawClient, scheduleId, 1);
      expect(await failureTypeOf(h.rawClient.workflow.getHandle(changed).result())).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
      // Back to what alice created: it runs as her again (what the update may change is the rest).
      await h.rawClient.schedule
        .getHandle(scheduleId)
        .update((previous) => ({ ...previous, action: { ...previous.action, workflowType: 'viaActivity' } }));
      await handle.trigger();
      const restored = await nthScheduledRun(h.rawClient, scheduleId, 2);
      expect(await h.rawClient.workflow.getHandle(restored).result()).toEqual(alice);
    } finally {
      await handle.delete();
    }
  });

  it("an update that keeps the creator's header but changes the arguments does not run as the creator; one that changes the spec does", async () => {
    // The token binds the arguments the schedule was created with (their digest); the worker compares
    // the arguments the chain's first run was started with, decoded by its own data converter (here
    // through the payload codec). Values the default converters carry in three ways: JSON, bytes,
    // undefined.
    const scheduleId = `sch-${randomUUID()}`;
    const args = [
      { agent: 'a-1', at: new Date('2026-01-01T00:00:00Z'), n: -0 },
      new Uint8Array([0, 1, 255]),
      undefined,
    ];
    const handle = await runAsUser(alice, () => hourlySchedule(h, h.client, scheduleId, { args }));
    const raw = h.rawClient.schedule.getHandle(scheduleId);
    try {
      // The spec and policies are the updater's to change (the SDK's update re-encodes the arguments):
      // the runs still act as alice.
      await raw.update((previous) => ({ ...previous, spec: { intervals: [{ every: '2h' }] } }));
      await handle.trigger();
      const respecified = await nthScheduledRun(h.rawClient, scheduleId, 1);
      expect(await h.rawClient.workflow.getHandle(respecified).result()).toEqual(alice);
      for (const [n, changed] of [
        [2, [{ agent: 'a-2', at: '2026-01-01T00:00:00.000Z', n: 0 }, new Uint8Array([0, 1, 255]), undefined]],
        // The same bytes as JSON (an object of indices), and null for undefined: other payloads.
        [3, [args[0], { 0: 0, 1: 1, 2: 255 }, undefined]],
        [4, [args[0], new Uint8Array([0, 1, 255]), null]],
        [5, [args[0], new Uint8Array([0, 1, 255])]],
      ] as const) {
        await raw.update((previous) => ({ ...previous, action: { ...previous.action, args: [...changed] } }));
        await handle.trigger();
        const workflowId = await nthScheduledRun(h.rawClient, scheduleId, n);
        expect(await failureTypeOf(h.rawClient.workflow.getHandle(workflowId).result()), String(n)).toBe(
          ErrorCodes.LINEAGE_MISMATCH,
        );
        expect(
          h.audit.events.some(
            (e) =>
              e.workflowId === workflowId &&
              e.decision === 'deny' &&
              e.detail?.includes("the run's arguments are not the ones its schedule was created with"),
          ),
          String(n),
        ).toBe(true);
      }
      // The arguments it was created with (a Date by its JSON text, as the workflow receives it): alice.
      await raw.update((previous) => ({
        ...previous,
        action: {
          ...previous.action,
          args: [{ ...args[0]!, at: '2026-01-01T00:00:00.000Z' }, Buffer.from([0, 1, 255]), undefined],
        },
      }));
      await handle.trigger();
      const restored = await nthScheduledRun(h.rawClient, scheduleId, 6);
      expect(await h.rawClient.workflow.getHandle(restored).result()).toEqual(alice);
    } finally {
      await handle.delete();
    }
  });

  it('arguments the default payload converter cannot carry are refused at create, on record', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    await expect(
      runAsUser(alice, () => hourlySchedule(h, h.client, scheduleId, { args: [{ amount: 1n }] })),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
    await expect(h.rawClient.schedule.getHandle(scheduleId).describe()).rejects.toThrow(/not found/i);
    expect(
      h.audit.events
        .filter((e) => e.detail?.startsWith(`schedule ${scheduleId}`))
        .map((e) => [e.action, e.decision, e.reason, e.userId]),
    ).toEqual([['schedule.create', 'deny', ErrorCodes.MISCONFIGURED, 'alice']]);
  });

  it('with bindScheduleArguments: false, the token binds the action without its arguments', async () => {
    // For arguments another payload converter carries, or chains that outlive retention: an update may
    // then change the arguments, and the runs act as the creator, as before arguments were bound.
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      hourlySchedule(h, unboundArgsClient(), scheduleId, { args: ['a'] }),
    );
    try {
      await h.rawClient.schedule
        .getHandle(scheduleId)
        .update((previous) => ({ ...previous, action: { ...previous.action, args: ['b'] } }));
      await handle.trigger();
      const workflowId = await nthScheduledRun(h.rawClient, scheduleId, 1);
      expect(await h.rawClient.workflow.getHandle(workflowId).result()).toEqual(alice);
    } finally {
      await handle.delete();
    }
  });

  it("a deleted schedule's token does not drive a schedule re-created under its id by someone else", async () => {
    // Alice's schedule token, as issued when she created the schedule 20 minutes ago; it is readable
    // in the schedule and in its runs' history. The schedule has been deleted since, and someone else
    // creates one under the same id with a raw client that writes the copied header.
    const scheduleId = `sch-${randomUUID()}`;
    const twentyMinutesAgo = Date.now() - 20 * 60_000;
    const { header } = await issueContextToken(h.edgeRing, alice, {
      namespace: h.namespace,
      use: 'schedule',
      scheduleId,
      workflowId: `${scheduleId}-wf`,
      scheduledAction: { workflowType: 'viaActivity', taskQueue: h.taskQueue },
      now: () => twentyMinutesAgo,
    });
    const forger = new Client({
      connection: h.connection,
      namespace: h.namespace,
      dataConverter: h.rawClient.options.dataConverter,
      interceptors: {
        schedule: [
          {
            create: (input, next) =>
              next({ ...input, headers: { ...input.headers, [ORIGINATOR_HEADER]: encodeHeader(header) } }),
          },
        ],
      },
    });
    const recreated = await hourlySchedule(h, forger, scheduleId);
    try {
      await recreated.trigger();
      const workflowId = await nthScheduledRun(h.rawClient, scheduleId, 1);
      expect(await failureTypeOf(h.rawClient.workflow.getHandle(workflowId).result())).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
    } finally {
      await recreated.delete();
    }
  });

  it('a retry run of a scheduled workflow (its own start, the same chain) acts as the schedule creator', async () => {
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      hourlySchedule(h, h.client, scheduleId, {
        workflowType: 'failsFirstAttempt',
        retry: { maximumAttempts: 2, initialInterval: '1s' },
      }),
    );
    try {
      await handle.trigger();
      const workflowId = await nthScheduledRun(h.rawClient, scheduleId, 1);
      expect(await h.rawClient.workflow.getHandle(workflowId).result()).toEqual(alice);
    } finally {
      await handle.delete();
    }
  });

  it("a run that took a scheduled run's id before the schedule did cannot borrow the genuine run's record", async () => {
    // An attacker starts `<action id>-<T>` claiming the schedule, with a schedule header copied from
    // history; its own activities are refused (the schedule has no such run), but its abandoned child
    // waits. Then the schedule itself starts a run with that same id (a backfill over T): the latest
    // run of that id is now one the schedule recorded. The child's activity must still be refused: its
    // lineage is the attacker's execution chain, not the scheduled one.
    const scheduleId = `sch-${randomUUID()}`;
    const handle = await aliceSchedule(h, scheduleId);
    try {
      await handle.trigger();
      const genuine = await nthScheduledRun(h.rawClient, scheduleId, 1);
      await h.rawClient.workflow.getHandle(genuine).result();
      const attacker = await copiedStartHeaderClient(h, genuine);
      const at = new Date('2026-01-01T00:00:00Z');
      const taken = `${scheduleId}-wf-2026-01-01T00:00:00Z`;
      const childId = await attacker.workflow.execute('abandonsWaitingChild', {
        taskQueue: h.taskQueue,
        workflowId: taken,
        typedSearchAttributes: [{ key: SCHEDULED_BY_ID, value: scheduleId }],
      });
      await handle.backfill([
        { start: new Date(at.getTime() - 1000), end: new Date(at.getTime() + 1000), overlap: 'ALLOW_ALL' },
      ]);
      // The schedule's run of that id, recorded by the schedule, runs as alice.
      let scheduled: string | undefined;
      for (let i = 0; i < 100 && !scheduled; i++) {
        const { recentActions, runningActions } = (await handle.describe()).info;
        scheduled = [...recentActions.map((a) => a.action), ...runningActions].find(
          (a) => a.workflow.workflowId === taken,
        )?.workflow.firstExecutionRunId;
        if (!scheduled) await new Promise((r) => setTimeout(r, 100));
      }
      expect(scheduled).toBeDefined();
      expect(await h.rawClient.workflow.getHandle(taken, scheduled).result()).toEqual(alice);
      // Now the attacker's child acts.
      await runAsUser(alice, () => h.client.workflow.getHandle(childId).signal('go', 'now'));
      expect(await failureTypeOf(h.rawClient.workflow.getHandle(childId).result())).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
    } finally {
      await handle.delete();
    }
  });
});

describe("the worker's own client", () => {
  it('forwards the verified context on signals: the target sees the same workspace', async () => {
    const target = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', { taskQueue: h.taskQueue, workflowId: `wc-${randomUUID()}` }),
    );
    const sender = `wc-${randomUUID()}`;
    await runAsUser(alice, () =>
      h.client.workflow.execute('signalFromActivity', {
        taskQueue: h.taskQueue,
        workflowId: sender,
        args: [target.workflowId],
      }),
    );
    const result = (await target.result()) as { notes: string[] };
    expect(result.notes).toEqual(['signal:from-activity']);
    // Forwarding is a decision of the worker's client: audited, under the token it forwarded.
    const started = h.audit.events.find((e) => e.action === 'client.start' && e.workflowId === sender);
    expect(
      h.audit.events
        .filter((e) => e.action === 'client.signal' && e.workflowId === target.workflowId)
        .map((e) => [e.decision, e.source, e.userId, e.tokenId, e.detail]),
    ).toEqual([
      ['allow', 'header', alice.userId, started?.tokenId, 'forwarded the verified originator as the actor'],
    ]);
  });

  it('an edge scope inside an activity cannot make it act for another user, even where the key could mint', async () => {
    // A worker ring forwards the verified originator (verifyActor() does not take a start token as an
    // actor); a ring that can issue sends an actor token for the activity's user.
    for (const [w, verifiedActor] of [
      [h, undefined],
      [edgeKeyed, alice.userId],
    ] as const) {
      const target = await runAsUser(alice, () =>
        w.client.workflow.start('interactive', { taskQueue: w.taskQueue, workflowId: `wc-${randomUUID()}` }),
      );
      const send = (as: typeof alice) =>
        runAsUser(alice, () =>
          w.client.workflow.execute('signalFromActivityAs', {
            taskQueue: w.taskQueue,
            workflowId: `wc-${randomUUID()}`,
            args: [target.workflowId, as],
          }),
        );
      // carol shares alice's workspace: only this check stands between alice's run and acting as her.
      expect(await send(carol)).toBe(ErrorCodes.EXPLICIT_MISMATCH);
      expect(await runAsUser(alice, () => target.query('progress'))).toEqual([]);
      // The same user is no conflict: the signal goes out as alice (forwarded, or issued where the
      // worker holds the key).
      expect(await send(alice)).toBe('sent');
      const result = (await target.result()) as { notes: string[]; actorVerified?: { userId: string } };
      expect(result.notes).toEqual(['signal:as']);
      expect(result.actorVerified?.userId).toBe(verifiedActor);
    }
    expect(
      h.audit.events
        .filter((e) => e.action === 'client.signal' && e.reason === ErrorCodes.EXPLICIT_MISMATCH)
        .map((e) => [e.decision, e.userId]),
    ).toEqual([['deny', carol.userId]]);
  });

  it('work an activity leaves running after it returns no longer acts for its user', async () => {
    const workflowId = `wc-${randomUUID()}`;
    expect(
      await runAsUser(alice, () =>
        h.client.workflow.execute('leavesWorkBehind', { taskQueue: h.taskQueue, workflowId }),
      ),
    ).toBe(alice.userId);
    // Its timer fires 200 ms after the activity returned.
    for (let i = 0; i < 100 && !lingering.has(workflowId); i++) await new Promise((r) => setTimeout(r, 50));
    expect(lingering.get(workflowId)).toBe(ErrorCodes.MISSING);
    // On the activity's own trail, as its user's, and named for what it is (found by review: the
    // process's default auditor recorded it, as a call from outside any activity).
    expect(
      h.audit.events
        .filter((e) => e.workflowId === workflowId && e.action === 'activity.resolve')
        .map((e) => [e.decision, e.reason, e.userId, e.detail]),
    ).toEqual([
      [
        'deny',
        ErrorCodes.MISSING,
        alice.userId,
        'called from work an activity or Nexus handler left running after it settled',
      ],
    ]);
  });

  it('cannot start a new lineage (workers cannot mint)', async () => {
    expect(
      await runAsUser(alice, () =>
        h.client.workflow.execute('viaWorkerClient', {
          taskQueue: h.taskQueue,
          workflowId: `wc-${randomUUID()}`,
        }),
      ),
    ).toBe(ErrorCodes.MISCONFIGURED);
  });
});

/** A client Connection given the edge's plugin (which sees schedule changes only there), and its trail. */
async function pluginOnConnection() {
  const sink = memoryAuditSink();
  const plugin = new UserContextPlugin({ keys: h.edgeRing, audit: sink });
  const connection = await Connection.connect({ address: inject('temporalAddress'), plugins: [plugin] });
  return { sink, connection };
}

describe('schedule changes after create (no client interceptor sees them)', () => {
  it.each([
    // Found by review: the check decoded the arguments with this plugin's codec alone; the application
    // codec's payloads under it did not parse, and the update was let through (its runs then refused).
    ['an application codec of its own', () => new AppCodec(), false],
    // Found by the round's review: the first list that decoded without an error answered; a client made
    // later, without the application's codec, read the field codec's JSON as other values, and an update
    // that kept the arguments was refused.
    ['a field codec, with a client made later without it', () => new FieldCodec(), true],
  ])(
    'with %s, refuses an update that changes the bound arguments and passes one that keeps them',
    async (_codec, codec, laterClient) => {
      const { connection } = await pluginOnConnection();
      try {
        const client = new Client({
          connection,
          namespace: h.namespace,
          dataConverter: { payloadCodecs: [codec()] },
        });
        const scheduleId = `args-${randomUUID()}`;
        const schedule = await runAsUser(alice, () =>
          hourlySchedule(h, client, scheduleId, { args: [{ report: 'weekly' }] }),
        );
        try {
          // Another client of the connection, made later, with this plugin's codec alone.
          if (laterClient) new Client({ connection, namespace: h.namespace });
          const err = await runAsUser(alice, () =>
            schedule.update((previous) => ({
              ...previous,
              action: { ...previous.action, args: [{ report: 'everyone' }] },
            })),
          ).catch((e: unknown) => e);
          expect(String((err as { cause?: { details?: unknown } }).cause?.details ?? err)).toContain(
            ErrorCodes.LINEAGE_MISMATCH,
          );
          // An update that keeps them passes: the arguments were read, not skipped.
          await runAsUser(alice, () =>
            schedule.update((previous) => ({
              ...previous,
              spec: { ...previous.spec, intervals: [{ every: '2h' }] },
            })),
          );
          expect((await schedule.describe()).action).toMatchObject({ args: [{ report: 'weekly' }] });
        } finally {
          await schedule.delete();
        }
      } finally {
        await connection.close();
      }
    },
  );

  it("given to the Connection, the plugin refuses an update that moves the action its token binds; the schedule's runs go on", async () => {
    const { sink, connection } = await pluginOnConnection();
    try {
      const client = new Client({ connection, namespace: h.namespace });
      const scheduleId = `moved-${randomUUID()}`;
      const schedule = await runAsUser(alice, () =>
        hourlySchedule(h, client, scheduleId, { workflowType: 'reportsLastResult' }),
      );
      await schedule.trigger(ScheduleOverlapPolicy.SKIP);
      const first = await nthScheduledRun(h.rawClient, scheduleId, 1);
      await h.rawClient.workflow.getHandle(first).result();
      for (const change of [
        { workflowId: `${scheduleId}-elsewhere` },
        { workflowType: 'viaActivity' },
        { taskQueue: `${h.taskQueue}-other` },
        { args: ['other'] },
      ]) {
        const err = await runAsUser(alice, () =>
          schedule.update((previous) => ({ ...previous, action: { ...previous.action, ...change } })),
        ).catch((e: unknown) => e);
        expect(
          String((err as { cause?: { details?: unknown } }).cause?.details ?? err),
          JSON.stringify(change),
        ).toContain(ErrorCodes.LINEAGE_MISMATCH);
      }
      // Nothing of them reached the server; an update that keeps the action passes.
      const { action } = await schedule.describe();
      expect(action).toMatchObject({
        workflowId: `${scheduleId}-wf`,
        workflowType: 'reportsLastResult',
        taskQueue: h.taskQueue,
      });
      expect((action as { args?: unknown[] }).args ?? []).toEqual([]);
      // Nor may it let the schedule run past its token's window: its end cleared, or moved later.
      // A negative jitter would move the window's last run later (found by review).
      const later = new Date(Date.now() + 396 * 86_400_000);
      for (const spec of [
        { intervals: [{ every: '2h' }] },
        { intervals: [{ every: '2h' }], endAt: new Date(Date.now() + 400 * 86_400_000) },
        { intervals: [{ every: '2h' }], endAt: later, jitter: -31 * 86_400_000 },
      ]) {
        const err = await runAsUser(alice, () =>
          schedule.update((previous) => ({ ...previous, spec })),
        ).catch((e: unknown) => e);
        expect(String((err as { cause?: { details?: unknown } }).cause?.details ?? err)).toContain(
          ErrorCodes.MISCONFIGURED,
        );
      }
      await runAsUser(alice, () =>
        schedule.update((previous) => ({
          ...previous,
          spec: { ...previous.spec, intervals: [{ every: '2h' }] },
        })),
      );
      // The next run acts as before and reads the first one's result (a moved id could not have).
      await vi.waitFor(async () => expect((await schedule.describe()).info.runningActions).toEqual([]), {
        timeout: 20_000,
        interval: 200,
      });
      await new Promise((r) => setTimeout(r, 1_000)); // run ids name their second
      await schedule.trigger(ScheduleOverlapPolicy.SKIP);
      const second = await nthScheduledRun(h.rawClient, scheduleId, 2);
      expect(await h.rawClient.workflow.getHandle(second).result()).toEqual({
        user: 'alice',
        last: { user: 'alice', last: null },
      });
      expect(
        sink.events
          .filter((e) => e.action === 'schedule.update')
          .map((e) => [e.decision, e.reason, e.userId]),
      ).toEqual([
        ['deny', ErrorCodes.LINEAGE_MISMATCH, 'alice'],
        ['deny', ErrorCodes.LINEAGE_MISMATCH, 'alice'],
        ['deny', ErrorCodes.LINEAGE_MISMATCH, 'alice'],
        ['deny', ErrorCodes.LINEAGE_MISMATCH, 'alice'],
        ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
        ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
        ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
        ['allow', 'ok', 'alice'],
      ]);
      // Each refusal says what moved.
      expect(
        sink.events
          .filter((e) => e.decision === 'deny' && e.reason === ErrorCodes.LINEAGE_MISMATCH)
          .map((e) => /binds \(([^)]*)\)/.exec(e.detail ?? '')?.[1]),
      ).toEqual(['workflow id', 'workflow type', 'task queue', 'arguments']);
      await schedule.delete();
    } finally {
      await connection.close();
    }
  });

  it('given to the Connection, the plugin audits update, trigger, backfill, pause, unpause and delete, once each', async () => {
    const { sink, connection } = await pluginOnConnection();
    try {
      // The Connection passes its plugins to every client built on it.
      const client = new Client({ connection, namespace: h.namespace });
      const scheduleId = `control-${randomUUID()}`;
      const schedule = await runAsUser(alice, () => hourlySchedule(h, client, scheduleId));
      await runAsUser(alice, () =>
        schedule.update((previous) => ({
          ...previous,
          spec: { ...previous.spec, intervals: [{ every: '2h' }] },
        })),
      );
      await runAsUser(carol, async () => {
        await schedule.trigger();
        await schedule.backfill({
          start: new Date(Date.now() - 3 * 3600_000),
          end: new Date(Date.now() - 3600_000),
        });
        await schedule.pause('maintenance');
        await schedule.unpause('done');
      });
      await schedule.delete(); // an operator's tool, acting for no user
      const records = sink.events
        .filter((e) => e.action.startsWith('schedule.'))
        .map((e) => [e.action, e.decision, e.source, e.userId ?? null, e.detail ?? null]);
      expect(records).toEqual([
        ['schedule.create', 'allow', 'edge', 'alice', `schedule ${scheduleId}`],
        ['schedule.update', 'allow', 'edge', 'alice', `schedule ${scheduleId}`],
        ['schedule.patch', 'allow', 'edge', 'carol', `schedule ${scheduleId}; trigger`],
        ['schedule.patch', 'allow', 'edge', 'carol', `schedule ${scheduleId}; backfill ×1`],
        ['schedule.patch', 'allow', 'edge', 'carol', `schedule ${scheduleId}; pause: maintenance`],
        ['schedule.patch', 'allow', 'edge', 'carol', `schedule ${scheduleId}; unpause: done`],
        ['schedule.delete', 'allow', 'none', null, `schedule ${scheduleId}`],
      ]);
    } finally {
      await connection.close();
    }
  });
});

describe('an activity completed from outside it (AsyncCompletionClient)', () => {
  it('given to the Connection, the plugin refuses a call by task token whose payloads no workflow is bound to; with the serialization context it goes on', async () => {
    // Found by review: SDK 1.24 encodes a call by task token without a serialization context unless told
    // one, so the codec bound its payloads to no workflow. The call succeeded (and was audited as
    // allowed), and the workflow refused the result in every workflow task, for ever.
    const { sink, connection } = await pluginOnConnection();
    try {
      const client = new Client({ connection, namespace: h.namespace });
      const workflowId = `async-token-${randomUUID()}`;
      const handle = await runAsUser(alice, () =>
        client.workflow.start('awaitsCompletion', { taskQueue: h.taskQueue, workflowId }),
      );
      await vi.waitFor(() => expect(asyncTokens.has(workflowId)).toBe(true), { timeout: 15_000 });
      const token = asyncTokens.get(workflowId)!;
      const calls = [
        () => client.activity.complete(token, 'approved'),
        () => client.activity.heartbeat(token, { progress: 1 }),
        () => client.activity.fail(token, new Error('declined')),
        () => client.activity.reportCancellation(token, 'withdrawn'),
      ];
      for (const call of calls) {
        const err = await runAsUser(carol, call).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(String((err as { cause?: unknown })?.cause ?? err)).toContain(ErrorCodes.MISCONFIGURED);
      }
      // With the activity's serialization context, each payload is bound to its workflow: a heartbeat goes
      // on (unrecorded), and the completion too.
      const serializationContext = {
        type: 'activity',
        namespace: h.namespace,
        workflowId,
        activityId: '1',
        isLocal: false,
      } as const;
      await runAsUser(carol, () => client.activity.heartbeat(token, undefined, { serializationContext }));
      await runAsUser(carol, () => client.activity.complete(token, 'approved', { serializationContext }));
      expect(await handle.result()).toBe('approved');
      expect(
        sink.events
          .filter((e) => e.action.startsWith('activity.'))
          .map((e) => [e.action, e.decision, e.reason, e.userId]),
      ).toEqual([
        ['activity.complete', 'deny', ErrorCodes.MISCONFIGURED, carol.userId],
        ['activity.heartbeat', 'deny', ErrorCodes.MISCONFIGURED, carol.userId],
        ['activity.fail', 'deny', ErrorCodes.MISCONFIGURED, carol.userId],
        ['activity.cancel', 'deny', ErrorCodes.MISCONFIGURED, carol.userId],
        ['activity.complete', 'allow', 'ok', carol.userId],
      ]);
    } finally {
      await connection.close();
    }
  });

  // Carried for several rounds: such completions were not audited. The activity's own record names its
  // task token by digest, and so does a completion by token (control-calls.test.ts).
  it("given to the Connection, the plugin records who completed it, beside the activity's own record", async () => {
    const { sink, connection } = await pluginOnConnection();
    try {
      const client = new Client({ connection, namespace: h.namespace });
      const workflowId = `async-${randomUUID()}`;
      const handle = await runAsUser(alice, () =>
        client.workflow.start('awaitsCompletion', { taskQueue: h.taskQueue, workflowId }),
      );
      await vi.waitFor(() => expect(asyncTokens.has(workflowId)).toBe(true), { timeout: 15_000 });
      // An approval, say: a member completes the activity through the API's client.
      await runAsUser(carol, () => client.activity.complete({ workflowId, activityId: '1' }, 'approved'));
      expect(await handle.result()).toBe('approved');
      const digest = createHash('sha256').update(asyncTokens.get(workflowId)!).digest('hex').slice(0, 16);
      expect(
        h.audit.events
          .filter((e) => e.action === 'activity.async' && e.workflowId === workflowId)
          .map((e) => [e.decision, e.userId, e.activityId, e.detail]),
      ).toEqual([
        ['allow', alice.userId, '1', `completes later, by its id or by task token sha256:${digest}`],
      ]);
      expect(
        sink.events
          .filter((e) => e.action.startsWith('activity.'))
          .map((e) => [e.action, e.decision, e.source, e.userId, e.workflowId, e.activityId, e.detail]),
      ).toEqual([['activity.complete', 'allow', 'edge', carol.userId, workflowId, '1', 'by activity id']]);
    } finally {
      await connection.close();
    }
  });
});
