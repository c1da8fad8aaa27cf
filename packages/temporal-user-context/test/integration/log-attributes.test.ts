// Log lines of one user's work carry that user's pseudonyms, in workflows and activities alike, and never
// their ids.
import { randomUUID } from 'node:crypto';
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { pseudonymsOf, runAsUser } from 'temporal-user-context';
import { alice } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

// Before anything in this process uses the runtime (each test file runs in a process of its own).
const entries: LogEntry[] = [];
Runtime.install({ logger: new DefaultLogger('INFO', (entry) => entries.push(entry)) });
const h = useFixtureHarness();

describe('log attributes', () => {
  it("a workflow's and its activity's log lines name the originator by pseudonym", async () => {
    const workflowId = `logs-${randomUUID()}`;
    await runAsUser(alice, () =>
      h.client.workflow.execute('logsAsItRuns', { taskQueue: h.taskQueue, workflowId }),
    );
    const expected = pseudonymsOf(h.edgeRing, alice);
    const lines = entries.filter(
      (e) => e.meta?.workflowId === workflowId && ['workflow note', 'activity note'].includes(e.message),
    );
    expect(lines.map((e) => [e.message, e.meta?.userPseudonym, e.meta?.workspacePseudonym])).toEqual([
      ['workflow note', expected.userId, expected.workspaceId],
      ['activity note', expected.userId, expected.workspaceId],
    ]);
    // The ids themselves are not on them.
    for (const line of lines) expect(Object.values(line.meta ?? {})).not.toContain(alice.userId);
  });
});
