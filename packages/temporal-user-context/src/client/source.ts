import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { createArgsDigest } from '../crypto/args-digest.js';
import type { ControlTarget } from './control-calls.js';
import { numberOption } from '../context/number-option.js';
import { sameUserContext, type UserContext } from '../context/schema.js';
import { sampleScheduledRunId } from '../context/scheduled-run-id.js';
import type { Auditor } from '../audit/sinks.js';
import type { IdentitySource } from '../audit/event.js';
import { MAX_WINDOW, type BoundStart, type ContextClaims, type ScheduledAction } from '../crypto/claims.js';
import type { KeyRing } from '../crypto/keyring.js';
import { DEFAULT_WINDOW, issueContextToken, type IssueOptions } from '../crypto/issue.js';
import { MAX_HEADER_BYTES, encodeHeader, type ContextHeader } from '../header/wire.js';
import { currentScope, settledScope } from '../worker/scope.js';
import { edgeUser } from './scope.js';
import type { MirrorOptions } from './mirror.js';
import { markRecorded } from '../audit/recorded.js';

export interface ContextSourceOptions {
  ring: KeyRing;
  namespace: string;
  auditor: Auditor;
  mirror: MirrorOptions;
  /** Start window of start tokens, seconds: an integer from 1 to 86 400 (default 60). */
  startWindowSeconds?: number;
  /** Window of actor tokens, seconds: an integer from 1 to 86 400 (default 300). */
  actorWindowSeconds?: number;
  /** Whether start tokens bind the start's arguments too (`bindStartArguments`, default true). */
  bindStartArguments?: boolean;
}

/**
 * Allow records of a call, held until everything the call sends is ready (both tokens of
 * `signalWithStart` and update-with-start, the mirrors of a start): a call refused or failing after a
 * token was issued must not leave that token on record as allowed for a call never sent.
 */
export type HeldRecords = Array<() => void>;

/** Emits the records {@link HeldRecords} kept, in the order they were held. */
export function releaseRecords(held: HeldRecords): void {
  for (const record of held) record();
}

/** Emits `record` now, or keeps it in `held` when the call holds its records. */
function recordOrHold(record: () => void, held: HeldRecords | undefined): void {
  if (held) held.push(record);
  else record();
}

/**
 * An actor token's call, by name: two of its strings (`runId`, `call`) were positional, in opposite
 * orders in two signatures (found by review), and a swap compiled.
 */
export interface ActorCall {
  workflowId: string;
  /** The audit action (`client.signal`, …). */
  action: string;
  /** The run the call names, when it names one. */
  runId?: string | undefined;
  /** What the token binds: `signal:<name>`, `update:<name>` or `query:<name>`. */
  call?: string | undefined;
  /** Allow records held until the whole call is prepared (signalWithStart, update-with-start). */
  held?: HeldRecords | undefined;
  /** A `signalWithStart`'s start delay: the actor token's window is lengthened by it. */
  delayMs?: number | undefined;
}

/**
 * What a client call names in its records: its workflow (and run, for a handle's call) or its schedule;
 * a standalone call its activity, or its operation (`detail`).
 */
type Target = {
  workflowId: string;
  runId?: string;
  scheduleId?: string;
  activityType?: string;
  activityId?: string;
  detail?: string;
};

/**
 * Where a client call's context comes from: the edge user in scope ({@link runAsUser}), or, in the
 * worker's own client, the activity being run. Issuing needs the edge key ring; a worker ring forwards
 * what it verified and refuses to start new lineages (it cannot mint).
 */
export class ContextSource {
  readonly mirror: MirrorOptions;
  private readonly startWindowSeconds: number;
  private readonly actorWindowSeconds: number;

