// The README's first command: `npm start` (src/main.ts) on embedded defaults — its own Temporal dev
// server, PGlite, a worker and the API — followed the way the banner tells a newcomer to, then stopped
// with a signal. The run it starts is found under alice's pseudonyms (search-attribute mirror on the
// dev server it started), and its worker's decisions are counted on the Prometheus endpoint
// AGENT_PLATFORM_METRICS_ADDRESS names.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyRing, pseudonymsOf } from 'temporal-user-context';
import { freePort } from '../../../../test-support/net.js';
import {
  ANONYMOUS_REFUSALS_SQL,
  expectAnonymousRefusalsFlushed,
  sendAnonymousRefusals,
} from './anonymous-refusals.js';

const appDir = fileURLToPath(new URL('../..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'agent-platform-main-'));
let child: ChildProcess | undefined;

afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

describe('npm start', () => {
  it('serves the banner demo run, mirrors it for search, and shuts down cleanly', async () => {
    const [port, temporalPort, uiPort, metricsPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const metricsAddress = `127.0.0.1:${metricsPort}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      AGENT_PLATFORM_DATA_DIR: dataDir,
      PORT: String(port),
      TEMPORAL_PORT: String(temporalPort),
      TEMPORAL_UI_PORT: String(uiPort),
      // Its worker's decisions, counted beside the runtime's metrics.
      AGENT_PLATFORM_METRICS_ADDRESS: metricsAddress,
    };
    // Embedded defaults: no external Temporal server, no external database.
    delete env.TEMPORAL_ADDRESS;
    delete env.DATABASE_URL;
    delete env.AGENT_PLATFORM_SEARCH_ATTRIBUTES;
    const started = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: appDir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    let out = '';
    started.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    started.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => started.once('exit', (code) => resolve(code)));
    for (let i = 0; i < 900 && !out.includes('curl -s "http'); i++) {
      if (started.exitCode !== null) throw new Error(`npm start exited early:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).toContain('Agent platform is running');
    expect(out).toContain('database: pglite');
    // The embedded database's files (inputs, answers, the audit trail, in clear) are this user's only.
    expect(statSync(join(dataDir, 'pglite')).mode & 0o777).toBe(0o700);

    // Follow the banner: its token, its agent, its two curls.
    const token = /TOKEN=(\S+)/.exec(out)?.[1];
    const runsUrl = /curl -s -X POST (\S+\/runs)/.exec(out)?.[1];
    expect(token && runsUrl).toBeTruthy();
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const created = (await (
      await fetch(runsUrl!, {
        method: 'POST',
        headers,
        body: JSON.stringify({ input: 'Tell me about roadmap' }),
      })
    ).json()) as { runId: string; workflowId: string };
    const result = (await (
      await fetch(`http://127.0.0.1:${port}/runs/${created.runId}/result?waitSeconds=20`, { headers })
    ).json()) as { status: string; result?: { answer?: string } };
    expect(result.status).toBe('completed');
    expect(result.result?.answer).toContain('Acme roadmap');

    // The run's activities were allowed, and counted on the runtime's Prometheus endpoint with the SDK's
    // own metrics.
    const metrics = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    expect(metrics).toMatch(
      /^temporal_user_context_decisions\w*\{action="activity\.[a-z]+",decision="allow",reason="[^"]+"\} [1-9]/m,
    );
    expect(metrics).toMatch(/^temporal_workflow_completed\w*\{/m);

    // The run is listed under alice's pseudonyms, computed from the key set main.ts created.
    const p = pseudonymsOf(KeyRing.fromFile(join(dataDir, 'keys', 'worker.json')), {
      userId: 'alice',
      workspaceId: 'ws-acme',
    });
    // The raw list call: its memo is encrypted by the payload codec, and only ids are needed here.
    const connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}` });
    try {
      const query = `UserId = "${p.userId}" AND WorkspaceId = "${p.workspaceId}"`;
      let listed: string[] = [];
      for (let i = 0; i < 100 && !listed.includes(created.workflowId); i++) {
        const page = await connection.workflowService.listWorkflowExecutions({ namespace: 'default', query });
        listed = (page.executions ?? []).map((e) => e.execution?.workflowId ?? '');
        if (!listed.includes(created.workflowId)) await new Promise((r) => setTimeout(r, 100));
      }
      expect(listed).toContain(created.workflowId);
    } finally {
      await connection.close();
    }

    // Anonymous refusals just before the stop, flushed by it.
    await sendAnonymousRefusals(port);

    started.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('SIGTERM: shutting down');

    // What the stop flushed is in the database the process left behind.
    const lite = new PGlite(join(dataDir, 'pglite'));
    try {
      const { rows } = await lite.query<{ detail: string }>(ANONYMOUS_REFUSALS_SQL);
      expectAnonymousRefusalsFlushed(rows.map((r) => r.detail));
    } finally {
      await lite.close();
    }
  }, 180_000);
});
