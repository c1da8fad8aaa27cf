// `npm run api` and `npm run worker` as processes, against PostgreSQL (DATABASE_URL) and the test
// Temporal server: each stops on SIGTERM, and what its audit sinks still held reaches the database
// before the pool closes (the API's anonymous refusals wait in the coalescing sink's window, which only
// the shutdown's flush writes).
import type {} from '../../../../test-support/global-setup.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { fromPgPool } from 'temporal-user-context/postgres';
import { freePort } from '../../../../test-support/net.js';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';
import { migrate } from '../../src/data/migrate.js';
import {
  ANONYMOUS_REFUSALS_SQL,
  expectAnonymousRefusalsFlushed,
  sendAnonymousRefusals,
} from './anonymous-refusals.js';

const appDir = fileURLToPath(new URL('../..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'agent-platform-processes-'));
const children: ChildProcess[] = [];
const queue = `agent-tasks-processes-${randomUUID()}`;
// A Temporal config file with an empty default profile: the developer's own (TLS, an API key) must not
// reach the test server. (An empty file is refused by envconfig.)
const temporalConfig = join(dataDir, 'temporal.toml');
writeFileSync(temporalConfig, '[profile.default]\n');
let database: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase('agent_processes');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  await migrate(fromPgPool(pool));
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await pool?.end();
  await database?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Starts an entry point; resolves once `ready` appears in its output. */
async function start(entry: string, env: NodeJS.ProcessEnv, ready: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: appDir,
    env: {
      ...process.env,
      DATABASE_URL: database.url,
      AGENT_PLATFORM_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_CONFIG_FILE: temporalConfig,
      // Never the real queue: against a shared server, a worker here must not take a deployment's runs.
      AGENT_PLATFORM_TASK_QUEUE: queue,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let i = 0; i < 600 && !out.includes(ready); i++) {
    if (child.exitCode !== null) throw new Error(`${entry} exited early:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!out.includes(ready)) throw new Error(`${entry} did not start:\n${out}`);
  return { child, exited, output: () => out };
}

describe('the API and the worker as processes', () => {
  it('npm run api writes the refusals its coalescing sink held when it stops', async () => {
    const port = await freePort();
    const api = await start('src/api.ts', { PORT: String(port) }, 'Server listening');
    await sendAnonymousRefusals(port);
    api.child.kill('SIGTERM');
    expect(await api.exited).toBe(0);
    const { rows } = await pool.query<{ detail: string }>(ANONYMOUS_REFUSALS_SQL);
    expectAnonymousRefusalsFlushed(rows.map((r) => r.detail));
  }, 120_000);

  it('npm run api exits on SIGTERM while nothing reads its stdout', async () => {
    // Its request log and audit lines share the library's bounded stdout: the exit's flush gives up after
    // 2 s. With pino's default destination (Fastify's own logger) it retried for ever, and the process
    // never exited.
    const port = await freePort();
    const api = await start('src/api.ts', { PORT: String(port) }, 'Server listening');
    api.child.stdout!.pause();
    // One request-log line of ~180 bytes each, ~900 KB: several times what the pipe (64 KiB) and this
    // process's paused stream (up to a read or two of 64 KiB) take in. With 1,000 requests (~180 KB,
    // once the log kept the route alone) the pipe and this side now and then took every line.
    for (let i = 0; i < 100; i++)
      await Promise.all(
        Array.from({ length: 50 }, () => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.text())),
      );
    api.child.kill('SIGTERM');
    expect(await api.exited).toBe(0);
    // It exited because the bound gave up on stdout, not because stdout took everything.
    api.child.stdout!.resume();
    await new Promise((resolve) => api.child.once('close', resolve));
    expect(api.output()).toContain('did not take its lines within 2000 ms of exit');
  }, 120_000);

  it('npm run worker with AGENT_PLATFORM_METRICS_ADDRESS counts its decisions on a Prometheus endpoint', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const worker = await start(
      'src/worker.ts',
      { AGENT_PLATFORM_METRICS_ADDRESS: address },
      'worker: polling task queue',
    );
    // A run started as a client without the plugin starts it: its input is not encrypted, and the
    // worker's codec refuses it.
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    const raw = new Client({ connection, namespace: inject('temporalNamespace') });
    const workflowId = `metrics-${randomUUID()}`;
    try {
      await raw.workflow.start('AgentExecutionWorkflow', {
        taskQueue: queue,
        workflowId,
        args: [{ agentId: 'agent', input: 'hello' }],
      });
      const refused =
        /^temporal_user_context_decisions\w*\{action="codec\.decode",decision="deny",reason="USER_CONTEXT_PLAINTEXT_PAYLOAD"\} [1-9]/m;
      let text = '';
      for (let i = 0; i < 100 && !refused.test(text); i++) {
        await new Promise((r) => setTimeout(r, 200));
        text = await (await fetch(`http://${address}/metrics`)).text();
      }
      expect(text).toMatch(refused);
    } finally {
      await raw.workflow
        .getHandle(workflowId)
        .terminate('test over')
        .catch(() => undefined);
      await connection.close();
    }
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  }, 120_000);

  it('npm run worker polls, then stops cleanly on SIGTERM', async () => {
    const worker = await start('src/worker.ts', {}, 'worker: polling task queue');
    expect(worker.output()).toContain(`worker: polling task queue ${queue} in namespace`);
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  }, 120_000);
});
