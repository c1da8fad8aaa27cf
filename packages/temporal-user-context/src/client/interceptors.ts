import type {
  ActivityClientInterceptor,
  ActivityStartInput,
  CompiledWorkflowOptions,
  CreateScheduleInput,
  CreateScheduleOutput,
  Next,
  NexusClientInterceptor,
  ScheduleClientInterceptor,
  StartNexusOperationInput,
  WorkflowCancelInput,
  WorkflowClientInterceptor,
  WorkflowQueryInput,
  WorkflowSignalInput,
  WorkflowSignalWithStartInput,
  WorkflowStartInput,
  WorkflowStartOutput,
  WorkflowStartUpdateInput,
  WorkflowStartUpdateOutput,
  WorkflowStartUpdateWithStartInput,
  WorkflowStartUpdateWithStartOutput,
  WorkflowTerminateInput,
} from '@temporalio/client';
import type { Headers } from '@temporalio/common';
import { msOptionalToNumber, optionalTsToMs } from '@temporalio/common/lib/time.js';
import type { BoundStart } from '../crypto/claims.js';
import { ACTOR_HEADER, ORIGINATOR_HEADER, withHeader } from '../header/wire.js';
import { releaseRecords, type ActorCall, type ContextSource, type HeldRecords } from './source.js';
import { mirrorOptions } from './mirror.js';

/**
 * When a start runs: its cron schedule and delay (ms), and whether it has a retry policy, which its token
 * binds so that a copy of it cannot add them (check 10): each would run the user's workflow later.
 */
function timing(
  options: CompiledWorkflowOptions,
): Pick<BoundStart, 'cronSchedule' | 'startDelayMs' | 'retried'> {
  // Whole milliseconds, floored as workers read the server's record of it.
  const delay = Math.floor(optionalTsToMs(options.startDelay) ?? 0);
  return {
    ...(options.cronSchedule ? { cronSchedule: options.cronSchedule } : {}),
    ...(delay ? { startDelayMs: delay } : {}),
    ...(options.retry ? { retried: true } : {}),
  };
}

/** How a start is bound into its token: its workflow type, task queue, arguments and timing. */
function boundStart(workflowType: string, options: CompiledWorkflowOptions): BoundStart {
  return { workflowType, taskQueue: options.taskQueue, args: options.args ?? [], ...timing(options) };
}

/** The id policies a start gives, for its audit record (undefined when it gives none). */
function idPolicies(options: CompiledWorkflowOptions): string | undefined {
  const given = [
    options.workflowIdConflictPolicy === undefined
      ? undefined
      : `id conflict policy ${String(options.workflowIdConflictPolicy)}`,
    options.workflowIdReusePolicy === undefined
      ? undefined
      : `id reuse policy ${String(options.workflowIdReusePolicy)}`,
  ].filter((part) => part !== undefined);
  return given.length > 0 ? given.join('; ') : undefined;
}

/**
 * Client interceptors: every call that the server can attach a header to carries a context from the
 * {@link ContextSource} (the edge user in scope, or the activity being run on a worker). A call with
 * no context in scope is refused before it reaches the server. A start's token binds the workflow id,
 * type, task queue and (unless `bindStartArguments: false`) arguments it starts with; an actor's token
 * binds its call: `signal:`, `update:` or `query:` and the call's name.
 */
export class UserContextWorkflowClientInterceptor implements WorkflowClientInterceptor {
  constructor(private readonly source: ContextSource) {}

  private async actorHeaders(headers: Headers, call: ActorCall): Promise<Headers> {
    return withHeader(headers, ACTOR_HEADER, await this.source.forActor(call));
  }

  async start(input: WorkflowStartInput, next: Next<WorkflowClientInterceptor, 'start'>): Promise<string> {
    return next(await this.prepareStart(input, 'client.start'));
  }

  async startWithDetails(
    input: WorkflowStartInput,
    next: Next<WorkflowClientInterceptor, 'startWithDetails'>,
  ): Promise<WorkflowStartOutput> {
    return next(await this.prepareStart(input, 'client.start'));
  }

  private async prepareStart(input: WorkflowStartInput, action: string): Promise<WorkflowStartInput> {
    // On record once what the call sends is ready: the mirror throws on search attributes the SDK
    // would refuse too (a key given twice), and that call is never sent.
    const held: HeldRecords = [];
    const { originator, context } = await this.source.forStart(
      input.options.workflowId,
      action,
      boundStart(input.workflowType, input.options),
      held,
      idPolicies(input.options),
    );
    const prepared = {
      ...input,
      headers: withHeader(input.headers, ORIGINATOR_HEADER, originator),
      options: mirrorOptions(input.options, context, originator, this.source.mirror),
    };
    releaseRecords(held);
    return prepared;
  }

