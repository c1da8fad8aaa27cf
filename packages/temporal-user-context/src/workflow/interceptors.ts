import {
  ApplicationFailure,
  type TypedSearchAttributes,
  type Headers,
  type Payload,
  type SearchAttributePair,
} from '@temporalio/common';
// Deep imports: see state.ts (this module is preloaded once per reusable V8 context).
import { workflowInfo } from '@temporalio/workflow/lib/workflow.js';
import { proxySinks } from '@temporalio/workflow/lib/sinks.js';
import type {
  ActivateInput,
  ActivityInput,
  ConcludeActivationInput,
  ConcludeActivationOutput,
  ContinueAsNewInput,
  GetLogAttributesInput,
  LocalActivityInput,
  Next,
  QueryInput,
  SignalInput,
  SignalWorkflowInput,
  StartChildWorkflowExecutionInput,
  StartNexusOperationInput,
  UpdateInput,
  WorkflowExecuteInput,
  WorkflowInboundCallsInterceptor,
  WorkflowInterceptors,
  WorkflowInternalsInterceptor,
  WorkflowOutboundCallsInterceptor,
  Sinks,
} from '@temporalio/workflow';
import {
  ErrorCodes,
  UserContextError,
  isUserContextError,
  type UserContextErrorCode,
} from '../context/errors.js';
import { safeReason } from '../context/safe-reason.js';
import { MEMO_KEY, USER_ID_ATTRIBUTE, WORKSPACE_ID_ATTRIBUTE } from '../context/mirror-keys.js';
import {
  ACTOR_HEADER,
  ORIGINATOR_HEADER,
  decodeHeader,
  encodeHeader,
  type ContextHeader,
  type Lineage,
} from '../header/wire.js';
import {
  currentActor,
  runAsActor,
  workflowState,
  type ActorRef,
  type WorkflowContextState,
} from './state.js';

/**
 * Workflow interceptors (sandbox). They never verify, await, read clocks or keys: they carry the
 * opaque header, add lineage facts that the server vouched for (`workflowInfo()`), copy the run's
 * mirrors (a display, vouched for by no one) to what it starts, and apply the synchronous actor policy.
 * Verification happens in activities (see worker/).
 */

/** Sink the interceptors audit through; the plugin installs the Node side. */
export interface UserContextSinks extends Sinks {
  userContextAudit: {
    /**
     * A refusal; `pseudonyms`: the actor policy's, on the unverified pseudonyms the detail names;
     * `originator`: the workflow's originator header with its lineage (from `workflowInfo()`), for the
     * worker to file the record under the workflow's workspace once it verifies (the sandbox cannot).
     */
    deny(event: {
      action: string;
      reason: string;
      code: string;
      detail?: string;
      pseudonyms?: true;
      originator?: ContextHeader;
    }): void;
    /**
     * A signal, update or query the actor policy admitted (on pseudonyms, not verified): audited with
     * source `pseudonym`. `rejected`: an update the workflow's own validator then rejected (reason
     * `REJECTED_BY_VALIDATOR`: it left nothing in history).
     */
    allow(event: { action: string; detail: string; originator?: ContextHeader; rejected?: true }): void;
    /**
     * Something the workflow did for its originator that no interceptor carries a context on (a
     * cancellation of another workflow): audited with source `header`, under the originator's user and
     * workspace when the worker verifies its start token as this workflow's (as for `deny` above).
     */
    acted(event: { action: string; detail: string; originator?: ContextHeader }): void;
  };
}
const { userContextAudit } = proxySinks<UserContextSinks>();

/**
 * SDK-internal queries (stack trace, metadata) carry no user data and have no user header. SDK 1.24
 * answers them without running inbound interceptors at all; this keeps them answered should a version
 * route them here.
 */
const SDK_QUERIES = new Set(['__stack_trace', '__enhanced_stack_trace', '__temporal_workflow_metadata']);
/** Search attribute naming the schedule that started a run (clients may set it too: workers confirm it). */
const SCHEDULED_BY = 'TemporalScheduledById';

