import { extname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Context } from '@temporalio/activity';
import { Worker, type NativeConnection, type WorkerOptions } from '@temporalio/worker';
import {
  Auditor,
  ErrorCodes,
  UserContextPlugin,
  WHOIS_ACTOR_ACTIVITY,
  isUserContextError,
  pinoAuditSink,
  type AuditSink,
  type KeyRing,
  type Verified,
} from 'temporal-user-context';
import {
  postgresAuditSink,
  withUserScope,
  type ScopeAuditFields,
  type SqlDatabase,
} from 'temporal-user-context/postgres';
import { createActivities } from './activities.js';
import {
  AUDIT_FLUSH_TIMEOUT_MS,
  activityLineage,
  assertPlatformIsolation,
  platformKeyRing,
  openDatabase,
  taskQueue,
  runtimeMetrics,
} from './config.js';
import { migrate } from './data/migrate.js';
import { MembershipRepository, grantTolerance } from './data/repositories/workspaces.js';
import { providerFromEnv, type ModelProvider } from './providers/index.js';
import { connectWorker } from './temporal.js';
import { TASK_QUEUE } from './workflows/agent-execution.js';
import { HEARTBEAT_THROTTLE_MS } from './workflows/run-policy.js';
import { workerDatabaseAudit } from './worker-audit.js';

const here = fileURLToPath(import.meta.url);
export const workflowsPath = fileURLToPath(new URL(`./workflows/index${extname(here)}`, import.meta.url));

/**
 * How long a worker's shutdown may take before the SDK gives up on it (`shutdownForceTime`): activities
 * are cancelled at once when it begins (the model step aborts its provider's request), and one that
 * ignores that (a database call that hangs) would hold the process for good. The worker's `run()` then
 * rejects; the activities left behind are retried by Temporal after their timeouts.
 */
export const WORKER_SHUTDOWN_FORCE_MS = 60_000;

export interface CreateWorkerOptions {
  connection: NativeConnection;
  /**
   * How long before a role's grant a run's or an actor's token may have been issued and still get it
   * (default 30 s); an older one is refused, `USER_CONTEXT_REVOKED` (migration 0019).
   */
  grantToleranceSeconds?: number;
  namespace?: string;
  taskQueue?: string;
  db: SqlDatabase;
  /** The worker key ring (no private signing key). */
  keys: KeyRing;
  provider?: ModelProvider;
  /** Audit sinks; default: the audit_log table plus pino on stdout. */
  audit?: AuditSink[];
  /** Where activities' lineage comes from (default `server`: see `activityLineage` in config.ts). */
  activityLineage?: 'server' | 'header';
  worker?: Partial<WorkerOptions>;
}

/** A worker for `agent-tasks` with the user-context plugin, the agent workflow and its activities. */
export async function createWorker(options: CreateWorkerOptions): Promise<Worker> {
  const tolerance = grantTolerance(options.grantToleranceSeconds, 'grantToleranceSeconds');
  const plugin: UserContextPlugin = new UserContextPlugin({
    keys: options.keys,
    // Not closed by anyone: counts still held in a window at exit are lost (main() passes its own).
    audit: options.audit ?? [workerDatabaseAudit(postgresAuditSink(options.db)), pinoAuditSink()],
    // The hook runs before the activity's scope exists: its database check records to the plugin's auditor.
    isRevoked: (verified) => revokedByMembership(options.db, verified, plugin.auditor, tolerance),
    activityLineage: options.activityLineage ?? 'server',
  });
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace ?? 'default',
    taskQueue: options.taskQueue ?? TASK_QUEUE,
    workflowsPath,
    activities: createActivities({
      db: options.db,
      provider: options.provider ?? providerFromEnv(),
      scope: { auditor: plugin.auditor },
    }),
    plugins: [plugin],
    // A cancelled run's model step learns of it within seconds (run-policy.ts).
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE_MS,
    shutdownForceTime: WORKER_SHUTDOWN_FORCE_MS,
    ...options.worker,
  });
}

/** The hook's scope for an originator: its refusals are the activity's own scope's to record. */
const UNRECORDED = new Auditor([]);

