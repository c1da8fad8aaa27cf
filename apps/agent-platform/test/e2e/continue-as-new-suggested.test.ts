// AgentExecutionWorkflow on a dev server of its own whose namespace suggests continue-as-new after five
// history events, fewer than a generation needs to reach its first model step: each generation must
// still take a step, or the run continues as new forever. Needs the dev server's dynamic config: skipped
// against a server given by TEMPORAL_ADDRESS.
import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
  runAsUser,
  type UserContext,
} from 'temporal-user-context';
import { fromPgPool, withUserScope, type SqlDatabase } from 'temporal-user-context/postgres';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';
import { startRetrying, startTemporal } from '../../../../test-support/temporal.js';
import { DATABASE_OPTIONS } from '../../src/config.js';
import { migrate } from '../../src/data/migrate.js';
import { AgentRunRepository } from '../../src/data/repositories/index.js';
import { LocalModelProvider } from '../../src/providers/index.js';
import { seedDemo } from '../../src/seed.js';
import { createWorker } from '../../src/worker.js';
import type { AgentExecutionInput, AgentExecutionResult } from '../../src/workflows/agent-execution.js';
import { patchIds, replayErrors } from '../replay/fixtures.js';

const external = Boolean(process.env.TEMPORAL_ADDRESS);
const alice: UserContext = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const keys = generateKeySet('continue-as-new-suggested');
/** A generation reaches its first model step after about ten events: suggested before it, every time. */
const SUGGEST_AFTER_EVENTS = 5;

let env: TestWorkflowEnvironment;
let database: TestDatabase;
let pool: pg.Pool;
let db: SqlDatabase;
let worker: Worker;
let running: Promise<void>;
let client: Client;
let agentId: string;
const taskQueue = `agent-can-${randomUUID()}`;

beforeAll(async () => {
  if (external) return;
  env = await startRetrying(() =>
    startTemporal({
      extraArgs: [
        '--dynamic-config-value',
        `limit.historyCount.suggestContinueAsNew=${SUGGEST_AFTER_EVENTS}`,
      ],
    }),
  );
  database = await createTestDatabase('agent_can');
  pool = new pg.Pool({ connectionString: database.url, max: 4 });
  db = fromPgPool(pool, DATABASE_OPTIONS);
  await migrate(db);
  agentId = (await seedDemo(db))['ws-acme'] as string;
  worker = await createWorker({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    db,
    keys: KeyRing.fromJSON(keys.worker),
    audit: [memoryAuditSink()],
    provider: new LocalModelProvider(),
  });
  running = worker.run();
  client = new Client({
    connection: env.connection,
    namespace: env.namespace ?? 'default',
    plugins: [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit: memoryAuditSink() })],
  });
}, 120_000);

afterAll(async () => {
  // Each step whatever the one before did: a worker that failed must not leave a server or a database.
  try {
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    await running;
  } finally {
    await pool?.end();
    await database?.drop();
    await env?.teardown();
  }
});

/** Every run of the lineage `workflowId` started with, in order, followed through its continue-as-news. */
async function lineage(workflowId: string, firstRunId: string) {
  const runs: Array<{ workflowId: string; runId: string; history: History }> = [];
  for (let runId: string | null | undefined = firstRunId; runId;) {
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    runs.push({ workflowId, runId, history });
    runId = history.events?.find((e) => e.workflowExecutionContinuedAsNewEventAttributes)
      ?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
  }
  return runs;
}

describe.skipIf(external)('a namespace that suggests continue-as-new before the first model step', () => {
  it('each generation takes a step before it continues as new: the run completes', async () => {
    const workflowId = `agent-run-${randomUUID()}`;
    const input = 'Tell me about roadmap';
    const { id: runRecordId } = await withUserScope(db, alice, (tx) =>
      new AgentRunRepository(tx).create({ agentId, workflowId, input: { input } }),
    );
    const handle = await runAsUser(alice, () =>
      client.workflow.start('AgentExecutionWorkflow', {
        taskQueue,
        workflowId,
        args: [{ agentId, runRecordId, input } satisfies AgentExecutionInput],
      }),
    );
    // Before the fix every generation continued as new at once, and the run never ended: bounded here.
    const ended = await Promise.race([
      runAsUser(alice, () => handle.result()) as Promise<AgentExecutionResult>,
      new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 30_000).unref()),
    ]);
    expect(ended).toMatchObject({ status: 'completed', steps: 2, toolCalls: 1 });
    // It did continue as new (the suggestion is followed once a step is taken), a step per generation.
    const { rows } = await pool.query<{ status: string }>('select status from agent_runs where id = $1', [
      runRecordId,
    ]);
    expect(rows[0]?.status).toBe('completed');
    // Followed from the first run (the visibility list may not show the last run closed yet).
    const histories = await lineage(workflowId, handle.firstExecutionRunId);
    expect(histories.length).toBeGreaterThanOrEqual(2);
    expect(new Set(histories.flatMap((h) => patchIds(h.history)))).toContain(
      'step-before-suggested-continue',
    );
    expect(await replayErrors(histories, keys.worker)).toEqual([]);
  });
});
