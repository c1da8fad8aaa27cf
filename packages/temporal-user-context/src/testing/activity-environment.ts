import { randomUUID } from 'node:crypto';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { Logger } from '@temporalio/common';
import type { ActivityInterceptorsFactory, WorkerOptions } from '@temporalio/worker';
import type { AuditSink } from '../audit/event.js';
import { memoryAuditSink } from '../audit/sinks.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { parseUserContext, type UserContext } from '../context/schema.js';
import { generateKeySet, workerKeySet } from '../crypto/generate.js';
import { issueContextToken } from '../crypto/issue.js';
import type { KeySetJson } from '../crypto/key-set.js';
import { KeyRing } from '../crypto/keyring.js';
import { ACTOR_HEADER, ORIGINATOR_HEADER, encodeHeader } from '../header/wire.js';
import { UserContextPlugin, type UserContextPluginOptions } from '../plugin.js';

/** Options of {@link userActivityEnvironment}. */
export interface UserActivityEnvironmentOptions {
  /** Who the activities run as: the originator a workflow of this user would carry. */
  user?: UserContext;
  /**
   * With `user`: the sender of the signal or update whose handler scheduled the activities, as
   * `currentActor()` and `withCurrentUserScope(db, fn, { as: 'actor' })` see it (verified by the real
   * guard: one of another workspace is refused there, as on a worker).
   */
  actor?: UserContext;
  /**
   * The call the actor sent, as the plugin names it: `signal:<name>` or `update:<name>` (default
   * `signal:testSignal`); what its token binds.
   */
  call?: string;
  /**
   * `true`, instead of `user`: the activities get no user context, as a workflow's system activity
   * would. The guard refuses them (`USER_CONTEXT_MISSING`) unless `info.activityType` is allow-listed in
   * `plugin.systemActivities`, where `resolveUserContext({ system })` then runs them as a system
   * principal. Said explicitly, so that a test whose user is `undefined` by mistake does not pass as a
   * system activity.
   */
  system?: boolean;
  /**
   * An edge key set (with the private signing key) to issue the token with; the activities are
   * verified with its worker half. Default: a fresh set made for this environment.
   */
  keys?: KeySetJson;
  /** Activity info (SDK defaults otherwise); its workflow id and namespace are what the token binds. */
  info?: Partial<Info>;
  /** The worker plugin's options (the keys are this helper's; audit sinks given are added to its own). */
  plugin?: Omit<Partial<UserContextPluginOptions>, 'keys'>;
  /**
   * The mock environment's logger (the SDK's default logs every failed activity, refusals included,
   * with its stack).
   */
  logger?: Logger;
}

/** What {@link userActivityEnvironment} returns. */
export interface UserActivityEnvironment {
  /**
   * The SDK's mock environment: `env.run(activity, ...args)` runs it behind this plugin's guard. Run one
   * activity at a time: the SDK's mock reuses one activity `Context` for every run, and the activity's
   * scope is the Context's, so overlapping runs share one scope and the first to end closes it for the
   * others (`USER_CONTEXT_MISSING`). For concurrent activities, make an environment each.
   */
  env: MockActivityEnvironment;
  /** Every audit record the guard (and `withUserScope` inside the activity) emitted. */
  audit: ReturnType<typeof memoryAuditSink>;
}

/**
 * A `MockActivityEnvironment` (`@temporalio/testing`) whose activities run as `user`, for unit tests of
 * activities that call `currentUserContext()`, `resolveUserContext()` or `withCurrentUserScope()`.
 *
 * Nothing is faked on the plugin's side: a real context token is issued for the activity's workflow
 * with the edge key set, sent in the header a workflow of this plugin would send, and checked by the
 * plugin's real activity guard with the worker key set, which audits as in production. Issuing needs
 * the private signing key, so this helper gives no power that key does not already give; keep test key
 * sets apart from production ones.
 *
 * @example
 * const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
 * const { env } = await userActivityEnvironment({ user: alice });
 * expect(await env.run(buildAgentConfig, agentId)).toMatchObject({ workspaceId: 'ws-acme' });
 */