  constructor(private readonly options: ContextSourceOptions) {
    this.mirror = options.mirror;
    // The window is how long a copied start token can start its workflow again: never unbounded, and
    // a day is already far more than a start needs (longer-lived starts are what schedules are for).
    this.startWindowSeconds = numberOption(
      'startWindowSeconds',
      options.startWindowSeconds,
      DEFAULT_WINDOW.start,
      { min: 1, max: 86_400, integer: true },
    );
    // The actor window is how long a copied actor header can act again on its workflow, and also how
    // long a signal may wait for a worker before verifyActor() refuses it as expired: a trade-off, so
    // it is the operator's, within the same bounds.
    this.actorWindowSeconds = numberOption(
      'actorWindowSeconds',
      options.actorWindowSeconds,
      DEFAULT_WINDOW.actor,
      { min: 1, max: 86_400, integer: true },
    );
  }

  /** Who a call acts for; a refusal's record names the call's target (`workflowId`, or a schedule). */
  private who(
    action: string,
    target: Target,
  ): {
    context: UserContext;
    source: IdentitySource;
    forward?: { header: ContextHeader; tokenId: string | undefined };
  } {
    const user = edgeUser();
    const activity = currentScope();
    // Work an activity or Nexus handler left running acts for no one once it settled, whoever an edge
    // scope inside it names (found by review: it passed for code outside every activity, as anyone).
    // On the activity's own record, as its user's: not filed under whoever the edge scope names.
    if (!activity) this.refuseLeftover(action, user);
    // Activity code acts for the user it was verified for, and a system activity for nobody. An edge
    // scope around it (a worker run inside runAsUser, an activity calling runAsUser) must not make it
    // act for someone else: on a process that also holds the issuing key, that user would otherwise be
    // minted for. The same user is no conflict.
    if (user && activity && !(activity.context && sameUserContext(user, activity.context))) {
      this.refuse(
        action,
        new UserContextError(
          ErrorCodes.EXPLICIT_MISMATCH,
          'an edge user in scope of an activity or Nexus handler that is not its verified user',
        ),
        target,
        user,
      );
    }
    if (activity?.context && activity.header) {
      const { lin: _lin, ...header } = activity.header;
      return {
        context: activity.context,
        source: 'header',
        forward: { header, tokenId: activity.claims?.jti },
      };
    }
    if (user) return { context: user, source: 'edge' };
    this.refuse(
      action,
      new UserContextError(
        ErrorCodes.MISSING,
        'client call with no user context in scope (make it inside runAsUser(user, () => ...))',
      ),
      target,
    );
  }

  private refuse(action: string, err: UserContextError, target: Target, context?: UserContext): never {
    this.options.auditor.emit({
      action,
      decision: 'deny',
      source: 'none',
      reason: err.code,
      detail:
        target.scheduleId !== undefined
          ? `schedule ${target.scheduleId}: ${err.reason}`
          : target.detail !== undefined
            ? `${target.detail}: ${err.reason}`
            : err.reason,
      namespace: this.options.namespace,
      activityType: target.activityType,
      activityId: target.activityId,
      userId: context?.userId,
      workspaceId: context?.workspaceId,
      workflowId: target.workflowId,
      runId: target.runId,
    });
    throw markRecorded(err);
  }

  private async issue(
    action: string,
    context: UserContext,
    source: IdentitySource,
    options: Omit<IssueOptions, 'namespace'>,
    /** Throws the refusal of a header that cannot be used, before the call is audited as allowed. */
    accept?: (header: ContextHeader, claims: ContextClaims) => void,
    /** The run the call names, for the records. */
    runId?: string,
    held?: HeldRecords,
    /** What the allow record adds about the call (a schedule's id, a start's id policies). */
    detail?: string,
  ) {
    if (!this.options.ring.canIssue) {
      this.refuse(
        action,
        new UserContextError(
          ErrorCodes.MISCONFIGURED,
          'this process holds no issuing key: workers cannot mint contexts',
        ),
        {
          workflowId: options.workflowId ?? '',
          runId,
          ...(options.scheduleId ? { scheduleId: options.scheduleId } : {}),
        },
        context,
      );
    }
    let issued: Awaited<ReturnType<typeof issueContextToken>>;
    try {
      issued = await issueContextToken(this.options.ring, context, {
        ...options,
        namespace: this.options.namespace,
      });
    } catch (err) {
      // A call no token can be issued for (a handler name past its cap, no workflow id): refused here,
      // before the server, and on record like every other refusal of the edge.
      if (!isUserContextError(err)) throw err;
      this.refuse(
        action,
        err,
        {
          workflowId: options.workflowId ?? '',
          runId,
          ...(options.scheduleId ? { scheduleId: options.scheduleId } : {}),
        },
        context,
      );
    }
    const { header, claims } = issued;
    accept?.(header, claims);
    const record = () =>
      this.allowed(
        action,
        context,
        source,
        claims.jti,
        options.workflowId,
        options.scheduleId ? `schedule ${options.scheduleId}` : detail,
        runId,
      );
    recordOrHold(record, held);
    return header;
  }