  async signalWithStart(
    input: WorkflowSignalWithStartInput,
    next: Next<WorkflowClientInterceptor, 'signalWithStart'>,
  ): Promise<string> {
    // Both tokens issued and the options mirrored before either is on record as allowed: the call is
    // sent with both or not at all.
    const delayMs = optionalTsToMs(input.options.startDelay) ?? 0;
    this.source.refuseDelayedSignal('client.signalWithStart', input.options.workflowId, delayMs);
    const held: HeldRecords = [];
    const { originator, context } = await this.source.forStart(
      input.options.workflowId,
      'client.signalWithStart',
      boundStart(input.workflowType, input.options),
      held,
      idPolicies(input.options),
    );
    // One header set serves both the start and the signal: the starter is also the actor.
    const actor = await this.source.forActor({
      workflowId: input.options.workflowId,
      action: 'client.signalWithStart',
      call: `signal:${input.signalName}`,
      held,
      delayMs,
    });
    const headers = withHeader(withHeader(input.headers, ORIGINATOR_HEADER, originator), ACTOR_HEADER, actor);
    const options = mirrorOptions(input.options, context, originator, this.source.mirror);
    releaseRecords(held);
    return next({ ...input, headers, options });
  }

  async startUpdateWithStart(
    input: WorkflowStartUpdateWithStartInput,
    next: Next<WorkflowClientInterceptor, 'startUpdateWithStart'>,
  ): Promise<WorkflowStartUpdateWithStartOutput> {
    const workflowId = input.workflowStartOptions.workflowId;
    let prepared: WorkflowStartUpdateWithStartInput;
    // As for signalWithStart: nothing on record as allowed until both tokens are issued and the options
    // mirrored.
    const held: HeldRecords = [];
    try {
      const { originator, context } = await this.source.forStart(
        workflowId,
        'client.startUpdateWithStart',
        boundStart(input.workflowType, input.workflowStartOptions),
        held,
        idPolicies(input.workflowStartOptions),
      );
      prepared = {
        ...input,
        workflowStartHeaders: withHeader(input.workflowStartHeaders, ORIGINATOR_HEADER, originator),
        workflowStartOptions: mirrorOptions(
          input.workflowStartOptions,
          context,
          originator,
          this.source.mirror,
        ),
        updateHeaders: await this.actorHeaders(input.updateHeaders, {
          workflowId,
          action: 'client.startUpdateWithStart',
          call: `update:${input.updateName}`,
          held,
        }),
      };
    } catch (refusal) {
      return next(refusedInHandler(input, refusal));
    }
    releaseRecords(held);
    return next(prepared);
  }

  async signal(input: WorkflowSignalInput, next: Next<WorkflowClientInterceptor, 'signal'>): Promise<void> {
    const headers = await this.actorHeaders(input.headers, {
      workflowId: input.workflowExecution.workflowId,
      action: 'client.signal',
      call: `signal:${input.signalName}`,
      runId: input.workflowExecution.runId,
    });
    return next({ ...input, headers });
  }

  async startUpdate(
    input: WorkflowStartUpdateInput,
    next: Next<WorkflowClientInterceptor, 'startUpdate'>,
  ): Promise<WorkflowStartUpdateOutput> {
    const headers = await this.actorHeaders(input.headers, {
      workflowId: input.workflowExecution.workflowId,
      action: 'client.update',
      call: `update:${input.updateName}`,
      runId: input.workflowExecution.runId,
    });
    return next({ ...input, headers });
  }

  async query(input: WorkflowQueryInput, next: Next<WorkflowClientInterceptor, 'query'>): Promise<unknown> {
    const headers = await this.actorHeaders(input.headers, {
      workflowId: input.workflowExecution.workflowId,
      action: 'client.query',
      call: `query:${input.queryType}`,
      runId: input.workflowExecution.runId,
    });
    return next({ ...input, headers });
  }

  // Cancel and terminate carry no header to the server (the workflow sees no actor): audited here, so
  // that the trail says who asked.
  cancel(
    input: WorkflowCancelInput,
    next: Next<WorkflowClientInterceptor, 'cancel'>,
  ): ReturnType<Next<WorkflowClientInterceptor, 'cancel'>> {
    this.source.recordControl('client.cancel', input);
    return next(input);
  }

  terminate(
    input: WorkflowTerminateInput,
    next: Next<WorkflowClientInterceptor, 'terminate'>,
  ): ReturnType<Next<WorkflowClientInterceptor, 'terminate'>> {
    this.source.recordControl('client.terminate', input, input.reason);
    return next(input);
  }
}