function lineageOf(header: ContextHeader): Lineage {
  const info = workflowInfo();
  const root = info.root?.workflowId ?? info.workflowId;
  // The start header of a child or of a continued-as-new run was written by our own outbound
  // interceptor in the parent / previous run; the server vouches that such a parent / previous run
  // exists. Only then is `lin` taken from the header. Cron and retry runs also have a previous run, but
  // the server copies the *client's* start header into them, so a `lin` there may be forged: those,
  // like every fresh top-level start, take the lineage from workflowInfo() alone.
  const continuedAsNew =
    info.continuedFromExecutionRunId !== undefined && info.cronSchedule === undefined && info.attempt === 1;
  const inherited = info.parent !== undefined || continuedAsNew ? header.lin : undefined;
  if (inherited) {
    if (inherited.root !== root) {
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'inherited lineage names another root');
    }
    // Without the call an actor header of the parent or previous run may have stated: the originator's
    // lineage never names one (check 11 takes it from the handler being run alone).
    const own: { -readonly [K in keyof Lineage]?: Lineage[K] } = Object.assign({}, inherited, {
      wf: info.workflowId,
    });
    delete own.hn;
    return own as Lineage;
  }
  const scheduledBy = info.searchAttributes?.[SCHEDULED_BY]?.[0];
  const lineage: { -readonly [K in keyof Lineage]: Lineage[K] } = {
    root,
    start: info.startTime.getTime(),
    wf: info.workflowId,
  };
  if (typeof scheduledBy === 'string') lineage.sched = scheduledBy;
  // The token binds how the root started (its header says so; the token, which workers open, decides):
  // this run is the root's first, or a retry or cron run of it with the same type and queue. Only type
  // and queue, both in history already: a digest of the input here would let anyone who reads history
  // guess the encrypted arguments (workers compare those only where the server gives them).
  if (header.b === 1) {
    lineage.wt = info.workflowType;
    lineage.tq = info.taskQueue;
    // A cron schedule the start did not have would run the user's workflow again and again.
    if (info.cronSchedule) lineage.cr = info.cronSchedule;
    // So would a retry policy it did not have: a retry's first task waits for its backoff.
    if (info.retryPolicy) lineage.rp = 1;
  }
  return lineage;
}

function readActor(
  headers: WorkflowExecuteInput['headers'],
  state: WorkflowContextState,
  call?: string,
): ActorRef | undefined {
  const header = decodeHeader(headers, ACTOR_HEADER);
  if (!header) return undefined;
  const origin = state.originator?.header;
  const actor = {
    subject: header.sub,
    workspace: header.ws,
    isOriginator: origin !== undefined && origin.sub === header.sub && origin.ws === header.ws,
  } as { -readonly [K in keyof ActorRef]: ActorRef[K] };
  // Not enumerable: its token is for verification only. Workflow code that returns or logs the actor
  // (a query's result, JSON.stringify, a spread) would otherwise hand a replayable token to whoever
  // reads that: found by an adopter's review.
  Object.defineProperty(actor, 'header', { value: frozen(header), enumerable: false });
  // The token binds its call (its header says so; workers decide on the token): state which call this
  // is, for the activities its handler schedules. Frozen: policies and workflow code get it.
  return Object.freeze(header.b === 1 && call !== undefined ? Object.assign(actor, { call }) : actor);
}

/** `header`, and the lineage it carries, frozen. */
function frozen(header: ContextHeader): ContextHeader {
  if (header.lin) Object.freeze(header.lin);
  return Object.freeze(header);
}

/** The workflow's originator header with its lineage, for a record's workspace (see the sink). */
function originatorForRecord(): ContextHeader | undefined {
  const originator = workflowState().originator;
  return originator && Object.assign({}, originator.header, { lin: originator.lineage });
}

/**
 * A refusal in workflow code: audited through the sink, and returned as the Temporal failure workflow
 * code, clients and the server see (non-retryable, `type` = the code). Anything else thrown out of
 * workflow code would fail the workflow *task*, which the SDK retries forever instead of refusing.
 */
export function refusal(
  action: string,
  code: UserContextErrorCode,
  reason: string,
  about?: string,
  who?: string,
): ApplicationFailure {
  // Who was refused goes into the record only: the failure's message reaches the caller and history.
  const event: Parameters<typeof userContextAudit.deny>[0] =
    who !== undefined
      ? { action, reason, code, detail: `${who}; ${about ?? action}`, pseudonyms: true }
      : about === undefined
        ? { action, reason, code }
        : { action, reason, code, detail: about };
  const originator = originatorForRecord();
  if (originator !== undefined) event.originator = originator;
  userContextAudit.deny(event);
  return ApplicationFailure.create({
    message: `${code}: ${about === undefined ? reason : `${about} refused: ${reason}`}`,
    type: code,
    nonRetryable: true,
  });
}