  /**
   * Audits a context this client sends (issued for the call, or forwarded by a worker), or who asked
   * for a call that sends none (`context` undefined when no one is known).
   */
  private allowed(
    action: string,
    context: UserContext | undefined,
    source: IdentitySource,
    tokenId: string | undefined,
    workflowId: string | undefined,
    detail: string | undefined,
    runId?: string,
    namespace: string = this.options.namespace,
  ): void {
    this.options.auditor.emit({
      action,
      decision: 'allow',
      source,
      reason: 'ok',
      namespace,
      userId: context?.userId,
      workspaceId: context?.workspaceId,
      tokenId,
      workflowId,
      runId,
      detail,
    });
  }

  /**
   * A standalone activity or Nexus operation (SDK 1.24: started by a client, no workflow): no token can
   * bind it (tokens bind a workflow lineage), none is sent, and this plugin's workers and handlers refuse
   * it. Refused here with no user in scope, as every other call; else audited for whoever asked.
   */
  recordStandalone(
    action: string,
    fields: { activityType?: string; activityId?: string; detail: string },
  ): void {
    const { context, source } = this.who(action, Object.assign({ workflowId: '' }, fields));
    this.options.auditor.emit({
      action,
      decision: 'allow',
      source,
      reason: 'ok',
      namespace: this.options.namespace,
      userId: context.userId,
      workspaceId: context.workspaceId,
      activityType: fields.activityType,
      activityId: fields.activityId,
      detail: `${fields.detail}; standalone: no context is sent, and workers of this plugin refuse it`,
    });
  }

  /**
   * Refuses a call from work an activity or Nexus handler left running once it settled, if this is
   * such work, on that activity's own record: not filed under whoever an edge scope inside it names.
   */
  private refuseLeftover(action: string, user: UserContext | undefined): void {
    const refusal = this.leftoverRefusal(action, user);
    if (refusal) throw refusal;
  }

  /** The refusal of a call from a settled activity's leftover work, once recorded; nothing otherwise. */
  private leftoverRefusal(
    action: string,
    user: UserContext | undefined,
    what?: string,
  ): UserContextError | undefined {
    const settled = settledScope();
    if (!settled) return undefined;
    const refusal = new UserContextError(
      ErrorCodes.MISSING,
      'a client call from work an activity or Nexus handler left running after it settled',
    );
    const named = user ? `; an edge scope in it named ${user.userId} in ${user.workspaceId}` : '';
    settled.auditor.emit({
      ...settled.audit,
      action,
      decision: 'deny',
      source: settled.context ? 'header' : 'system',
      reason: refusal.code,
      userId: settled.context?.userId,
      workspaceId: settled.context?.workspaceId,
      detail: `${what ? `${what}: ` : ''}${refusal.reason}${named}`,
    });
    return markRecorded(refusal);
  }