/**
 * The revocation hook, for every token a worker verifies (the run's originator, an actor):
 *
 * - an actor (who sends a cancel or an instruction) must still be a member when the worker acts on
 *   their word. A signal or update can wait for a worker up to the actor window, and the member may
 *   have been removed meanwhile; `verifyActor()` then refuses it (`USER_CONTEXT_REVOKED`, audited as
 *   `activity.actor`). An originator without a membership is left to the activity's own database
 *   scope, which refuses it (`USER_CONTEXT_MEMBERSHIP_REVOKED`);
 * - no token may use a role granted after it was issued (migration 0019): a run of a member removed and
 *   added again, or started as admin by one demoted and promoted again since, is refused
 *   (`USER_CONTEXT_REVOKED`) instead of going on as if nothing had happened (found by review).
 */
async function revokedByMembership(
  db: SqlDatabase,
  verified: Verified,
  auditor: Auditor,
  toleranceSeconds: number,
): Promise<boolean> {
  const actor = verified.claims.use === 'actor';
  // Verifying who sent a cancel or an instruction acts for no one: refusing the run's originator here
  // refused every sender's verification, so a re-granted member's waiting run could not be cancelled,
  // by an admin either (found by an upgrade rehearsal). The sender's own token is checked in full, and
  // the run's next activity of its own is refused.
  if (!actor && activityIds()?.activityType === WHOIS_ACTOR_ACTIVITY) return false;
  try {
    const late = await withUserScope(
      db,
      verified.context,
      (tx) =>
        new MembershipRepository(tx).grantedAfter(tx.effectiveRoles, verified.claims.iat, toleranceSeconds),
      // The allow is the activity's own scope's to record. An originator without a membership is the
      // activity's scope's to refuse, and record: not twice (found by review). An actor's refusal is this
      // check's, recorded with the activity's ids.
      { auditor: actor ? auditor : UNRECORDED, audit: activityIds(), auditAllow: false },
    );
    if (late.length > 0)
      auditor.emit({
        ...activityIds(),
        action: 'membership.grants',
        decision: 'deny',
        source: 'header',
        reason: ErrorCodes.REVOKED,
        userId: verified.context.userId,
        workspaceId: verified.context.workspaceId,
        tokenId: verified.claims.jti,
        detail: `roles granted after the token was issued: ${late.join(',')}`,
      });
    return late.length > 0;
  } catch (err) {
    if (isUserContextError(err, ErrorCodes.MEMBERSHIP_REVOKED)) return actor;
    throw err;
  }
}

/** `npm run worker`: connects with the Temporal env config, DATABASE_URL or PGlite, and runs. */
async function main(): Promise<void> {
  const database = await openDatabase();
  if (database.kind === 'pglite') await migrate(database.db);
  await assertPlatformIsolation(database.db);
  const keys = platformKeyRing('worker');
  const queue = taskQueue();
  // Before the connection: it installs the runtime.
  const metrics = runtimeMetrics();
  const { connection, namespace } = await connectWorker();
  // Handler calls anyone may send at any rate reach the table once per kind and minute (worker-audit.ts).
  const dbAudit = workerDatabaseAudit(postgresAuditSink(database.auditDb));
  const worker = await createWorker({
    connection,
    namespace,
    db: database.db,
    keys,
    audit: [dbAudit, pinoAuditSink(), ...(metrics ? [metrics] : [])],
    taskQueue: queue,
    activityLineage: activityLineage(),
  });
  // The SDK shuts the worker down on SIGINT/SIGTERM (WorkerOptions.shutdownSignals); run() then resolves.
  console.log(`worker: polling task queue ${queue} in namespace ${namespace}`);
  try {
    await worker.run();
    await connection.close();
  } finally {
    // Records still being written need the pool: once it ends, they would never settle. Closing writes
    // the counts still held in windows, then flushes.
    await dbAudit.close({ timeoutMs: AUDIT_FLUSH_TIMEOUT_MS });
    await database.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // Exits once shut down, rather than when nothing is left to wait for: the stdout audit sink's lines
  // are then written within a bound, where a stalled log reader would otherwise keep the process alive.
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/**
 * The ids of the activity the hook runs for, for its database scope's record: the hook runs before the
 * activity's own scope exists, which would otherwise supply them. None in a Nexus handler.
 */
function activityIds(): ScopeAuditFields | undefined {
  let info: ReturnType<typeof Context.current>['info'];
  try {
    info = Context.current().info;
  } catch {
    return undefined;
  }
  return {
    namespace: info.workflowNamespace ?? info.namespace,
    workflowId: info.workflowExecution?.workflowId,
    runId: info.workflowExecution?.runId,
    workflowType: info.workflowType,
    activityType: info.activityType,
    activityId: info.activityId,
    attempt: info.attempt,
  };
}
