/**
 * Part of `npm run bench:crypto`: this package's own work for one workflow of `npm run bench` (one
 * start, three activities), without Temporal, so without its noise. Each side runs through the
 * plugin's real interceptors and is compared with the same call without them:
 * - edge: the client interceptor's start (context from `runAsUser`, token issue with pseudonyms,
 *   mirror options, header, audit record) against calling `next` directly;
 * - worker: three activity executions through the activity guard (header decode, one cold and two
 *   cached verifications, scope, audit records) against the same activity without the guard, in the
 *   same activity context.
 * Each worker iteration gets a token issued for a workflow of its own beforehand, so that every
 * iteration pays one cold open, as a workflow does.
 */
import { randomUUID } from 'node:crypto';
import { Context, asyncLocalStorage } from '@temporalio/activity';
import type { ClientOptions, WorkflowClientInterceptor, WorkflowStartInput } from '@temporalio/client';
import type { Headers } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { ActivityInboundCallsInterceptor, WorkerOptions } from '@temporalio/worker';
import {
  KeyRing,
  ORIGINATOR_HEADER,
  UserContextPlugin,
  currentUserContext,
  decodeHeader,
  encodeHeader,
  runAsUser,
  type KeySetJson,
} from 'temporal-user-context';

type Interleaved = (
  fns: Array<() => unknown>,
  n?: number,
  batches?: number,
) => Promise<{ us: number[]; overFirst: number[] }>;

const user = { userId: 'bench-user', workspaceId: 'ws-bench', roles: ['member'] };
const audit = { emit: () => undefined }; // the sink's own cost is the application's choice
// What `npm run bench` runs as `candidate`: both mirrors, no payload codec.
const mirror = { memo: 'pseudonym', searchAttributes: 'pseudonym' } as const;

/** µs per workflow of this package's work at the edge and on the worker (medians, interleaved). */
export async function workflowPath(
  keys: { edge: KeySetJson; worker: KeySetJson },
  interleaved: Interleaved,
): Promise<{ edgeUs: number; workerUs: number }> {
  const edge = new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit, mirror, codec: false });
  const client = edge.configureClient({ namespace: 'default' } as ClientOptions);
  const starter = (client.interceptors?.workflow as WorkflowClientInterceptor[])[0]!;
  const worker = new UserContextPlugin({ keys: KeyRing.fromJSON(keys.worker), audit, mirror, codec: false });
  const guardOf = worker.configureWorker({ namespace: 'default', taskQueue: 'bench' } as WorkerOptions)
    .interceptors!.activity![0]!;

  const startInput = (): WorkflowStartInput => ({
    workflowType: 'threeSteps',
    headers: {},
    options: { taskQueue: 'bench', workflowId: `b-${randomUUID()}`, args: ['x'] },
  });
  let started: WorkflowStartInput | undefined;
  const next = async (input: WorkflowStartInput) => {
    started = input;
    return { runId: 'r', eagerlyStarted: false };
  };
  const startBare = () => runAsUser(user, () => next(startInput()));
  const startOurs = () => runAsUser(user, () => starter.startWithDetails!(startInput(), next));

  // One workflow per worker iteration: its start header as the workflow interceptor forwards it to
  // activities (with lineage), and an activity context naming it.
  const runs: Array<{ headers: Headers; context: Context }> = [];
  const workflowFor = async () => {
    await startOurs();
    const { workflowId } = started!.options;
    const header = decodeHeader(started!.headers, ORIGINATOR_HEADER)!;
    // What the workflow interceptor states for a token that binds its start (`b`): the root's type and
    // task queue, as workflowInfo() gives them.
    const lin = {
      root: workflowId,
      start: Date.now(),
      wf: workflowId,
      ...(header.b === 1 ? { wt: started!.workflowType, tq: started!.options.taskQueue } : {}),
    };
    return {
      headers: { [ORIGINATOR_HEADER]: encodeHeader({ ...header, lin }) },
      context: new MockActivityEnvironment({
        workflowExecution: { workflowId, runId: 'r' },
        workflowType: 'threeSteps',
        activityType: 'step',
      }).context,
    };
  };
  const n = 100;
  const batches = 15;
  for (let i = 0; i < (batches + 1) * n; i++) runs.push(await workflowFor());
  let bareAt = 0;
  let oursAt = 0;
  const step = async (value: string, i: number) => `${value}.${i}:${Context.current().info.attempt}`;
  const stepAsUser = async (value: string, i: number) => {
    if (currentUserContext().userId !== user.userId) throw new Error('not the benchmark user');
    return `${value}.${i}:${Context.current().info.attempt}`;
  };
  const activitiesBare = async () => {
    const { context } = runs[bareAt++ % runs.length]!;
    let value = 'x';
    for (let i = 0; i < 3; i++) value = await asyncLocalStorage.run(context, () => step(value, i));
  };
  const activitiesOurs = async () => {
    const { headers, context } = runs[oursAt++ % runs.length]!;
    let value = 'x';
    for (let i = 0; i < 3; i++) {
      // The worker calls the interceptor factory for every activity execution.
      const guard = guardOf(context).inbound as ActivityInboundCallsInterceptor;
      const v = value;
      value = (await asyncLocalStorage.run(context, () =>
        guard.execute!({ args: [v, i], headers }, () => stepAsUser(v, i)),
      )) as string;
    }
  };

  const edgeUs = await interleaved([startBare, startOurs], n, batches);
  const workerUs = await interleaved([activitiesBare, activitiesOurs], n, batches);
  return {
    edgeUs: edgeUs.us[1]! - edgeUs.us[0]!,
    workerUs: workerUs.us[1]! - workerUs.us[0]!,
  };
}
