// `npm start`: the whole platform in one process for local use — Temporal dev server (child process),
// PGlite (or DATABASE_URL) with migrations and demo data, a worker and the HTTP API.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { Auditor, UserContextPlugin, pinoAuditSink, stdoutLogger } from 'temporal-user-context';
import { postgresAuditSink } from 'temporal-user-context/postgres';
import { authFromEnv } from './api.js';
import { createApi } from './api/app.js';
import { edgeDatabaseAudit } from './api/edge-audit.js';
import { loadDevIssuer } from './auth/dev-issuer.js';
import { createVerifier } from './auth/verify.js';
import {
  AUDIT_FLUSH_TIMEOUT_MS,
  DATA_DIR,
  REPO_ROOT,
  activityLineage,
  createDataDir,
  runtimeMetrics,
  actorWindowSeconds,
  assertPlatformIsolation,
  platformKeyRing,
  openDatabase,
  searchAttributeMirror,
  taskQueue,
} from './config.js';
import { quotasFromEnv } from './api/quotas.js';
import { migrate } from './data/migrate.js';
import { seedDemo } from './seed.js';
import { temporalConnectConfig } from './temporal.js';
import { createWorker } from './worker.js';
import { workerDatabaseAudit } from './worker-audit.js';

const TEMPORAL_PORT = Number(process.env.TEMPORAL_PORT ?? 7233);
const UI_PORT = Number(process.env.TEMPORAL_UI_PORT ?? 8233);
const API_PORT = Number(process.env.PORT ?? 3000);