  /**
   * Audits a call that carries no context to the server (`cancel`, `terminate`): who asked, when the
   * process knows (the edge user in scope, or the activity's verified user), else `source: none`. Not
   * refused: operators cancel and terminate runs with tools that act for no user.
   */
  recordControl(
    action: string,
    target: { workflowExecution: { workflowId: string; runId?: string }; firstExecutionRunId?: string },
    reason?: string,
  ): void {
    // Leftover work of a settled activity cancels and terminates nothing (found by review).
    if (!currentScope()) this.refuseLeftover(action, edgeUser());
    const { user, source } = this.asker();
    const { workflowId, runId } = target.workflowExecution;
    // Which run: the one named, else the chain the handle started (the server acts on its latest run).
    const chain =
      runId === undefined && target.firstExecutionRunId !== undefined
        ? `run chain from ${target.firstExecutionRunId}`
        : undefined;
    const detail = [chain, reason === undefined ? undefined : `reason: ${reason}`].filter(Boolean).join('; ');
    this.allowed(action, user, source, undefined, workflowId, detail || undefined, runId);
  }

  /**
   * Audits a call that acts without a context and that no SDK client interceptor sees: a change of an
   * existing schedule (`update`, `delete`, and the patches `trigger`, `backfill`, `pause`, `unpause`), or
   * an activity completed, failed or cancelled from outside it (`AsyncCompletionClient`). Who asked, as
   * for {@link recordControl}. Not refused here: an update keeps the creator's headers, and the rest start
   * nothing as anyone new; an update that moves the action elsewhere is refused by the plugin's check
   * (`refusal`), and recorded as such.
   */
  recordControlCall(action: string, target: ControlTarget, refusal?: UserContextError): void {
    const { user, source } = this.asker();
    // The namespace the request names: a raw service call may name another than the plugin's.
    const namespace = target.namespace || this.options.namespace;
    const ids =
      target.kind === 'activity'
        ? { workflowId: target.workflowId, runId: target.runId, activityId: target.activityId }
        : {};
    const detail = target.kind === 'schedule' ? scheduleDetail(target) : target.detail;
    this.options.auditor.emit({
      action,
      decision: refusal ? 'deny' : 'allow',
      source,
      reason: refusal ? refusal.code : 'ok',
      namespace,
      userId: user?.userId,
      workspaceId: user?.workspaceId,
      ...ids,
      detail: refusal ? `${detail}: ${refusal.reason}` : detail,
    });
  }

  /**
   * The refusal of a schedule change (update, delete, patch) sent by work a settled activity or Nexus
   * handler left running, recorded on that activity's record; nothing for any other caller. Found by
   * review: such changes were recorded as asked by no one and went on, although the same work may
   * not cancel or terminate a run.
   */
  scheduleControlRefusal(action: string, target: ControlTarget): UserContextError | undefined {
    if (currentScope() || target.kind !== 'schedule') return undefined;
    return this.leftoverRefusal(action, edgeUser(), scheduleDetail(target));
  }

  /** Who asks for a call that carries no context: the activity's verified user, the edge user, or no one. */
  private asker(): { user: UserContext | undefined; source: IdentitySource } {
    const activity = currentScope();
    // Work a settled activity left running asks for no one (see who()).
    if (!activity && settledScope()) return { user: undefined, source: 'none' };
    const user = activity?.context ?? edgeUser();
    return { user, source: activity?.context ? 'header' : user ? 'edge' : 'none' };
  }

  /**
   * The originator header of a start: a start token bound to the workflow id and to how it starts (its
   * workflow type, task queue and, unless `bindStartArguments: false`, arguments), which the root's
   * workflow code states in its lineage facts and workers compare (check 10).
   */
  async forStart(
    workflowId: string,
    action: string,
    start: BoundStart,
    held?: HeldRecords,
    /**
     * The start's workflow id conflict and reuse policies, when it gives them: a start may return
     * another's run (`USE_EXISTING`) or end it (`TERMINATE_EXISTING`), which its record says.
     */
    policies?: string,
  ): Promise<{ originator: ContextHeader; context: UserContext }> {
    const { context, source } = this.who(action, { workflowId });
    const bound = this.digested(action, start, { workflowId }, context, 'bindStartArguments');
    // Lineage facts with the root's start in them; a child may add a longer id, which no edge can know.
    const lin = {
      root: workflowId,
      start: Date.now(),
      wf: workflowId,
      wt: start.workflowType,
      tq: start.taskQueue,
      ...(start.cronSchedule ? { cr: start.cronSchedule } : {}),
      // Workflow code states a retry policy too (`lin.rp`): seven bytes that can tip a header over.
      ...(start.retried ? { rp: 1 as const } : {}),
    };
    const originator = await this.issue(
      action,
      context,
      source,
      { use: 'start', workflowId, windowSeconds: this.startWindowSeconds, boundStart: bound },
      (header) =>
        this.fits(
          action,
          { ...header, lin },
          { workflowId },
          context,
          'the workflow id, type, task queue, cron schedule or retry policy',
        ),
      undefined,
      held,
      policies,
    );
    return { originator, context };
  }

