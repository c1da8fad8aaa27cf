import type {} from '../../../../test-support/global-setup.js';
import { randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import pg from 'pg';
import { openApiChecker } from './openapi-check.js';
import { inject } from 'vitest';
import { KeyRing, UserContextPlugin, generateKeySet, memoryAuditSink } from 'temporal-user-context';
import { fromPgPool, type SqlDatabase } from 'temporal-user-context/postgres';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';
import { createApi, type CreateApiOptions } from '../../src/api/app.js';
import { DATABASE_OPTIONS } from '../../src/config.js';
import { createEphemeralIssuer, type DevIssuer } from '../../src/auth/dev-issuer.js';
import { createVerifier } from '../../src/auth/verify.js';
import { migrate } from '../../src/data/migrate.js';
import type { ModelProvider } from '../../src/providers/index.js';
import { seedDemo } from '../../src/seed.js';
import { createWorker, type CreateWorkerOptions } from '../../src/worker.js';

export type Json = Record<string, unknown>;
export type Call = (
  who: string | undefined,
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  payload?: Json,
  headers?: Record<string, string>,
) => Promise<LightMyRequestResponse & { body_: Json }>;

/**
 * The platform as platform.test.ts builds it (fresh database with the demo seed, a worker, the API)
 * with what the API review tests need besides: a second API whose task queue no worker polls, an audit
 * sink that only the API's plugin writes to, and a count of the history long-polls the API's own
 * connection has in flight.
 */
export interface Platform {
  db: SqlDatabase;
  pool: pg.Pool;
  namespace: string;
  /** The API's client (edge plugin). */
  client: Client;
  /** A client of the test's own, on another connection: its calls are not counted. */
  testClient: Client;
  issuer: DevIssuer;
  agentIds: Record<string, string>;
  taskQueue: string;
  /** A task queue no worker polls: runs started there stay open until terminated. */
  idleTaskQueue: string;
  /** Audit events of the API's plugin only (the worker has a sink of its own). */
  apiAudit: ReturnType<typeof memoryAuditSink>;
  /** Audit events of the worker's plugin (and its activities' database scopes). */
  workerAudit: ReturnType<typeof memoryAuditSink>;
  /** Runs `fn` while a worker like the harness's polls {@link idleTaskQueue}. */
  withIdleWorker<T>(fn: () => Promise<T>, options?: Partial<CreateWorkerOptions>): Promise<T>;
  /** The API's plugin (search-attribute mirror on: pseudonyms) and its key ring. */
  edge: UserContextPlugin;
  edgeRing: KeyRing;
  /** History long-polls (`waitNewEvent`) the API's connection has open right now. */
  historyPolls(): number;
  /**
   * Delays every history read of the API's connection by `ms` from now on: a busy history service, or
   * a large result to fetch, as against a quick describe.
   */
  slowHistory(ms: number): void;
  /** The API on the worker's task queue. */
  app: FastifyInstance;
  /** Another API on the same database and client, starting runs on {@link idleTaskQueue}. */
  idleApp: FastifyInstance;
  tokens: Record<string, string>;
  call: Call;
  idleCall: Call;
  stop(): Promise<void>;
}

/**
 * Another API on the platform's database and Temporal client (and the idle task queue), recording to
 * its edge auditor: for a test that needs its own options, or to close it. The caller closes it.
 */
export function otherApi(p: Platform, options: Partial<CreateApiOptions> = {}): Promise<FastifyInstance> {
  return createApi({
    db: p.db,
    client: p.client,
    taskQueue: p.idleTaskQueue,
    verify: createVerifier({ jwks: p.issuer.jwks, issuer: p.issuer.issuer, audience: p.issuer.audience }),
    scope: { auditor: p.edge.auditor },
    ...options,
  });
}

export async function startPlatform(options: {
  prefix: string;
  provider?: ModelProvider;
  api?: Partial<CreateApiOptions>;
}): Promise<Platform> {
  const database: TestDatabase = await createTestDatabase(options.prefix);
  const pool = new pg.Pool({ connectionString: database.url, max: 8 });
  const db = fromPgPool(pool, DATABASE_OPTIONS);
  await migrate(db);
  const agentIds = await seedDemo(db);

  const address = inject('temporalAddress');
  const namespace = inject('temporalNamespace');
  const taskQueue = `agent-tasks-${randomUUID()}`;
  const idleTaskQueue = `agent-idle-${randomUUID()}`;
  const keys = generateKeySet('agent-platform-test');
  const nativeConnection = await NativeConnection.connect({ address });
  const workerAudit = memoryAuditSink();
  /** The platform's worker on `queue`, auditing into {@link workerAudit}. */
  const workerOn = (queue: string, more: Partial<CreateWorkerOptions> = {}): Promise<Worker> =>
    createWorker({
      connection: nativeConnection,
      namespace,
      taskQueue: queue,
      db,
      keys: KeyRing.fromJSON(keys.worker),
      audit: [workerAudit],
      ...(options.provider ? { provider: options.provider } : {}),
      ...more,
    });
  const worker = await workerOn(taskQueue);
  const running = worker.run();

  const apiAudit = memoryAuditSink();
  // The search-attribute mirror is on (the test server registers UserId and WorkspaceId), so that the
  // schedule listing takes its server-side filter (mirrorQuery).
  const edgeRing = KeyRing.fromJSON(keys.edge);
  const edge = new UserContextPlugin({
    keys: edgeRing,
    audit: apiAudit,
    mirror: { searchAttributes: 'pseudonym' },
  });
  // As the platform does: on the Connection, the plugin also audits schedule changes.
  const connection = await Connection.connect({ address, plugins: [edge] });
  let polls = 0;
  let historyDelayMs = 0;
  const service = connection.workflowService;
  const getHistory = service.getWorkflowExecutionHistory.bind(service);
  service.getWorkflowExecutionHistory = ((request) => {
    const delayed = async () => {
      if (historyDelayMs > 0) await new Promise((r) => setTimeout(r, historyDelayMs));
      return getHistory(request);
    };
    if (!request.waitNewEvent) return delayed();
    polls++;
    return delayed().finally(() => polls--);
  }) as typeof service.getWorkflowExecutionHistory;

  const client = new Client({ connection, namespace });
  const testConnection = await Connection.connect({ address });
  const testClient = new Client({
    connection: testConnection,
    namespace,
    plugins: [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit: memoryAuditSink() })],
  });
  const issuer = await createEphemeralIssuer();
  const base: CreateApiOptions = {
    db,
    client,
    verify: createVerifier({ jwks: issuer.jwks, issuer: issuer.issuer, audience: issuer.audience }),
    scope: { auditor: edge.auditor },
    ...(edge.searchAttributeMirror === 'off' ? {} : { mirrorQuery: (ids) => edge.mirrorQuery(ids) }),
    ...options.api,
  };
  const app = await createApi({ ...base, taskQueue });
  const idleApp = await createApi({ ...base, taskQueue: idleTaskQueue });
  const tokens: Record<string, string> = {
    alice: await issuer.mint({ user: 'alice', workspace: 'ws-acme', roles: ['member'] }),
    carol: await issuer.mint({ user: 'carol', workspace: 'ws-acme', roles: ['admin', 'member'] }),
    bob: await issuer.mint({ user: 'bob', workspace: 'ws-globex', roles: ['admin', 'member'] }),
    dave: await issuer.mint({ user: 'dave', workspace: 'ws-globex', roles: ['member'] }),
  };
  // Both APIs serve the same document.
  const documented = await openApiChecker(app);
  const caller =
    (target: FastifyInstance): Call =>
    async (who, method, url, payload, headers) => {
      const res = await target.inject({
        method,
        url,
        headers: { ...(who ? { authorization: `Bearer ${tokens[who] ?? who}` } : {}), ...headers },
        ...(payload ? { payload } : {}),
      });
      documented(method, url, res);
      return Object.assign(res, { body_: res.body ? (JSON.parse(res.body) as Json) : {} });
    };

  return {
    db,
    pool,
    namespace,
    client,
    testClient,
    issuer,
    agentIds,
    taskQueue,
    idleTaskQueue,
    apiAudit,
    workerAudit,
    async withIdleWorker(fn, more) {
      return (await workerOn(idleTaskQueue, more)).runUntil(fn);
    },
    edge,
    edgeRing,
    historyPolls: () => polls,
    slowHistory: (ms) => {
      historyDelayMs = ms;
    },
    app,
    idleApp,
    tokens,
    call: caller(app),
    idleCall: caller(idleApp),
    async stop() {
      await app.close();
      await idleApp.close();
      worker.shutdown();
      await running;
      await connection.close();
      await testConnection.close();
      await nativeConnection.close();
      await pool.end();
      await database.drop();
    },
  };
}

export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (ok(value)) return value;
    if (Date.now() > end) {
      const shown = (value as { body_?: unknown } | undefined)?.body_ ?? value;
      throw new Error(`condition not met: ${JSON.stringify(shown)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