/** Starts `temporal server start-dev` with persistent state in .data/temporal.db, or uses TEMPORAL_ADDRESS. */
async function startTemporal(): Promise<{ address: string; child?: ChildProcess }> {
  if (process.env.TEMPORAL_ADDRESS) return { address: process.env.TEMPORAL_ADDRESS };
  const cli = execFileSync(process.execPath, [join(REPO_ROOT, 'scripts/temporal-cli.mjs'), '--print-path'], {
    encoding: 'utf8',
  }).trim();
  const child = spawn(
    cli,
    [
      'server',
      'start-dev',
      '--ip',
      '127.0.0.1',
      '--port',
      String(TEMPORAL_PORT),
      '--ui-port',
      String(UI_PORT),
      '--db-filename',
      join(DATA_DIR, 'temporal.db'),
      '--search-attribute',
      'UserId=Keyword',
      '--search-attribute',
      'WorkspaceId=Keyword',
      '--dynamic-config-value',
      'frontend.enableUpdateWorkflowExecution=true',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  // Never leave the dev server behind, even when this process dies on an error.
  process.once('exit', () => child.kill('SIGTERM'));
  const address = `127.0.0.1:${TEMPORAL_PORT}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`temporal dev server exited with ${child.exitCode}`);
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      await connection.workflowService.getSystemInfo({});
      await connection.close();
      return { address, child };
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function main(): Promise<void> {
  // The dev server's history database and the embedded database live here (created for this user only).
  createDataDir();
  // Always the development pair under .data/keys, whatever the environment names (one process, both
  // sides), with the same checks as npm run api / npm run worker.
  const keys = { worker: platformKeyRing('worker', {}), edge: platformKeyRing('edge', {}) };
  const temporal = await startTemporal();
  process.env.TEMPORAL_ADDRESS ??= temporal.address;
  // The dev server started here takes the address alone (a developer's default profile may name a Cloud
  // namespace, TLS and an API key); a given TEMPORAL_ADDRESS is read with the whole environment
  // configuration (API key, TLS, profiles), as `npm run worker` and `npm run api` read it.
  const { connectionOptions, namespace } = temporal.child
    ? {
        connectionOptions: { address: temporal.address },
        namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
      }
    : temporalConnectConfig();

  const database = await openDatabase();
  await migrate(database.db);
  await assertPlatformIsolation(database.db);
  const dbAudit = postgresAuditSink(database.auditDb);
  // The demo's agents and documents are written as each workspace's admin: on the platform's trail.
  const agents = await seedDemo(database.db, undefined, { auditor: new Auditor([dbAudit]) });
  // Refusals of anonymous requests, and of a removed member's, reach the table once per kind and
  // minute, with a count (edgeDatabaseAudit). The log keeps every one.
  const edgeDbAudit = edgeDatabaseAudit(dbAudit);
  // Likewise the signals, updates and queries workflow code judges (workerDatabaseAudit).
  const workerDbAudit = workerDatabaseAudit(dbAudit);

  // Before the native connection: it installs the runtime (as `npm run worker` does).
  const metrics = runtimeMetrics();
  const nativeConnection = await NativeConnection.connect(connectionOptions);
  const worker = await createWorker({
    connection: nativeConnection,
    namespace,
    db: database.db,
    keys: keys.worker,
    audit: [workerDbAudit, pinoAuditSink(), ...(metrics ? [metrics] : [])],
    taskQueue: taskQueue(),
    activityLineage: activityLineage(),
  });
  const running = worker.run();
  // Every ending, whichever begins first: SIGINT or SIGTERM (the SDK's own handlers stop the worker
  // too), the worker stopping on its own (SIGQUIT or SIGUSR2, which the SDK also handles) or failing (a
  // fatal poll error). Handled from here on; each step runs whatever the ones before did, the audit
  // records still queued are written before the process exits, and the exit code says if a step failed.
  let app: Awaited<ReturnType<typeof createApi>> | undefined = undefined;
  let connection: Connection | undefined = undefined;
  const step = async (what: string, fn: () => Promise<unknown> | undefined) => {
    try {
      await fn();
    } catch (err) {
      failed = true;
      console.error(`${what} failed`, err);
    }
  };
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${why}: shutting down`);
    await step('closing the API', () => app?.close());
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await step('the worker', () => running);
    // Each flushes dbAudit: nothing is held in a window the exit would drop.
    await step("writing the worker's audit records", () =>
      workerDbAudit.close({ timeoutMs: AUDIT_FLUSH_TIMEOUT_MS }),
    );
    await step('writing the audit records', () => edgeDbAudit.close({ timeoutMs: AUDIT_FLUSH_TIMEOUT_MS }));
    await step('closing the client connection', () => connection?.close());
    await step("closing the worker's connection", () => nativeConnection.close());
    await step('closing the database', () => database.close());
    // The dev server may have gone already (a Ctrl-C reaches its process group too): no 'exit' then.
    const child = temporal.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
    process.exit(failed ? 1 : 0);
  };
  running.then(
    () => void stop('worker stopped'),
    () => void stop('worker failed'),
  );
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));

  const edge = new UserContextPlugin({
    keys: keys.edge,
    audit: [edgeDbAudit, pinoAuditSink()],
    // The dev server started here registers UserId and WorkspaceId; a given server may not have them.
    mirror: { searchAttributes: searchAttributeMirror(temporal.child ? 'pseudonym' : 'off') },
    actorWindowSeconds: actorWindowSeconds(),
  });
  // On the Connection, the plugin also audits schedule changes (update, delete, trigger, pause), which
  // no client interceptor sees; the Connection passes it on to the Client.
  connection = await Connection.connect({ ...connectionOptions, plugins: [edge] });
  const client = new Client({ connection, namespace });
  if (stopping) return;
  app = await createApi({
    db: database.db,
    client,
    verify: createVerifier(await authFromEnv()),
    // Warnings and errors only (a 500's details, a record that could not be written): the banner and
    // the demo's output stay readable.
    logger: stdoutLogger({ level: 'warn' }),
    scope: { auditor: edge.auditor },
    ...(edge.searchAttributeMirror === 'off' ? {} : { mirrorQuery: (ids) => edge.mirrorQuery(ids) }),
    quotas: quotasFromEnv(),
    taskQueue: taskQueue(),
  });
  // A stop begun while the API was being made closes it (and exits): it must not listen after that.
  if (stopping) return;
  await app.listen({ port: API_PORT, host: '127.0.0.1' });
  if (stopping) return;

  // With an identity provider configured the API takes its tokens only: a dev token would be refused.
  const token = process.env.AUTH_JWKS_URL
    ? '<a token of your identity provider for alice>'
    : await (
        await loadDevIssuer()
      ).mint({ user: 'alice', workspace: 'ws-acme', roles: ['member'], expiresIn: '8h' });
  const api = `http://127.0.0.1:${API_PORT}`;
  console.log(`
Agent platform is running (data in ${DATA_DIR}, database: ${database.kind})
  API              ${api}
  OpenAPI docs     ${api}/docs
  Temporal Web UI  ${temporal.child ? `http://127.0.0.1:${UI_PORT}` : '(external server: ' + temporal.address + ')'}

Demo users: alice (member) and carol (admin) in ws-acme; bob (admin) and dave (member) in ws-globex.
Mint more tokens with: npm run token -w apps/agent-platform -- --user carol --workspace ws-acme --roles admin,member

Next step — run the Acme assistant as alice:
  TOKEN=${token}
  KEY=run-$(date +%s)
  curl -s -X POST ${api}/workspaces/ws-acme/agents/${agents['ws-acme'] ?? '<agent-id>'}/runs \\
    -H "authorization: Bearer $TOKEN" -H "idempotency-key: $KEY" \\
    -H 'content-type: application/json' -d '{"input":"Tell me about roadmap"}'
  (sent again with the same $KEY, it answers the same run instead of starting another)
  curl -s "${api}/runs/<runId>/result?waitSeconds=10" -H "authorization: Bearer $TOKEN"
`);
}

/** Set once the shutdown begins: startup then stops where it is, and leaves the exit to it. */
let stopping = false;
/** Whether a step failed, of the shutdown or of a startup it cut short: the exit code is 1. */
let failed = false;

main().catch((err: unknown) => {
  console.error(err);
  // A startup step failing under a shutdown already begun: that shutdown exits, its audit written.
  if (stopping) failed = true;
  else process.exit(1);
});
