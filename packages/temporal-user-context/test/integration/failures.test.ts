// While the codec is on, a failure's message and stack trace are encrypted in history too
// (failureMessages: 'encrypted', the default); the plugin's own refusals stay readable.
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import { alice, bob } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

const SECRET = 'invoice 42 of alice@example.com could not be read';

describe.each([
  ['encrypted', {}],
  ['clear', { failureMessages: 'clear' as const }],
])('failure messages %s', (mode, plugin) => {
  const h = useFixtureHarness({ plugin });

  /** The run's history as the server stores it: nothing decoded by any client. */
  async function storedHistory(workflowId: string): Promise<HistoryEvent[]> {
    const response = await h.connection.workflowService.getWorkflowExecutionHistory({
      namespace: h.namespace,
      execution: { workflowId },
    });
    return response.history?.events ?? [];
  }

  it('a failure quoting user data: encrypted in history, readable to the plugin client', async () => {
    const workflowId = `fail-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('failsWithMessage', { taskQueue: h.taskQueue, workflowId, args: [SECRET] }),
    );
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    // The plugin's client decodes it: the activity's failure, under the activity failure.
    const cause = (err as WorkflowFailedError).cause?.cause as Error | undefined;
    expect(cause?.message).toBe(SECRET);

    const events = await storedHistory(workflowId);
    const failed = events.find((e) => e.activityTaskFailedEventAttributes)!.activityTaskFailedEventAttributes!
      .failure!;
    // The type is not encrypted: what kind of failure stays visible.
    expect(failed.applicationFailureInfo?.type).toBe('AppError');
    if (mode === 'encrypted') {
      expect(failed.message).toBe('Encoded failure');
      expect(failed.stackTrace).toBe('');
      const encoding = new TextDecoder().decode(failed.encodedAttributes?.metadata?.encoding ?? undefined);
      expect(encoding).toBe('binary/encrypted');
      expect(JSON.stringify(events)).not.toContain('alice@example.com');
    } else {
      expect(failed.message).toBe(SECRET);
    }
  });

  it("the plugin's refusals stay readable in history and to a query's caller", async () => {
    // A start without a user context (a client without the plugin): the run fails with the refusal,
    // and history says which, whatever the mode.
    const bare = `bare-${randomUUID()}`;
    await h.rawClient.workflow.start('viaActivity', { taskQueue: h.taskQueue, workflowId: bare });
    await expect(h.rawClient.workflow.getHandle(bare).result()).rejects.toThrow();
    const refused = (await storedHistory(bare)).find((e) => e.workflowExecutionFailedEventAttributes)!
      .workflowExecutionFailedEventAttributes!.failure!;
    expect(refused.applicationFailureInfo?.type).toBe(ErrorCodes.MISSING);
    expect(refused.message).toMatch(new RegExp(`^${ErrorCodes.MISSING}: `));
    // Without its stack (the worker's source paths and function names) when messages are encrypted.
    if (mode === 'encrypted') expect(refused.stackTrace).toBe('');
    else expect(refused.stackTrace).toContain(ErrorCodes.MISSING);
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `refuse-${randomUUID()}`,
      }),
    );
    // A query from another workspace: refused, and the SDK's client sees only the failure's message.
    await expect(runAsUser(bob, () => handle.query('progress'))).rejects.toThrow(ErrorCodes.ACTOR_FORBIDDEN);
    await handle.terminate('test done');
  });
});
