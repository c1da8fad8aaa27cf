// Committed histories of AgentExecutionWorkflow, and the test-only key set they were recorded with.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import { workerKeySet, type KeySetJson } from 'temporal-user-context';

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
