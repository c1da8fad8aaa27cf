import type {} from './global-setup.js';
import { randomUUID } from 'node:crypto';
import { Client, Connection, type ClientOptions, type WorkflowHandle } from '@temporalio/client';
import {
  ApplicationFailure,
  SearchAttributeType,
  defineSearchAttributeKey,
  type Payload,
} from '@temporalio/common';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { inject } from 'vitest';
import {
  KeyRing,
  ORIGINATOR_HEADER,
  decodeHeader,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
  workerKeySet,
  type KeySetJson,
  type UserContextPluginOptions,
} from 'temporal-user-context';

export interface Harness {
  taskQueue: string;
  namespace: string;
  edgeRing: KeyRing;
  workerRing: KeyRing;
  /** Client with the plugin and the edge ring (like the API). */
  client: Client;
  /** Client with no plugin: an attacker with namespace write access, or the CLI. */
  rawClient: Client;
  audit: ReturnType<typeof memoryAuditSink>;
  worker: Worker;
  connection: Connection;
  nativeConnection: NativeConnection;
  stop(): Promise<void>;
}

/**
 * Connects to the run's Temporal server (started in global setup), starts a worker with the plugin and
 * a worker key ring, and returns an edge client and a raw client.
 */
export async function startHarness(options: {
  workflowsPath: string;
  activities: object;
  plugin?: Partial<UserContextPluginOptions>;
  worker?: Partial<WorkerOptions>;
  /** A fixed key set (edge view); default: a fresh one. */
  keys?: KeySetJson;
  /**
   * The client's and the worker's plugin lists around this plugin (default: this plugin alone), to run
   * it beside other plugins, in a given order.
   */
  plugins?: {
    client(ours: UserContextPlugin): NonNullable<ClientOptions['plugins']>;
    worker(ours: UserContextPlugin): NonNullable<WorkerOptions['plugins']>;
  };
}): Promise<Harness> {
  const address = inject('temporalAddress');
  const namespace = inject('temporalNamespace');
  const taskQueue = `tq-${randomUUID()}`;
  const edgeKeys = options.keys ?? generateKeySet('test-edge').edge;
  const edgeRing = KeyRing.fromJSON(edgeKeys);
  const workerRing = KeyRing.fromJSON(workerKeySet(edgeKeys));
  const audit = memoryAuditSink();
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  const edgePlugin = new UserContextPlugin({ keys: edgeRing, audit, ...options.plugin });
  const client = new Client({
    connection,
    namespace,
    plugins: options.plugins?.client(edgePlugin) ?? [edgePlugin],
  });
  const workerPlugin = new UserContextPlugin({ keys: workerRing, audit, ...options.plugin });
  // The attacker's client: no plugin, no context, but (worst case) holding the payload codec key, so
  // that the refusals tested are the context's own and not the codec's.
  const dataConverter = workerPlugin.codec ? { payloadCodecs: [workerPlugin.codec] } : {};
  const rawClient = new Client({ connection, namespace, dataConverter });
  const worker = await Worker.create({
    connection: nativeConnection,
    namespace,
    taskQueue,
    workflowsPath: options.workflowsPath,
    activities: options.activities,
    plugins: options.plugins?.worker(workerPlugin) ?? [workerPlugin],
    ...options.worker,
  });
  const running = worker.run();
  return {
    taskQueue,
    namespace,
    edgeRing,
    workerRing,
    client,
    rawClient,
    audit,
    worker,
    connection,
    nativeConnection,
    async stop() {
      worker.shutdown();
      await running;
      await connection.close();
      try {
        await nativeConnection.close();
      } finally {
        // SDK 1.24 leaves a closed NativeConnection's AsyncLocalStorage enabled, taxing every later
        // promise in this process (bench/propagation.ts has the numbers); also when close() fails.
        nativeConnection.callContextStorage.disable();
      }
    },
  };
}

export const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
export const bob = { userId: 'bob', workspaceId: 'ws-globex', roles: ['admin'] };
export const carol = { userId: 'carol', workspaceId: 'ws-acme', roles: ['admin'] };

/** A client with no plugin that writes the given raw headers on start: the attacker's tool. */
export function headerWritingClient(h: Harness, headers: Record<string, Payload>): Client {
  return new Client({
    connection: h.connection,
    namespace: h.namespace,
    dataConverter: h.rawClient.options.dataConverter,
    interceptors: {
      workflow: [
        {
          start: (input, next) => next({ ...input, headers: { ...input.headers, ...headers } }),
          signal: (input, next) => next({ ...input, headers: { ...input.headers, ...headers } }),
          query: (input, next) => next({ ...input, headers: { ...input.headers, ...headers } }),
        },
      ],
    },
  });
}

/** `TemporalScheduledById`: the server sets it on scheduled runs, and a client may set it too. */
export const SCHEDULED_BY_ID = defineSearchAttributeKey('TemporalScheduledById', SearchAttributeType.KEYWORD);

/**
 * A client that starts workflows with the originator header copied from the start event of
 * `workflowId`: what anyone who can read history and start workflows can do.
 */
export async function copiedStartHeaderClient(h: Harness, workflowId: string): Promise<Client> {
  const history = await h.rawClient.workflow.getHandle(workflowId).fetchHistory();
  const header =
    history.events?.[0]?.workflowExecutionStartedEventAttributes?.header?.fields?.[ORIGINATOR_HEADER];
  if (!header) throw new Error(`${workflowId} started without a ${ORIGINATOR_HEADER} header`);
  return headerWritingClient(h, { [ORIGINATOR_HEADER]: header });
}

/** Awaits a workflow result and returns the `type` of the first ApplicationFailure in its causes. */
export async function failureTypeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    for (let e = err as { type?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
      if (e instanceof ApplicationFailure) return e.type ?? undefined;
    }
    throw err;
  }
}

/** Waits until schedule `scheduleId` has taken `n` actions and returns the n-th run's workflow id. */
export async function nthScheduledRun(client: Client, scheduleId: string, n: number): Promise<string> {
  const handle = client.schedule.getHandle(scheduleId);
  for (let i = 0; i < 100; i++) {
    const actions = (await handle.describe()).info.recentActions;
    if (actions.length >= n) return actions[n - 1]!.action.workflow.workflowId;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`schedule ${scheduleId} did not run ${n} time(s)`);
}

/**
 * What an attacker who can read history makes of a run (`victim`): its start header with `lin` facts
 * naming it (serialised), and, when `eventId` is given, a `nexus-link` naming that event of the run.
 */
export async function forgeryOf(
  h: Harness,
  victim: WorkflowHandle,
  eventId?: number,
): Promise<{ header: string; link?: string }> {
  const history = await victim.fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const header = decodeHeader(started?.header?.fields ?? {}, ORIGINATOR_HEADER)!;
  const { runId, startTime } = await victim.describe();
  const id = victim.workflowId;
  // How the victim started, as its history shows it (and its workflow code states it).
  const lin = {
    root: id,
    start: startTime.getTime(),
    wf: id,
    wt: started?.workflowType?.name ?? '',
    tq: started?.taskQueue?.name ?? '',
  };
  return {
    header: JSON.stringify({ ...header, lin }),
    ...(eventId === undefined
      ? {}
      : {
          link:
            `<temporal:///namespaces/${h.namespace}/workflows/${id}/${runId}/history` +
            `?referenceType=EventReference&eventID=${eventId}&eventType=NexusOperationScheduled>; ` +
            `type="temporal.api.common.v1.Link.WorkflowEvent"`,
        }),
  };
}