function refused(
  kind: 'signal' | 'update' | 'query',
  name: string,
  reason: string,
  code: UserContextErrorCode = ErrorCodes.ACTOR_FORBIDDEN,
  who?: string,
): ApplicationFailure {
  return refusal(`workflow.${kind}`, code, reason, `${kind} ${quotedName(name)}`, who);
}

/**
 * Who sends a signal, update or query, as its audit records name them: the pseudonyms the policy
 * judged (they are in history anyway). The caller's handler name comes after this in a detail, quoted
 * and capped, so that it can neither push the pseudonyms out of the capped detail nor pass for them.
 */
function whoOf(actor: ActorRef | undefined): string {
  return actor
    ? `actor sub=${actor.subject} ws=${actor.workspace}${actor.isOriginator ? ' (the originator)' : ''}`
    : 'no actor';
}

/**
 * A handler name as refusals and audit details quote it: JSON-quoted, at most 64 characters of it, and
 * without the characters JSON leaves as they are (line and paragraph separators, bidi controls): the
 * refusal's message reaches the caller and history in clear.
 */
function quotedName(name: string): string {
  return safeReason(JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name));
}

/**
 * Applies the policy; returns the actor when allowed. Throws only an audited refusal (see
 * {@link refusal}): ACTOR_FORBIDDEN when refused, POLICY_FAILED when the policy throws. An admission
 * is audited too, unless `audited` is false (an update's validation: its handler audits it).
 */
function admit(
  kind: 'signal' | 'update' | 'query',
  name: string,
  headers: WorkflowExecuteInput['headers'],
  audited = true,
): ActorRef | undefined {
  const state = workflowState();
  let actor: ActorRef | undefined;
  try {
    // A query's handler cannot schedule activities: its call is stated to no one.
    actor = readActor(headers, state, kind === 'query' ? undefined : `${kind}:${name}`);
  } catch (err) {
    throw refused(kind, name, isUserContextError(err) ? err.code : 'bad actor header');
  }
  let allowed: unknown;
  try {
    allowed = state.policy({ kind, name, actor, originator: state.originator });
  } catch {
    // Fail closed, under a code of its own: a bug in the workflow's policy, not a verdict on the actor.
    // What it threw is not passed on: it may quote the actor's input.
    throw refused(kind, name, 'actor policy threw', ErrorCodes.POLICY_FAILED, whoOf(actor));
  }
  // Only `true` admits: a policy that answers a promise (an async function, from JavaScript) or any
  // other truthy value would otherwise admit every caller. Its promise is left handled: a rejection
  // must not fail the workflow task as unhandled.
  if (allowed !== true && allowed !== false) {
    try {
      if (typeof (allowed as { then?: unknown } | null)?.then === 'function')
        (allowed as PromiseLike<unknown>).then(undefined, () => undefined);
    } catch {
      // A `then` that throws: refused all the same.
    }
    throw refused(kind, name, 'actor policy answered no boolean', ErrorCodes.POLICY_FAILED, whoOf(actor));
  }
  if (!allowed)
    throw refused(
      kind,
      name,
      actor ? 'actor not allowed by policy' : 'no actor context',
      ErrorCodes.ACTOR_FORBIDDEN,
      whoOf(actor),
    );
  // The policy judged pseudonyms the sandbox cannot verify: the record says so (source `pseudonym`);
  // verifyActor() audits the verified actor on the worker.
  if (audited) admitted(kind, name, actor);
  return actor;
}

/** The outcome of an update the policy admitted and the workflow's own validator rejected (the detail). */
const REJECTED_DETAIL = 'rejected by its validator';

/** Records an admission by the actor policy (source `pseudonym`). */
function admitted(
  kind: 'signal' | 'update' | 'query',
  name: string,
  actor: ActorRef | undefined,
  outcome?: typeof REJECTED_DETAIL,
): void {
  // An outcome goes before the caller's handler name, which the detail's cap may cut.
  const detail = `${whoOf(actor)}; ${outcome ? `${outcome}; ` : ''}${kind} ${quotedName(name)}`;
  const event: Parameters<typeof userContextAudit.allow>[0] = { action: `workflow.${kind}`, detail };
  const originator = originatorForRecord();
  if (originator !== undefined) event.originator = originator;
  // Stated apart from the detail, for sinks to tell (isHistorylessCall): it left nothing in history.
  if (outcome === REJECTED_DETAIL) event.rejected = true;
  userContextAudit.allow(event);
}