  /**
   * `start` with its arguments replaced by their digest, or without them when `option` is off. The
   * digest first: arguments the default payload converter cannot carry are a refusal on record, like
   * any other of this call's.
   */
  private digested(
    action: string,
    start: BoundStart,
    target: Target,
    context: UserContext,
    option: 'bindStartArguments' | 'bindScheduleArguments',
  ): BoundStart {
    const { args, ...rest } = start;
    if (args === undefined) return rest;
    if (option === 'bindStartArguments' && this.options.bindStartArguments === false) return rest;
    try {
      return { ...rest, argsDigest: createArgsDigest(args, option) };
    } catch (err) {
      if (!isUserContextError(err)) throw err;
      this.refuse(action, err, target, context);
    }
  }

  /**
   * Refuses a token whose header, with the lineage facts workflow code adds, would pass the size
   * workers accept (every use of it would be refused): here, before anything started.
   */
  private fits(
    action: string,
    header: ContextHeader,
    target: Target,
    context: UserContext,
    what: string,
  ): void {
    if (encodeHeader(header).data!.byteLength <= MAX_HEADER_BYTES) return;
    this.refuse(
      action,
      new UserContextError(
        ErrorCodes.TOO_LARGE,
        `its runs would carry a header over ${MAX_HEADER_BYTES} bytes: shorten ${what}`,
      ),
      target,
      context,
    );
  }

