import {
  ScheduleClient,
  WorkflowClient,
  type WorkflowClientInterceptor,
  type WorkflowClientOptions,
} from '@temporalio/client';
import { Auditor, memoryAuditSink, type KeyRing, type MirrorOptions } from '../../src/index.js';
import { ContextSource } from '../../src/client/source.js';
import {
  UserContextScheduleClientInterceptor,
  UserContextWorkflowClientInterceptor,
} from '../../src/client/interceptors.js';

/** An edge's context source on `ring`, without mirrors unless given, auditing into memory. */
export function edgeSource(
  ring: KeyRing,
  options: { bindStartArguments?: boolean; mirror?: MirrorOptions } = {},
) {
  const audit = memoryAuditSink();
  const source = new ContextSource({
    ring,
    namespace: 'default',
    auditor: new Auditor([audit]),
    mirror: options.mirror ?? { memo: 'off', searchAttributes: 'off' },
    ...(options.bindStartArguments !== undefined ? { bindStartArguments: options.bindStartArguments } : {}),
  });
  return { source, audit };
}

/**
 * Workflow and schedule clients with the plugin's interceptors on `ring`, whose server calls record
 * their requests in `sent` and fail; `inner` runs inside the plugin's workflow interceptor.
 */
export function recordingClients(
  ring: KeyRing,
  options: { inner?: WorkflowClientInterceptor; mirror?: MirrorOptions } = {},
) {
  const { source, audit } = edgeSource(ring, options.mirror ? { mirror: options.mirror } : {});
  const sent: unknown[] = [];
  const reached = (request: unknown) => {
    sent.push(request);
    return Promise.reject(new Error('reached the server'));
  };
  const connection = {
    workflowService: {
      startWorkflowExecution: reached,
      signalWithStartWorkflowExecution: reached,
      executeMultiOperation: reached,
      createSchedule: reached,
    },
    withDeadline: (_deadline: unknown, fn: () => unknown) => fn(),
  } as unknown as WorkflowClientOptions['connection'];
  const client = new WorkflowClient({
    connection,
    interceptors: [
      new UserContextWorkflowClientInterceptor(source),
      ...(options.inner ? [options.inner] : []),
    ],
  });
  const schedules = new ScheduleClient({
    connection,
    interceptors: [new UserContextScheduleClientInterceptor(source, true)],
  });
  return { client, schedules, sent, audit };
}