/**
 * Makes a refused update rejected before it is accepted, also when its handler has no validator.
 *
 * The SDK runs the `validateUpdate` chain only for handlers registered with a validator; for the others
 * it accepts the update (its arguments go into history as UpdateAccepted) and only then runs
 * `handleUpdate`, where the policy refuses it. Both the acceptance and the rejection are commands of
 * the same activation, so the acceptance is withdrawn from that activation's commands: the server then
 * sees a rejection only, exactly as after a refusing validator. Only updates delivered for validation
 * (`runValidator`) qualify: on replay an update is delivered again only if it was accepted, and its
 * acceptance is in history, so its commands stay as they are.
 */
class UpdateGate {
  /** Update id → protocol instance id, for updates of this activation not yet accepted. */
  private readonly unaccepted = new Map<string, string>();
  /** Protocol instance ids of updates refused before they could be accepted. */
  private readonly refused = new Set<string>();

  delivered(input: ActivateInput): void {
    for (const job of input.activation.jobs ?? []) {
      const update = job.doUpdate;
      if (update?.runValidator && update.id && update.protocolInstanceId) {
        this.unaccepted.set(update.id, update.protocolInstanceId);
      }
    }
  }

  refuse(updateId: string): void {
    const protocolInstanceId = this.unaccepted.get(updateId);
    if (protocolInstanceId !== undefined) this.refused.add(protocolInstanceId);
  }

  conclude(output: ConcludeActivationOutput): ConcludeActivationOutput {
    // An update still buffered at the end of an activation is rejected by the SDK: none carries over.
    this.unaccepted.clear();
    if (this.refused.size === 0) return output;
    const refused = this.refused;
    const commands = output.commands.filter((command) => {
      const response = command.updateResponse;
      return !(response?.accepted && refused.has(response.protocolInstanceId ?? ''));
    });
    this.refused.clear();
    return Object.assign({}, output, { commands });
  }
}

/**
 * Takes the run's originator from its start headers, once: `state.originator`, or `state.originatorError`
 * when the header is missing or malformed (the run is then refused in `execute`).
 */
function readOriginator(state: WorkflowContextState, headers: Headers): void {
  if (state.originator || state.originatorError) return;
  try {
    const header = decodeHeader(headers, ORIGINATOR_HEADER);
    if (!header) throw new UserContextError(ErrorCodes.MISSING, 'workflow started without a user context');
    // Frozen: getOriginator() hands it to workflow code and policies, and what the run sends every
    // activity, child and continued run is made from it once.
    state.originator = Object.freeze({ header: frozen(header), lineage: Object.freeze(lineageOf(header)) });
  } catch (err) {
    if (!isUserContextError(err)) throw err;
    state.originatorError = { code: err.code, reason: err.reason };
  }
}

/**
 * Cancellations of other workflows are recorded. SDK 1.24 has no outbound interceptor for them and the
 * command carries no header, so the target never learns who asked, and they were on no record (found
 * by review: a workflow of one workspace cancelled another's, unchecked and unrecorded). Not refused:
 * the sandbox cannot know the target's workspace, and any client of the namespace may cancel it too.
 *
 * Noted as an activation concludes with the command ({@link noteExternalCancels}), recorded when the
 * server answers it ({@link recordExternalCancels}): an activation whose task then fails sends its sink
 * calls all the same, and a cancellation recorded at the command was on record once per failed attempt
 * though never asked of the server (found by the round's review). Replay rebuilds the notes the same way
 * (the sink is not called during replay).
 */
function noteExternalCancels(output: ConcludeActivationOutput): void {
  for (const command of output.commands) {
    const request = command.requestCancelExternalWorkflowExecution;
    const target = request?.workflowExecution;
    if (!request || !target) continue;
    const run = target.runId ? ` run ${quotedName(target.runId)}` : '';
    const state = workflowState();
    (state.externalCancels ??= new Map()).set(
      request.seq ?? 0,
      `cancellation of workflow ${quotedName(target.workflowId ?? '')}${run}`,
    );
  }
}