/**
 * Schedules: `create` attaches a schedule-bound token to the schedule's workflow action; every run
 * the schedule starts carries it. Schedule updates keep the creator's headers (the TypeScript SDK's
 * `update()` copies them), so a schedule acts as its creator; to change who it acts for, delete and
 * re-create it. The token binds the action's workflow type, task queue and (unless
 * `bindScheduleArguments: false`) arguments: an update may change the schedule's spec and policies,
 * not what runs, where or with what (workers refuse such runs, check 7).
 * The creator is mirrored like a workflow start's originator, twice: on the schedule itself (so that
 * operators can list a user's schedules) and in its action (so that every run it starts shows it).
 */
export class UserContextScheduleClientInterceptor implements ScheduleClientInterceptor {
  /** @param bindArguments whether tokens bind the action's arguments (`bindScheduleArguments`). */
  constructor(
    private readonly source: ContextSource,
    private readonly bindArguments: boolean,
  ) {}

  async create(
    input: CreateScheduleInput,
    next: Next<ScheduleClientInterceptor, 'create'>,
  ): Promise<CreateScheduleOutput> {
    const { scheduleId, action } = input.options;
    // The action's workflow type, task queue and arguments are bound into the token: an update that
    // keeps the creator's header but runs another workflow type, on another queue or with other
    // arguments, is refused by workers. The SDK sends no arguments as an empty list.
    // On record once the mirrors are made, as for a start.
    const held: HeldRecords = [];
    const { spec } = input.options;
    const { originator, context, endAt } = await this.source.forSchedule(
      scheduleId,
      action.workflowId,
      'schedule.create',
      {
        workflowType: action.workflowType,
        taskQueue: action.taskQueue,
        ...(this.bindArguments ? { args: action.args ?? [] } : {}),
      },
      held,
      { startAt: spec.startAt, endAt: spec.endAt, jitterMs: msOptionalToNumber(spec.jitter) },
    );
    const mirror = this.source.mirror;
    const withAction = {
      ...input.options,
      // Ends inside its token's window: a schedule that fired on would start runs workers refuse.
      spec: { ...spec, endAt },
      action: mirrorOptions(action, context, originator, mirror),
    };
    const options = mirrorOptions(withAction, context, originator, mirror);
    releaseRecords(held);
    return next({ ...input, headers: withHeader(input.headers, ORIGINATOR_HEADER, originator), options });
  }
}

/**
 * Standalone activities and Nexus operations (SDK 1.24, started by a client without a workflow): with
 * no user in scope refused before the server, as every other call; else audited for the user, and sent
 * as they are (no token binds a call outside a workflow lineage; this plugin's workers refuse them).
 */
export function standaloneInterceptors(source: ContextSource): {
  activity: ActivityClientInterceptor;
  nexus: NexusClientInterceptor;
} {
  return {
    activity: {
      start(input: ActivityStartInput, next: Next<ActivityClientInterceptor, 'start'>) {
        source.recordStandalone('client.activity.start', {
          activityType: input.activityType,
          activityId: input.options.id,
          detail: `activity on ${input.options.taskQueue}`,
        });
        return next(input);
      },
    },
    nexus: {
      startOperation(input: StartNexusOperationInput, next: Next<NexusClientInterceptor, 'startOperation'>) {
        source.recordStandalone('client.nexus.start', {
          detail: `Nexus operation ${input.service}/${input.operation} (id ${input.id}) on endpoint ${input.endpoint}`,
        });
        return next(input);
      },
    },
  };
}

/**
 * An update-with-start input that the SDK's own handler refuses with `refusal` before it builds any
 * request. SDK 1.24 rejects the operation's `workflowHandle()` only from that handler (its `catch`
 * hands the error to the operation): refused before `next`, the call would reject and the handle never
 * settle, for a caller who awaits it "whether or not the update succeeds". The handler reads the
 * start options' `requestEagerStart` first thing inside its `try` (`createStartWorkflowRequest`), after
 * reading only `workflowId` outside it. A test awaits the handle after a refusal.
 */
function refusedInHandler(
  input: WorkflowStartUpdateWithStartInput,
  refusal: unknown,
): WorkflowStartUpdateWithStartInput {
  // Enumerable: an interceptor inside this one that copies the options copies the getter's throw too
  // (the refusal then rejects in that interceptor: the handle stays unsettled, but nothing is sent). A
  // copy that dropped it would send the start without its header.
  const options = Object.defineProperty({ ...input.workflowStartOptions }, 'requestEagerStart', {
    enumerable: true,
    configurable: true,
    get(): never {
      throw refusal;
    },
  });
  return { ...input, workflowStartOptions: options };
}
