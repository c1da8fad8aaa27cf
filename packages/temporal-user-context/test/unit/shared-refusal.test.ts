// One refusal object shared by concurrent activities (the verifier's cache hands every caller waiting on
// a token the same rejection) is on record once per activity: each activity's mark is kept.
import { MockActivityEnvironment } from '@temporalio/testing';
import type { ActivityInterceptorsFactory, WorkerOptions } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  currentActor,
  generateKeySet,
  issueContextToken,
  memoryAuditSink,
  parseUserContext,
  workerKeySet,
} from '../../src/index.js';
import { ACTOR_HEADER, ORIGINATOR_HEADER, encodeHeader } from '../../src/header/wire.js';

const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };

describe('a refusal shared by concurrent activities', () => {
  it('is recorded once by each, never again as refused by the handler’s code', async () => {
    // Found by review: the second activity's mark replaced the first's, which recorded it again.
    const edge = generateKeySet('shared-refusal').edge;
    const wf = 'wf-1';
    const { header } = await issueContextToken(KeyRing.fromJSON(edge), alice, {
      namespace: 'default',
      use: 'start',
      workflowId: wf,
      boundStart: { workflowType: 'T', taskQueue: 'test' },
    });
    // An actor token sealed under keys this worker does not hold: both activities' lookups share one
    // refusal (USER_CONTEXT_KEY_UNKNOWN).
    const actor = await issueContextToken(KeyRing.fromJSON(generateKeySet('elsewhere').edge), alice, {
      namespace: 'default',
      use: 'actor',
      workflowId: wf,
      call: 'signal:s',
    });
    const lin = { root: wf, start: Date.now(), wf, wt: 'T', tq: 'test' };
    const headers = {
      [ORIGINATOR_HEADER]: encodeHeader({ ...header, lin }),
      [ACTOR_HEADER]: encodeHeader({ ...actor.header, lin: { ...lin, hn: 'signal:s' } }),
    };
    const audit = memoryAuditSink();
    const plugin = new UserContextPlugin({
      codec: false,
      audit: [audit],
      keys: KeyRing.fromJSON(workerKeySet(edge)),
    });
    const configured = plugin.configureWorker({ namespace: 'default', taskQueue: 'test' } as WorkerOptions);
    const send: ActivityInterceptorsFactory = () => ({
      inbound: { execute: (input, next) => next({ ...input, headers: { ...input.headers, ...headers } }) },
    });
    const environment = (activityId: string) =>
      new MockActivityEnvironment(
        {
          workflowNamespace: 'default',
          workflowExecution: { workflowId: wf, runId: 'r1' },
          inWorkflow: true,
          activityId,
        } as ConstructorParameters<typeof MockActivityEnvironment>[0],
        {
          interceptors: [send, ...(configured.interceptors?.activity ?? [])],
          logger: quiet as never,
        },
      );
    const act = async () => {
      currentActor();
      return 'ran';
    };
    const outcomes = await Promise.allSettled([environment('a1').run(act), environment('a2').run(act)]);
    expect(
      outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { type?: string }).type : o.value)),
    ).toEqual([ErrorCodes.KEY_UNKNOWN, ErrorCodes.KEY_UNKNOWN]);
    const refusals = audit.events.filter((e) => e.decision === 'deny');
    expect(refusals.map((e) => [e.activityId, e.action, e.reason]).sort()).toEqual([
      ['a1', 'activity.actor', ErrorCodes.KEY_UNKNOWN],
      ['a2', 'activity.actor', ErrorCodes.KEY_UNKNOWN],
    ]);
  });
});
