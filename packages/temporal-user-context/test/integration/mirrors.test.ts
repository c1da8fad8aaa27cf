// The memo and search-attribute mirrors on a real server: what each mode writes, and that an operator
// finds a user's workflows with pseudonymsOf. Mirrors are never read back as the truth (attacks.test.ts
// case 8, boundaries.test.ts "tampered memo").
import { randomUUID } from 'node:crypto';
import { TypedSearchAttributes, type SearchAttributePair } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  generateKeySet,
  KeyRing,
  MEMO_KEY,
  memoryAuditSink,
  mirrorQuery,
  pseudonymsOf,
  runAsUser,
  USER_ID_ATTRIBUTE,
  UserContextPlugin,
  WORKSPACE_ID_ATTRIBUTE,
} from 'temporal-user-context';
import { alice, nthScheduledRun, type Harness } from '../../../../test-support/harness.js';
import { aliceSchedule, useFixtureHarness } from '../fixtures/harness.js';

const byDefault = useFixtureHarness();
const plainMemoPseudonymAttributes = useFixtureHarness({
  plugin: { mirror: { memo: 'plain', searchAttributes: 'pseudonym' } },
});
const plainAttributes = useFixtureHarness({ plugin: { mirror: { memo: 'off', searchAttributes: 'plain' } } });
const off = useFixtureHarness({ plugin: { mirror: { memo: 'off', searchAttributes: 'off' } } });
// An explicit undefined (an unset variable passed through) means the default, not "on".
const undefinedModes = useFixtureHarness({
  plugin: { mirror: { memo: undefined, searchAttributes: undefined } },
});

async function describeRun(h: Harness) {
  const workflowId = `mirror-${randomUUID()}`;
  await runAsUser(alice, () =>
    h.client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }),
  );
  const description = await h.rawClient.workflow.getHandle(workflowId).describe();
  return {
    workflowId,
    memo: description.memo?.[MEMO_KEY],
    userId: description.typedSearchAttributes.get(USER_ID_ATTRIBUTE),
    workspaceId: description.typedSearchAttributes.get(WORKSPACE_ID_ATTRIBUTE),
  };
}