export async function userActivityEnvironment(
  options: UserActivityEnvironmentOptions,
): Promise<UserActivityEnvironment> {
  const edge = options.keys ?? generateKeySet('test-edge').edge;
  const workflowId = options.info?.workflowExecution?.workflowId ?? `test-workflow-${randomUUID()}`;
  const runId = options.info?.workflowExecution?.runId ?? randomUUID();
  const namespace = options.info?.workflowNamespace ?? 'default';
  if ((options.user === undefined) !== (options.system === true))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'userActivityEnvironment: give either user or system: true',
    );
  // As runAsUser does at the edge: a context outside the documented format is refused here.
  const user = options.user === undefined ? undefined : parseUserContext(options.user);
  // Bound to a start as the edge binds every start (check 10), so that a plugin requiring bound tokens
  // (`verifier.requireBoundTokens`) takes it too.
  const start = {
    workflowType: options.info?.workflowType ?? 'TestWorkflow',
    taskQueue: options.info?.taskQueue ?? 'test',
  };
  // The edge set is checked (a worker's set is refused) whether or not a token is issued with it.
  const edgeRing = KeyRing.fromJSON(edge);
  if (!edgeRing.activeSigningKey())
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'userActivityEnvironment: keys must be an edge key set (with the private signing key)',
    );
  // What this plugin's workflow interceptors send an activity: the token and the lineage facts.
  const headers: Record<string, ReturnType<typeof encodeHeader>> = {};
  if (options.actor !== undefined && user === undefined)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "userActivityEnvironment: an actor acts in a user's lineage: give user too",
    );
  if (user) {
    const { header } = await issueContextToken(edgeRing, user, {
      namespace,
      use: 'start',
      workflowId,
      boundStart: start,
    });
    const lin = {
      root: workflowId,
      start: Date.now(),
      wf: workflowId,
      wt: start.workflowType,
      tq: start.taskQueue,
    };
    headers[ORIGINATOR_HEADER] = encodeHeader({ ...header, lin });
    if (options.actor !== undefined) {
      // As a handler of this plugin sends it: the actor's token for its call, and the lineage stating
      // the call the handler runs for.
      const call = options.call ?? 'signal:testSignal';
      if (!/^(signal|update):./.test(call))
        throw new UserContextError(
          ErrorCodes.MISCONFIGURED,
          'userActivityEnvironment: call is signal:<name> or update:<name>',
        );
      const actor = await issueContextToken(edgeRing, parseUserContext(options.actor), {
        namespace,
        use: 'actor',
        workflowId,
        call,
      });
      headers[ACTOR_HEADER] = encodeHeader({ ...actor.header, lin: { ...lin, hn: call } });
    }
  }
  const audit = memoryAuditSink();
  const plugin = new UserContextPlugin({
    codec: false,
    ...options.plugin,
    // Sinks the test gives are added to the helper's, which the returned `audit` reads.
    audit: [audit, ...([] as AuditSink[]).concat(options.plugin?.audit ?? [])],
    keys: KeyRing.fromJSON(workerKeySet(edge)),
  });
  const configured = plugin.configureWorker({ namespace, taskQueue: 'test' } as WorkerOptions);
  // `MockActivityEnvironment.run` sends no headers: an outer interceptor adds the workflow's.
  const sendHeaders: ActivityInterceptorsFactory = () => ({
    inbound: { execute: (input, next) => next({ ...input, headers: { ...input.headers, ...headers } }) },
  });
  const env = new MockActivityEnvironment(
    {
      ...options.info,
      workflowNamespace: namespace,
      workflowExecution: { workflowId, runId },
      inWorkflow: true,
    },
    {
      interceptors: [sendHeaders, ...(configured.interceptors?.activity ?? [])],
      ...(options.logger ? { logger: options.logger } : {}),
    },
  );
  return { env, audit };
}
