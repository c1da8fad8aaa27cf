// Committed histories of AgentExecutionWorkflow, and the test-only key set they were recorded with.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import type { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import {
  KeyRing,
  UserContextPlugin,
  memoryAuditSink,
  workerKeySet,
  type KeySetJson,
} from 'temporal-user-context';
import { workflowsPath } from '../../src/worker.js';

export const historiesDir = fileURLToPath(new URL('./histories/', import.meta.url));

/** The test-only edge key set the fixtures were recorded with, and its worker half. */
export function readFixtureKeys(): { edge: KeySetJson; worker: KeySetJson } {
  const edge = JSON.parse(readFileSync(`${historiesDir}keys.json`, 'utf8')) as KeySetJson;
  return { edge, worker: workerKeySet(edge) };
}

/**
 * Writes histories as `<label>--<workflow id>--<run id>.json` (made file-name safe), each holding
 * `{ workflowId, history }` (replay needs the exact id: the payload codec binds payloads to it), and
 * replaces the fixtures of that label: the value of RECORD_HISTORIES, `current` for `1`.
 */
export function writeFixtureHistories(
  recorded: ReadonlyArray<{ workflowId: string; runId: string; history: History }>,
): void {
  const label =
    process.env.RECORD_HISTORIES === '1' ? 'current' : (process.env.RECORD_HISTORIES ?? 'current');
  if (!/^[a-z0-9]+(-[a-z0-9]+)*$/.test(label)) {
    throw new Error('RECORD_HISTORIES: 1, or a label of a-z and 0-9 words joined by single dashes');
  }
  mkdirSync(historiesDir, { recursive: true });
  for (const f of readdirSync(historiesDir)) if (f.startsWith(`${label}--`)) rmSync(`${historiesDir}${f}`);
  for (const { workflowId, runId, history } of recorded) {
    // A continued-as-new chain has several runs under one workflow id.
    const file = `${label}--${`${workflowId}--${runId}`.replace(/[^A-Za-z0-9._-]/g, '_')}.json`;
    const body = { workflowId, history: JSON.parse(historyToJSON(history)) as unknown };
    writeFileSync(`${historiesDir}${file}`, `${JSON.stringify(body)}\n`);
  }
}

/** The ids of the patches a history recorded, one per `patched()` marker. */
export function patchIds(history: History): string[] {
  return (history.events ?? []).flatMap((e) => {
    const marker = e.markerRecordedEventAttributes;
    const data =
      marker?.markerName === 'core_patch' ? marker.details?.['patch-data']?.payloads?.[0]?.data : null;
    return data ? [(JSON.parse(new TextDecoder().decode(data)) as { id: string }).id] : [];
  });
}

/** Every committed history, with its label. */
export function readFixtureHistories(): Array<{ label: string; workflowId: string; history: History }> {
  return readdirSync(historiesDir)
    .filter((f) => f.includes('--') && f.endsWith('.json'))
    .sort()
    .map((f) => {
      const { workflowId, history } = JSON.parse(readFileSync(`${historiesDir}${f}`, 'utf8')) as {
        workflowId: string;
        history: unknown;
      };
      return { label: f.slice(0, f.indexOf('--')), workflowId, history: historyFromJSON(history) };
    });
}

/** Every closed run on `taskQueue` with its history: what an e2e file replays (and may record). */
export async function finishedHistories(
  client: Client,
  taskQueue: string,
): Promise<Array<{ workflowId: string; runId: string; history: History }>> {
  // The raw list call: memo and search attributes are not needed, only the executions.
  const { executions } = await client.workflowService.listWorkflowExecutions({
    namespace: client.options.namespace,
    query: `TaskQueue = "${taskQueue}" AND ExecutionStatus != "Running"`,
  });
  return Promise.all(
    (executions ?? []).map(async (e) => ({
      workflowId: e.execution?.workflowId ?? '',
      runId: e.execution?.runId ?? '',
      history: await client.workflow
        .getHandle(e.execution?.workflowId ?? '', e.execution?.runId ?? undefined)
        .fetchHistory(),
    })),
  );
}

/**
 * Replays histories under the current workflow code with the plugin; returns the errors (none
 * expected), each with its workflow id. A history the replayer never reported is an error too: an
 * empty list must mean every history replayed.
 */
export async function replayErrors(
  histories: ReadonlyArray<{ workflowId: string; history: History }>,
  workerKeys: KeySetJson,
): Promise<unknown[]> {
  const plugin = new UserContextPlugin({ keys: KeyRing.fromJSON(workerKeys), audit: memoryAuditSink() });
  const errors: unknown[] = [];
  let replayed = 0;
  for await (const result of Worker.runReplayHistories({ workflowsPath, plugins: [plugin] }, histories)) {
    replayed++;
    if (result.error) errors.push({ workflowId: result.workflowId, error: result.error });
  }
  if (replayed !== histories.length) errors.push(`replayed ${replayed} of ${histories.length} histories`);
  return errors;
}