/** Records the cancellations of other workflows the server has answered in this activation. */
function recordExternalCancels(input: ActivateInput): void {
  const noted = workflowState().externalCancels;
  if (!noted?.size) return;
  for (const job of input.activation.jobs ?? []) {
    const resolved = job.resolveRequestCancelExternalWorkflow;
    if (!resolved) continue;
    const seq = resolved.seq ?? 0;
    const detail = noted.get(seq);
    if (detail === undefined) continue;
    noted.delete(seq);
    const event: Parameters<typeof userContextAudit.acted>[0] = {
      action: 'workflow.external.cancel',
      detail: resolved.failure ? `${detail}, not delivered (the server refused it)` : `${detail}, requested`,
    };
    const originator = originatorForRecord();
    if (originator !== undefined) event.originator = originator;
    userContextAudit.acted(event);
  }
}

class Internals implements WorkflowInternalsInterceptor {
  constructor(private readonly updates: UpdateGate) {}

  activate(input: ActivateInput, next: Next<WorkflowInternalsInterceptor, 'activate'>): void {
    // The start header is read here, from the activation that starts the run, before any inbound
    // interceptor runs: this module's `execute` is the innermost (see `configureBundler`), and another
    // module's `execute` that schedules work before calling `next` (found by review: an application's
    // lookup through an activity) would otherwise send it without the originator, refused as missing.
    // Read from the job itself, no inbound interceptor can change what the run takes as its originator.
    const start = input.activation.jobs?.find((job) => job.initializeWorkflow)?.initializeWorkflow;
    if (start) readOriginator(workflowState(), (start.headers ?? {}) as Headers);
    recordExternalCancels(input);
    this.updates.delivered(input);
    next(input);
  }

  concludeActivation(
    input: ConcludeActivationInput,
    next: Next<WorkflowInternalsInterceptor, 'concludeActivation'>,
  ): ConcludeActivationOutput {
    const output = this.updates.conclude(next(input));
    noteExternalCancels(output);
    return output;
  }
}

class Inbound implements WorkflowInboundCallsInterceptor {
  constructor(private readonly updates: UpdateGate) {}

  execute(
    input: WorkflowExecuteInput,
    next: Next<WorkflowInboundCallsInterceptor, 'execute'>,
  ): Promise<unknown> {
    const state = workflowState();
    // Read by `Internals.activate` already; here only when that found no start job.
    readOriginator(state, input.headers);
    const error = state.originatorError;
    // Fail closed: refuse the run instead of running it as nobody (or worse, as somebody).
    if (error) return Promise.reject(refusal('workflow.execute', error.code, error.reason));
    // The workflow function acts for nobody: a frame without an actor, whatever frame was current.
    return runAsActor(undefined, () => next(input));
  }

  handleSignal(
    input: SignalInput,
    next: Next<WorkflowInboundCallsInterceptor, 'handleSignal'>,
  ): Promise<void> {
    let actor: ActorRef | undefined;
    try {
      actor = admit('signal', input.signalName, input.headers);
    } catch {
      // A refused signal never reaches the handler and does not fail the workflow: drop it. `admit`
      // audited the refusal.
      return Promise.resolve();
    }
    return runAsActor(actor, () => next(input));
  }

  validateUpdate(input: UpdateInput, next: Next<WorkflowInboundCallsInterceptor, 'validateUpdate'>): void {
    // A refusal thrown here rejects the update before it is accepted. An admission is audited once,
    // by handleUpdate, which runs next unless the workflow's own validator rejects the update.
    const actor = admit('update', input.name, input.headers, false);
    try {
      return runAsActor(actor, () => next(input));
    } catch (err) {
      // The workflow's validator rejected what the policy admitted: the admission is on record still.
      admitted('update', input.name, actor, REJECTED_DETAIL);
      throw err;
    }
  }

  handleUpdate(
    input: UpdateInput,
    next: Next<WorkflowInboundCallsInterceptor, 'handleUpdate'>,
  ): Promise<unknown> {
    let actor: ActorRef | undefined;
    try {
      actor = admit('update', input.name, input.headers);
    } catch (err) {
      this.updates.refuse(input.updateId);
      return Promise.reject(err);
    }
    return runAsActor(actor, () => next(input));
  }

  handleQuery(
    input: QueryInput,
    next: Next<WorkflowInboundCallsInterceptor, 'handleQuery'>,
  ): Promise<unknown> {
    if (SDK_QUERIES.has(input.queryName)) return next(input);
    let actor: ActorRef | undefined;
    try {
      actor = admit('query', input.queryName, input.headers);
    } catch (err) {
      return Promise.reject(err);
    }
    return runAsActor(actor, () => next(input));
  }
}

