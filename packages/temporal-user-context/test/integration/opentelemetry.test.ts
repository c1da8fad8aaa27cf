// Beside the OpenTelemetry plugin: both plugins' headers travel side by side on every boundary, and
// neither plugin's checks or traces are lost to the other's.
import { randomUUID } from 'node:crypto';
import * as otel from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { Client, WorkflowUpdateFailedError } from '@temporalio/client';
import { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, runAsUser, type UserContext } from 'temporal-user-context';
import {
  alice,
  bob,
  carol,
  failureTypeOf,
  startHarness,
  type Harness,
} from '../../../../test-support/harness.js';
import * as activities from '../fixtures/activities.js';
import { fixtureWorkflowsPath } from '../fixtures/harness.js';
import { whoHandler } from '../fixtures/nexus-handler.js';

const spans = new InMemorySpanExporter();
const resource = new Resource({ 'service.name': 'user-context-test' });
const provider = new BasicTracerProvider({ resource });
provider.addSpanProcessor(new SimpleSpanProcessor(spans));

beforeAll(() => {
  // The client's and the activities' spans use the process's global tracer, propagator and context
  // manager, as in an instrumented application; the workflows' spans reach `spans` through the plugin's sink.
  provider.register({
    contextManager: new AsyncLocalStorageContextManager(),
    propagator: new W3CTraceContextPropagator(),
  });
});
afterAll(async () => {
  await provider.shutdown();
  otel.trace.disable();
  otel.context.disable();
  otel.propagation.disable();
});

const tracing = () => new OpenTelemetryPlugin({ resource, spanProcessor: new SimpleSpanProcessor(spans) });

/** The spans of the trace that the span named `root` for `workflowId` began, once it holds `expected`. */
async function traceOf(root: string, workflowId: string, expected: string[]): Promise<ReadableSpan[]> {
  return vi.waitFor(
    () => {
      const finished = spans.getFinishedSpans();
      const start = finished.find(
        (s: ReadableSpan) => s.name === root && s.attributes['temporalWorkflowId'] === workflowId,
      );
      expect(start).toBeDefined();
      const trace = finished.filter((s) => s.spanContext().traceId === start!.spanContext().traceId);
      expect(trace.map((s) => s.name)).toEqual(expect.arrayContaining(expected));
      return trace;
    },
    { timeout: 10_000 },
  );
}

// On a worker, in either order: this plugin's workflow module is always the innermost (see
// `configureBundler`), so a refused run's workflow span records the refusal either way. On a client, this
// plugin comes last (listed before a plugin with client interceptors it is refused: see
// unit/plugin-options.test.ts, "beside another SimplePlugin on a Client").
describe.each([
  ['after', (ours: unknown) => [tracing(), ours]],
  ['before', (ours: unknown) => [ours, tracing()]],
] as const)('on the worker, this plugin %s the OpenTelemetry plugin', (_order, arrange) => {
  let h: Harness;
  let endpoint: string;
  let removeEndpoint: () => Promise<unknown>;

  beforeAll(async () => {
    h = await startHarness({
      workflowsPath: fixtureWorkflowsPath,
      activities,
      worker: { nexusServices: [whoHandler] },
      // Nexus results come back namespace-bound: the SDK gives Nexus handlers no workflow context.
      plugin: { codec: { acceptNamespaceBound: true } },
      plugins: { client: (ours) => [tracing(), ours], worker: (ours) => arrange(ours) as never },
    });
    endpoint = `who-otel-${randomUUID().slice(0, 8)}`;
    const created = await h.connection.operatorService.createNexusEndpoint({
      spec: { name: endpoint, target: { worker: { namespace: h.namespace, taskQueue: h.taskQueue } } },
    });
    removeEndpoint = () =>
      h.connection.operatorService.deleteNexusEndpoint({
        id: created.endpoint!.id!,
        version: created.endpoint!.version as never,
      });
  });
  afterAll(async () => {
    await removeEndpoint?.().catch(() => undefined);
    await h?.stop();
  });

  it.each([
    ['viaActivity', [], ['RunWorkflow:viaActivity', 'StartActivity:whoami', 'RunActivity:whoami']],
    ['viaLocalActivity', [], ['RunWorkflow:viaLocalActivity', 'StartActivity:whoami', 'RunActivity:whoami']],
    [
      'viaChild',
      [],
      [
        'RunWorkflow:viaChild',
        'StartChildWorkflow:viaActivity',
        'RunWorkflow:viaActivity',
        'RunActivity:whoami',
      ],
    ],
    [
      'viaContinueAsNew',
      [0],
      ['RunWorkflow:viaContinueAsNew', 'ContinueAsNew:viaContinueAsNew', 'RunActivity:whoami'],
    ],
  ] as const)('%s reaches the activity as the originator, in one trace', async (type, args, expected) => {
    const workflowId = `otel-${type}-${randomUUID()}`;
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute(type, { taskQueue: h.taskQueue, workflowId, args: [...args] }),
    );
    expect(result).toEqual(alice);
    await traceOf(`StartWorkflow:${type}`, workflowId, [...expected]);
  });

  it('a Nexus operation runs as the caller, in the caller’s trace', async () => {
    const workflowId = `otel-nexus-${randomUUID()}`;
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute('viaNexus', { taskQueue: h.taskQueue, workflowId, args: [endpoint] }),
    );
    expect(result).toEqual(alice);
    await traceOf('StartWorkflow:viaNexus', workflowId, [
      'RunWorkflow:viaNexus',
      'StartNexusOperation:who/whoami',
      'RunStartNexusOperation:who/whoami',
    ]);
  });

  it('the actor policy still admits a colleague and refuses another workspace', async () => {
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `otel-int-${randomUUID()}`,
      }),
    );
    expect(await runAsUser(carol, () => handle.executeUpdate('note', { args: ['hi'] }))).toBe('alice');
    const refused = await runAsUser(bob, () => handle.executeUpdate('note', { args: ['x'] })).catch((e) => e);
    expect(refused).toBeInstanceOf(WorkflowUpdateFailedError);
    expect((refused as WorkflowUpdateFailedError).cause).toMatchObject({ type: ErrorCodes.ACTOR_FORBIDDEN });
    await runAsUser(carol, () => handle.signal('go', 'now'));
    const outcome = (await handle.result()) as { notes: string[]; actorVerified: UserContext };
    expect(outcome).toMatchObject({ notes: ['update:hi:alice', 'signal:now'], actorVerified: carol });
  });

  it('a client with only the OpenTelemetry plugin is refused: a trace header is not a context', async () => {
    const traced = new Client({
      connection: h.connection,
      namespace: h.namespace,
      plugins: [tracing()],
      dataConverter: h.rawClient.options.dataConverter,
    });
    const workflowId = `otel-raw-${randomUUID()}`;
    const code = await failureTypeOf(
      traced.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }),
    );
    expect(code).toBe(ErrorCodes.MISSING);
    // The client traced its call; the worker's span of the refused run is in that trace and records the
    // refusal (this plugin's workflow interceptors are inside the OpenTelemetry plugin's).
    const trace = await traceOf('StartWorkflow:viaActivity', workflowId, ['RunWorkflow:viaActivity']);
    const run = trace.find((s) => s.name === 'RunWorkflow:viaActivity');
    expect(run?.status).toMatchObject({ code: otel.SpanStatusCode.ERROR });
    expect(run?.status.message).toContain('USER_CONTEXT_MISSING');
  });
});