describe('mirrors at start', () => {
  it('by default: pseudonyms in the memo, no search attributes (they need registering)', async () => {
    const run = await describeRun(byDefault);
    expect(run.memo).toEqual({ ...pseudonymsOf(byDefault.edgeRing, alice), mode: 'pseudonym' });
    expect(run.userId).toBeUndefined();
    expect(run.workspaceId).toBeUndefined();
  });

  it('plain memo and pseudonymous search attributes, found by a list filter', async () => {
    const h = plainMemoPseudonymAttributes;
    const run = await describeRun(h);
    const p = pseudonymsOf(h.workerRing, alice);
    expect(run.memo).toEqual({ userId: alice.userId, workspaceId: alice.workspaceId, mode: 'plain' });
    expect(run.userId).toBe(p.userId);
    expect(run.workspaceId).toBe(p.workspaceId);
    // Visibility is eventually consistent: wait for the run to be listed under the user's pseudonyms.
    const query = `UserId = "${p.userId}" AND WorkspaceId = "${p.workspaceId}" AND WorkflowId = "${run.workflowId}"`;
    let found: string[] = [];
    for (let i = 0; i < 100 && found.length === 0; i++) {
      found = [];
      for await (const w of h.rawClient.workflow.list({ query })) found.push(w.workflowId);
      if (found.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(found).toEqual([run.workflowId]);
  });

  it('plain search attributes carry the real ids', async () => {
    const run = await describeRun(plainAttributes);
    expect(run.memo).toBeUndefined();
    expect([run.userId, run.workspaceId]).toEqual([alice.userId, alice.workspaceId]);
  });

  it("an identity provider's subject (auth0|…, a +tag) is mirrored as it is and found by mirrorQuery", async () => {
    const h = plainAttributes;
    const user = { userId: 'auth0|5f7c8ec7c33c6c004bbafe82', workspaceId: 'org+acme', roles: ['member'] };
    const workflowId = `mirror-${randomUUID()}`;
    await runAsUser(user, () =>
      h.client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }),
    );
    const query = `${mirrorQuery('plain', h.workerRing, user)!} AND WorkflowId = "${workflowId}"`;
    expect(query).toContain('UserId = "auth0|5f7c8ec7c33c6c004bbafe82" AND WorkspaceId = "org+acme"');
    let found: string[] = [];
    for (let i = 0; i < 100 && found.length === 0; i++) {
      found = [];
      for await (const w of h.rawClient.workflow.list({ query })) found.push(w.workflowId);
      if (found.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(found).toEqual([workflowId]);
  });

  it('undefined modes are the defaults', async () => {
    const run = await describeRun(undefinedModes);
    expect(run.memo).toEqual({ ...pseudonymsOf(undefinedModes.edgeRing, alice), mode: 'pseudonym' });
    expect(run.userId).toBeUndefined();
  });

  it('a mode that is not one of the three is refused when the plugin is built', () => {
    const keys = KeyRing.fromJSON(generateKeySet('x').edge);
    for (const mirror of [{ memo: 'Plain' }, { searchAttributes: 'on' }])
      expect(
        () => new UserContextPlugin({ keys, audit: memoryAuditSink(), mirror: mirror as never }),
      ).toThrow(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
  });

  it('off writes neither', async () => {
    const run = await describeRun(off);
    expect(run).toMatchObject({ memo: undefined, userId: undefined, workspaceId: undefined });
  });
});

/** What the server shows of workflow `id`'s mirrors (its latest run), and of a memo entry `note`. */
async function shown(h: Harness, id: string) {
  const description = await h.rawClient.workflow.getHandle(id).describe();
  return {
    memo: description.memo?.[MEMO_KEY],
    note: description.memo?.note,
    userId: description.typedSearchAttributes.get(USER_ID_ATTRIBUTE),
    workspaceId: description.typedSearchAttributes.get(WORKSPACE_ID_ATTRIBUTE),
  };
}

/** Runs `type(...args)` as alice; returns its workflow id. */
async function runAsAlice(h: Harness, type: string, ...args: unknown[]): Promise<string> {
  const workflowId = `mirror-parent-${randomUUID()}`;
  await runAsUser(alice, () => h.client.workflow.execute(type, { taskQueue: h.taskQueue, workflowId, args }));
  return workflowId;
}

describe('mirrors of a child', () => {
  it("a child shows its parent's mirrors and is listed with them", async () => {
    const h = plainMemoPseudonymAttributes;
    const workflowId = await runAsAlice(h, 'viaChild');
    const p = pseudonymsOf(h.workerRing, alice);
    const parent = await shown(h, workflowId);
    expect(parent).toEqual({
      memo: { userId: alice.userId, workspaceId: alice.workspaceId, mode: 'plain' },
      note: undefined,
      userId: p.userId,
      workspaceId: p.workspaceId,
    });
    expect(await shown(h, `${workflowId}-child`)).toEqual(parent);
    const query = `${mirrorQuery('pseudonym', h.workerRing, alice)} AND WorkflowId = "${workflowId}-child"`;
    let found: string[] = [];
    for (let i = 0; i < 100 && found.length === 0; i++) {
      found = [];
      for await (const w of h.rawClient.workflow.list({ query })) found.push(w.workflowId);
      if (found.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(found).toEqual([`${workflowId}-child`]);
  });

  it('and so does a grandchild', async () => {
    const h = plainMemoPseudonymAttributes;
    const workflowId = await runAsAlice(h, 'viaGrandchild');
    const parent = await shown(h, workflowId);
    expect(parent.userId).toBe(pseudonymsOf(h.workerRing, alice).userId);
    expect(await shown(h, `${workflowId}-child-child`)).toEqual(parent);
  });

  it.each(['pairs', 'instance', 'legacy'])(
    "a key the parent has is the parent's whatever the workflow code gives (search attributes as %s)",
    async (form) => {
      const h = plainAttributes;
      const workflowId = await runAsAlice(h, 'childWithOwnMirrors', form);
      // No memo mirror on the parent: the workflow code's memo entries stay; its UserId does not.
      expect(await shown(h, `${workflowId}-child`)).toEqual({
        memo: { userId: 'someone-else', workspaceId: 'elsewhere', mode: 'plain' },
        note: 'kept',
        userId: alice.userId,
        workspaceId: alice.workspaceId,
      });
    },
  );

  it("a key the parent lacks stays the workflow code's", async () => {
    const workflowId = await runAsAlice(byDefault, 'childWithOwnMirrors', 'pairs');
    expect(await shown(byDefault, `${workflowId}-child`)).toEqual({
      memo: { ...pseudonymsOf(byDefault.edgeRing, alice), mode: 'pseudonym' },
      note: 'kept',
      userId: 'someone-else',
      workspaceId: undefined,
    });
  });

  it("a child shows its parent's mirrors as they are when it starts, after an upsert", async () => {
    const h = plainAttributes;
    const upserted = await runAsAlice(h, 'upsertsThenChild', 'attributes');
    expect(await shown(h, `${upserted}-child`)).toMatchObject({
      userId: 'upserted',
      workspaceId: alice.workspaceId,
    });
    // The parent's UserId replaces the workflow code's; its WorkspaceId, which the parent dropped, stays.
    const removed = await runAsAlice(h, 'upsertsThenChild', 'removes');
    expect(await shown(h, `${removed}-child`)).toMatchObject({
      userId: alice.userId,
      workspaceId: 'its own',
    });
  });

  it('a memo entry of another shape under the mirror key is not copied', async () => {
    const workflowId = await runAsAlice(byDefault, 'upsertsThenChild', 'memo');
    expect((await shown(byDefault, workflowId)).memo).toEqual({ userId: 'not the edge' });
    expect((await shown(byDefault, `${workflowId}-child`)).memo).toBeUndefined();
  });

  it('a parent without mirrors gives its child none', async () => {
    const workflowId = await runAsAlice(off, 'viaChild');
    const none = { memo: undefined, note: undefined, userId: undefined, workspaceId: undefined };
    expect(await shown(off, workflowId)).toEqual(none);
    expect(await shown(off, `${workflowId}-child`)).toEqual(none);
  });

  it('a continued run keeps its mirrors, whatever memo or search attributes it gives; so does its child', async () => {
    const h = plainMemoPseudonymAttributes;
    const p = pseudonymsOf(h.workerRing, alice);
    const expected = {
      memo: { userId: alice.userId, workspaceId: alice.workspaceId, mode: 'plain' },
      userId: p.userId,
      workspaceId: p.workspaceId,
    };
    const workflowId = await runAsAlice(h, 'continuedWithOwn', 0, 'memo');
    expect(await shown(h, workflowId)).toEqual({ ...expected, note: 'kept' });
    expect(await shown(h, `${workflowId}-child`)).toEqual({ ...expected, note: undefined });
    // Search attributes of its own (none): the mirrors are added to them.
    const noAttributes = await runAsAlice(h, 'continuedWithOwn', 0, 'no attributes');
    expect(await shown(h, noAttributes)).toEqual({ ...expected, note: undefined });
    // Continued with no memo of its own: the SDK's core copies the run's start memo, the client's
    // entries with it.
    const copied = `mirror-parent-${randomUUID()}`;
    await runAsUser(alice, () =>
      h.client.workflow.execute('viaContinueAsNew', {
        taskQueue: h.taskQueue,
        workflowId: copied,
        args: [0],
        memo: { note: 'from the start' },
      }),
    );
    expect(await shown(h, copied)).toEqual({ ...expected, note: 'from the start' });
    // An empty memo is none: the run's is copied, not replaced by the mirror alone.
    const empty = `mirror-parent-${randomUUID()}`;
    await runAsUser(alice, () =>
      h.client.workflow.execute('continuedWithOwn', {
        taskQueue: h.taskQueue,
        workflowId: empty,
        args: [0, 'empty memo'],
        memo: { note: 'from the start' },
      }),
    );
    expect(await shown(h, empty)).toEqual({ ...expected, note: 'from the start' });
  });
});

/** Creates alice's hourly schedule of `viaActivity`, triggers it once; returns what the server shows. */
async function describeSchedule(h: Harness) {
  const scheduleId = `mirror-sch-${randomUUID()}`;
  const handle = await aliceSchedule(h, scheduleId);
  try {
    const schedule = await h.rawClient.schedule.getHandle(scheduleId).describe();
    await handle.trigger();
    const runId = await nthScheduledRun(h.rawClient, scheduleId, 1);
    const run = h.rawClient.workflow.getHandle(runId);
    await run.result();
    const ran = await run.describe();
    const mirrored = (
      memo?: Record<string, unknown>,
      attributes?: TypedSearchAttributes | SearchAttributePair[],
    ) => {
      const typed = Array.isArray(attributes) ? new TypedSearchAttributes(attributes) : attributes;
      return {
        memo: memo?.[MEMO_KEY],
        userId: typed?.get(USER_ID_ATTRIBUTE),
        workspaceId: typed?.get(WORKSPACE_ID_ATTRIBUTE),
      };
    };
    return {
      scheduleId,
      schedule: mirrored(schedule.memo, schedule.typedSearchAttributes),
      action: mirrored(schedule.action.memo, schedule.action.typedSearchAttributes),
      run: mirrored(ran.memo, ran.typedSearchAttributes),
      // Listed with the creator's pseudonyms (visibility is eventually consistent: waits a little).
      listed: async (query: string) => {
        let found: string[] = [];
        for (let i = 0; i < 100 && found.length === 0; i++) {
          found = [];
          for await (const s of h.rawClient.schedule.list({ query })) found.push(s.scheduleId);
          if (found.length === 0) await new Promise((r) => setTimeout(r, 100));
        }
        return found;
      },
      /** After an update that starts from the description (a pause): what the server then shows. */
      afterUpdate: async () => {
        await handle.update((previous) => ({ ...previous, state: { ...previous.state, paused: true } }));
        const updated = await h.rawClient.schedule.getHandle(scheduleId).describe();
        return {
          schedule: mirrored(updated.memo, updated.typedSearchAttributes),
          action: mirrored(updated.action.memo, updated.action.typedSearchAttributes),
        };
      },
      delete: () => handle.delete(),
    };
  } catch (err) {
    await handle.delete();
    throw err;
  }
}

describe('mirrors of a schedule', () => {
  it("the schedule and every run it starts show its creator; an operator lists a user's schedules", async () => {
    const h = plainMemoPseudonymAttributes;
    const created = await describeSchedule(h);
    try {
      const p = pseudonymsOf(h.workerRing, alice);
      const expected = {
        memo: { userId: alice.userId, workspaceId: alice.workspaceId, mode: 'plain' },
        userId: p.userId,
        workspaceId: p.workspaceId,
      };
      expect(created.schedule).toEqual(expected);
      expect(created.action).toEqual(expected);
      expect(created.run).toEqual(expected);
      const query = `UserId = "${p.userId}" AND WorkspaceId = "${p.workspaceId}"`;
      expect(await created.listed(query)).toContain(created.scheduleId);
      expect(await created.afterUpdate()).toEqual({ schedule: expected, action: expected });
    } finally {
      await created.delete();
    }
  });

  it('by default: pseudonyms in the memos only; off writes nothing', async () => {
    const pseudonymous = await describeSchedule(byDefault);
    const none = await describeSchedule(off);
    try {
      const expected = {
        memo: { ...pseudonymsOf(byDefault.edgeRing, alice), mode: 'pseudonym' },
        userId: undefined,
        workspaceId: undefined,
      };
      expect([pseudonymous.schedule, pseudonymous.action, pseudonymous.run]).toEqual([
        expected,
        expected,
        expected,
      ]);
      const nothing = { memo: undefined, userId: undefined, workspaceId: undefined };
      expect([none.schedule, none.action, none.run]).toEqual([nothing, nothing, nothing]);
    } finally {
      await Promise.all([pseudonymous.delete(), none.delete()]);
    }
  });
});