// Sandbox code copies objects with Object.assign, not spread syntax: the workflow bundler compiles
// TypeScript to ES2017, where `{ ...a, b }` becomes a helper that defines properties one at a time, and
// these copies run for every activity a workflow schedules.

/** `input` with one more header. */
function withPayload<T extends { headers: Headers }>(input: T, name: string, payload: Payload): T {
  return Object.assign({}, input, { headers: Object.assign({}, input.headers, { [name]: payload }) });
}

/** The originator header with this workflow's lineage, for everything the workflow starts. */
function outgoing(): ContextHeader | undefined {
  const origin = workflowState().originator;
  return origin ? Object.assign({}, origin.header, { lin: origin.lineage }) : undefined;
}

/**
 * The originator header with lineage, encoded once per run: every activity, child and continue-as-new
 * of the run carries the same bytes. Payloads are never mutated once handed to the SDK.
 */
function outgoingPayload(): Payload | undefined {
  const state = workflowState();
  if (state.outgoing) return state.outgoing;
  const header = outgoing();
  if (!header) return undefined;
  const payload = encodeHeader(header);
  // Shared by every command of the run: frozen so that no later interceptor can change it for all of
  // them (the byte arrays themselves cannot be frozen; nothing in the SDK writes to them).
  Object.freeze(payload.metadata);
  state.outgoing = Object.freeze(payload);
  return state.outgoing;
}

/** Headers for an activity: originator (+ lineage), and the current actor when inside a handler. */
function activityHeaders<T extends ActivityInput | LocalActivityInput>(input: T): T {
  const payload = outgoingPayload();
  if (!payload) return input;
  const headers: Headers = Object.assign({}, input.headers, { [ORIGINATOR_HEADER]: payload });
  const actor = currentActor();
  if (actor) {
    const lineage = workflowState().originator!.lineage;
    // The call the actor's handler runs for, when its header asks (see readActor).
    // The call is this handler's alone (lineageOf keeps none in the originator's lineage).
    const lin = actor.call === undefined ? lineage : Object.assign({}, lineage, { hn: actor.call });
    headers[ACTOR_HEADER] = encodeHeader(Object.assign({}, actor.header, { lin }));
  } else if (headers[ACTOR_HEADER] !== undefined) {
    // Not written here (another interceptor's, or copied from an inbound call): no one acts outside a
    // handler, whatever such a header says.
    delete headers[ACTOR_HEADER];
  }
  return Object.assign({}, input, { headers });
}

/** The memo mirror's value as the edge writes it, or undefined for anything else. */
function memoMirror(value: unknown): { userId: string; workspaceId: string; mode: string } | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { userId, workspaceId, mode } = value as Record<string, unknown>;
  return typeof userId === 'string' &&
    typeof workspaceId === 'string' &&
    (mode === 'plain' || mode === 'pseudonym')
    ? { userId, workspaceId, mode }
    : undefined;
}

/** What a child's or a continued run's options may say of memo and search attributes. */
interface MirroredOptions {
  memo?: Record<string, unknown>;
  searchAttributes?: unknown;
  typedSearchAttributes?: SearchAttributePair[] | TypedSearchAttributes;
}

/**
 * `options` with this run's mirrors: the memo entry and the two search attributes, as `workflowInfo()`
 * shows them now (deterministic), since a child or a continued run acts for the same originator. They
 * are what this run's start set (the edge, or whoever started it) and any upsert since: copied, never
 * checked against the header, with the trust the parent's own mirror has (a display; no worker reads
 * them back); a memo entry only in the shape the edge writes. What the parent lacks is not added.
 * Where the parent has a value, the options' own value under that key is replaced, as the edge
 * replaces a client's; everything else in them stays as given, and is encoded by the SDK as before
 * (search attributes as pairs: duplicates and bad values meet the SDK's own rules).
 * `onlyWhereGiven` (continue-as-new): the SDK's core copies the run's start memo, or its current
 * search attributes, into the command when the options give none (an empty memo counts as none), and
 * adding ours alone would stop that; so only options that give their own get the mirrors.
 */