  /**
   * Refuses a `signalWithStart` whose start is delayed so long that no actor token could still be valid
   * when its signal arrives (the actor window plus the delay past a day, the cap of an actor token's
   * window). A shorter delay is covered: its actor token's window is lengthened by the delay
   * ({@link forActor}'s `delayMs`). Found by review: the signal's actor was refused as expired once the
   * run started; and then, by the round's review, that refusing every delay past the window broke
   * `signalWithStart` to a running workflow, which the server signals at once (a debounce).
   */
  refuseDelayedSignal(action: string, workflowId: string, delayMs: number): void {
    if (this.actorWindowSeconds + Math.ceil(delayMs / 1000) <= MAX_WINDOW.actor) return;
    this.refuse(
      action,
      new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `the start is delayed ${Math.ceil(delayMs / 1000)} s: with the actor window (${this.actorWindowSeconds} s), past the day an actor token may last, and the signal's sender would be refused when it arrives; start, then signal`,
      ),
      { workflowId },
      edgeUser(),
    );
  }

  /**
   * The actor header of a signal, update or query to `workflowId` (and `runId`, when the call names
   * one). An issued token binds the call (`call`: `signal:<name>`, `update:<name>`, `query:<name>`),
   * which the handler's workflow code states and workers compare (check 11).
   */
  async forActor({ workflowId, action, runId, call, held, delayMs }: ActorCall): Promise<ContextHeader> {
    const { context, source, forward } = this.who(action, { workflowId, runId });
    // A worker forwards the originator it verified (the target's policy compares its pseudonyms); that
    // is a decision too, audited like an issue.
    if (forward && !this.options.ring.canIssue) {
      const record = () =>
        this.allowed(
          action,
          context,
          source,
          forward.tokenId,
          workflowId,
          'forwarded the verified originator as the actor',
          runId,
        );
      recordOrHold(record, held);
      return forward.header;
    }
    // Lineage facts an activity of the call's handler carries, without the root's start (its type and
    // queue, which no edge of a signal knows): a floor, which catches a call's name too long to carry.
    const lin = {
      root: workflowId,
      start: Date.now(),
      wf: workflowId,
      ...(call !== undefined ? { hn: call } : {}),
    };
    return this.issue(
      action,
      context,
      source,
      {
        use: 'actor',
        workflowId,
        // A delayed start's signal arrives once the run starts: the window covers the delay too.
        windowSeconds: this.actorWindowSeconds + Math.ceil((delayMs ?? 0) / 1000),
        ...(call !== undefined ? { call } : {}),
      },
      (header) =>
        this.fits(
          action,
          { ...header, lin },
          { workflowId, runId },
          context,
          "the workflow id or the call's name",
        ),
      runId,
      held,
    );
  }

  /**
   * The originator header of a schedule, and when the schedule must end: its runs are refused once they
   * start after the token's window (366 days), so the schedule ends before (`spec.endAt`, less its
   * jitter). A schedule asked to end later is refused here, before it exists.
   */
  async forSchedule(
    scheduleId: string,
    actionWorkflowId: string,
    action: string,
    scheduledAction: ScheduledAction,
    held?: HeldRecords,
    spec: { startAt?: Date; endAt?: Date; jitterMs?: number } = {},
  ): Promise<{ originator: ContextHeader; context: UserContext; endAt: Date }> {
    const target = { workflowId: actionWorkflowId, scheduleId };
    const { context, source } = this.who(action, target);
    const bound = this.digested(action, scheduledAction, target, context, 'bindScheduleArguments');
    // A schedule's runs add lineage facts that name it and the run (`<action id>-<time>`) to the header
    // of every activity: with ids near Temporal's length limit, that passes the size workers accept, and
    // every run would be refused. Refused here instead, before the schedule exists.
    const run = sampleScheduledRunId(actionWorkflowId);
    const lin = { root: run, start: Date.now(), wf: run, sched: scheduleId };
    let endAt: Date | undefined;
    const originator = await this.issue(
      action,
      context,
      source,
      {
        use: 'schedule',
        scheduleId,
        workflowId: actionWorkflowId,
        scheduledAction: bound,
      },
      (header, claims) => {
        this.fits(action, { ...header, lin }, target, context, 'the schedule or workflow id');
        const refuse = (reason: string) =>
          this.refuse(action, new UserContextError(ErrorCodes.MISCONFIGURED, reason), target, context);
        const jitter = spec.jitterMs ?? 0;
        if (!(jitter >= 0)) refuse('the schedule jitter must be a duration of zero or more');
        // The last time a run may be scheduled for: jitter delays it, the workers' skew does not cover that.
        const latest = claims.exp * 1000 - jitter;
        if (latest <= Date.now())
          refuse("the schedule's jitter leaves it no time inside its creator's token window (366 days)");
        if (spec.endAt !== undefined && spec.endAt.getTime() > latest) {
          refuse(
            `the schedule would start runs after its creator's token window (${new Date(latest).toISOString()}, less jitter), which workers refuse: end it by then, and re-create it to go on`,
          );
        }
        endAt = spec.endAt ?? new Date(latest);
        // A schedule that would begin after it ends starts nothing: refused rather than made silently.
        if (spec.startAt !== undefined && spec.startAt.getTime() > endAt.getTime())
          refuse(
            spec.endAt === undefined
              ? "the schedule would begin after its creator's token window (366 days) ends"
              : 'the schedule would begin after it ends',
          );
      },
      undefined,
      held,
    );
    return { originator, context, endAt: endAt! };
  }
}

/**
 * A schedule change's target in words, the id shortened past 120 characters: the record's detail is
 * capped (256), and what the call did (a trigger acts as the schedule's creator, a pause does not) must
 * survive the cap.
 */
function scheduleDetail(target: Extract<ControlTarget, { kind: 'schedule' }>): string {
  const id = target.id.length > 120 ? `${target.id.slice(0, 120)}…` : target.id;
  return `schedule ${id}${target.detail ? `; ${target.detail}` : ''}`;
}