function withMirrors<T extends MirroredOptions>(options: T, onlyWhereGiven: boolean): T {
  const info = workflowInfo();
  const memo = memoMirror(info.memo?.[MEMO_KEY]);
  const pairs: SearchAttributePair[] = [];
  const userId = info.typedSearchAttributes.get(USER_ID_ATTRIBUTE);
  if (userId !== undefined) pairs.push({ key: USER_ID_ATTRIBUTE, value: userId });
  const workspaceId = info.typedSearchAttributes.get(WORKSPACE_ID_ATTRIBUTE);
  if (workspaceId !== undefined) pairs.push({ key: WORKSPACE_ID_ATTRIBUTE, value: workspaceId });
  // As core decides whether the options give their own: a memo with no entries gives none.
  const addMemo =
    memo !== undefined && (!onlyWhereGiven || (options.memo != null && Object.keys(options.memo).length > 0));
  const addPairs =
    pairs.length > 0 &&
    (!onlyWhereGiven || Boolean(options.searchAttributes || options.typedSearchAttributes));
  if (!addMemo && !addPairs) return options;
  const out = Object.assign({}, options);
  if (addMemo) out.memo = Object.assign({}, options.memo, { [MEMO_KEY]: memo });
  if (addPairs) {
    // Pairs, not a TypedSearchAttributes: its constructor refuses what the SDK's encoding accepts.
    const own = options.typedSearchAttributes;
    const given = Array.isArray(own) ? own : own ? own.getAll() : [];
    const named = new Set(pairs.map((pair) => pair.key.name));
    out.typedSearchAttributes = given.filter((pair) => !named.has(pair.key.name)).concat(pairs);
  }
  return out;
}

class Outbound implements WorkflowOutboundCallsInterceptor {
  /**
   * The originator's pseudonyms on the workflow's log lines (`log` of `@temporalio/workflow`), as the
   * worker puts them on its activities' lines: one user's work found across both without their ids.
   */
  getLogAttributes(
    input: GetLogAttributesInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'getLogAttributes'>,
  ): Record<string, unknown> {
    const header = workflowState().originator?.header;
    return next(
      header ? Object.assign({}, input, { userPseudonym: header.sub, workspacePseudonym: header.ws }) : input,
    );
  }

  scheduleActivity(
    input: ActivityInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'scheduleActivity'>,
  ): Promise<unknown> {
    return next(activityHeaders(input));
  }

  scheduleLocalActivity(
    input: LocalActivityInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'scheduleLocalActivity'>,
  ): Promise<unknown> {
    return next(activityHeaders(input));
  }

  startChildWorkflowExecution(
    input: StartChildWorkflowExecutionInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'startChildWorkflowExecution'>,
  ): Promise<[Promise<string>, Promise<unknown>]> {
    const payload = outgoingPayload();
    if (!payload) return next(input);
    const options = withMirrors(input.options, false);
    return next(withPayload(Object.assign({}, input, { options }), ORIGINATOR_HEADER, payload));
  }

  continueAsNew(
    input: ContinueAsNewInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'continueAsNew'>,
  ): Promise<never> {
    const payload = outgoingPayload();
    if (!payload) return next(input);
    const options = withMirrors(input.options, true);
    return next(withPayload(Object.assign({}, input, { options }), ORIGINATOR_HEADER, payload));
  }

  signalWorkflow(
    input: SignalWorkflowInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'signalWorkflow'>,
  ): Promise<void> {
    // A workflow signals on behalf of its originator: the target sees the originator as actor.
    const origin = workflowState().originator;
    return next(origin ? withPayload(input, ACTOR_HEADER, encodeHeader(origin.header)) : input);
  }

  startNexusOperation(
    input: StartNexusOperationInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'startNexusOperation'>,
  ): ReturnType<NonNullable<WorkflowOutboundCallsInterceptor['startNexusOperation']>> {
    const header = outgoing();
    // Nexus headers are strings: the same v1 JSON object, serialised.
    return next(
      header
        ? Object.assign({}, input, {
            headers: Object.assign({}, input.headers, { [ORIGINATOR_HEADER]: JSON.stringify(header) }),
          })
        : input,
    );
  }
}

/** Registered through the plugin as a workflow interceptor module. */
export const interceptors = (): WorkflowInterceptors => {
  const updates = new UpdateGate();
  return {
    inbound: [new Inbound(updates)],
    outbound: [new Outbound()],
    internals: [new Internals(updates)],
  };
};
