import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  TemporalFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { isUserContextFailure, verifyActor } from 'temporal-user-context/workflow';
import type { AgentActivities, DocumentHit } from '../activities.js';
import { REVISE_PROMPT, type AgentMessage } from '../providers/types.js';
import {
  ACTIVITY_OPTIONS,
  assertRunInput,
  DEFAULT_MAX_TOTAL_STEPS,
  MAX_CONTINUE_AS_NEW_BYTES,
  MAX_INSTRUCTIONS,
  MAX_VERIFYING_INSTRUCTIONS,
  MAX_TOTAL_STEPS_LIMIT,
  MODEL_STEP_OPTIONS,
  RunErrorCodes,
  boundMessages,
  conversationOverBudget,
  isInstructionText,
  clampInt,
  isCancelledFailure,
  payloadBytes,
  runFailureCode,
} from './run-policy.js';

export const TASK_QUEUE = 'agent-tasks';
/** The workflow type the API starts and schedules (this module's `AgentExecutionWorkflow`). */
export const WORKFLOW_TYPE = 'AgentExecutionWorkflow';
export const MAX_INSTRUCTION_LENGTH = 2000;
export const DEFAULT_STEPS_PER_RUN = 20;

export interface AgentExecutionInput {
  agentId: string;
  input: string;
  /** The agent_runs row the API created (absent for scheduled runs: the workflow creates one). */
  runRecordId?: string;
  /** Keep the conversation open this long after an answer for more instructions (default 0, max 3600). */
  followUpSeconds?: number;
  /** Continue-as-new after this many model steps in one run (default 20). */
  maxStepsPerRun?: number;
  /**
   * Fail with `STEP_LIMIT_EXCEEDED` before model step number this + 1, counting every generation
   * (default 100, at most 1000).
   */
  maxTotalSteps?: number;
  /** State carried across continue-as-new. */
  carried?: CarriedState;
}

export interface CarriedState {
  messages: AgentMessage[];
  steps: number;
  toolCalls: number;
  instructions: InstructionRecord[];
  pending: string[];
  generation: number;
  answer?: string;
  runRecordId: string;
}

export interface InstructionRecord {
  text: string;
  addedBy: string;
}

export type RunStatus = 'starting' | 'running' | 'waiting' | 'completed' | 'cancelled';

export interface Progress {
  status: RunStatus;
  steps: number;
  toolCalls: number;
  generation: number;
  instructions: InstructionRecord[];
  answer?: string;
}

export interface AgentExecutionResult {
  status: 'completed' | 'cancelled';
  answer?: string;
  steps: number;
  toolCalls: number;
  instructions: InstructionRecord[];
}

export const cancelSignal = defineSignal<[reason?: string]>('cancel');
export const addInstructionUpdate = defineUpdate<{ accepted: true; pending: number }, [string]>(
  'addInstruction',
);
export const progressQuery = defineQuery<Progress>('progress');

const acts = proxyActivities<AgentActivities>(ACTIVITY_OPTIONS);
/** The model step, with its heartbeat timeout: a cancelled run's step learns of it within seconds. */
const model = proxyActivities<Pick<AgentActivities, 'modelStep'>>(MODEL_STEP_OPTIONS);

/**
 * Patch ids: each guards a change to the commands the workflow issues, so that histories written
 * before it replay down the old branch. Never reuse or rename one.
 */
const Patches = {
  /** ApplicationFailures are recorded as `failed` with their raw type ({@link recordApplicationFailure}). */
  recordFailedRuns: 'record-failed-runs',
  /** A cancel whose verification finished while the run waited to continue-as-new stops the run. */
  cancelBeforeContinueAsNew: 'cancel-before-continue-as-new',
  /** Instructions accepted during the last model step, or as the follow-up timer fired, are applied. */
  applyPendingInstructions: 'apply-pending-instructions',
  /** The first generation claims its run record (checking it is this workflow's) and marks it running. */
  claimRunRecord: 'claim-run-record',
  /** Every observable failure is recorded, with a stable code, cancellation as `cancelled`. */
  recordEveryFailure: 'record-every-failure',
  /** The lineage fails with `STEP_LIMIT_EXCEEDED` at its total step cap. */
  totalStepCap: 'total-step-cap',
  /** Continue-as-new carries a bounded message history. */
  boundCarriedMessages: 'bound-carried-messages',
  /** A member's instruction reaches the model as that member's words, not as a system message. */
  memberInstructions: 'member-instructions',
  /** A cancel whose sender could not be verified for want of an answer (not a refusal) tries again. */
  retryCancelVerification: 'retry-cancel-verification',
  /**
   * The run does not finish while an accepted instruction's sender is still being verified (it applies
   * the instruction once verified); an instruction verified only after the run ended fails its update.
   */
  settleInstructions: 'settle-instructions',
  /** A conversation over `MAX_CONVERSATION_BYTES` continues as new before the next model step. */
  conversationBudget: 'conversation-budget',
  /**
   * Continue-as-new carries the task once, as the first carried message (the input's copy was read
   * only by the first generation, or to create a record none had).
   */
  carryTaskOnce: 'carry-task-once',
  /** A continue-as-new input over `MAX_CONTINUE_AS_NEW_BYTES` fails the run (`CONVERSATION_TOO_LARGE`). */
  continueAsNewLimit: 'continue-as-new-limit',
  /** A run that failed (or was cancelled through Temporal) accepts no instruction while it records so. */
  refuseInstructionsWhenFailed: 'refuse-instructions-when-failed',
  /**
   * A run that fails waits for its handlers first: an instruction whose sender is still being verified
   * gets its own answer (`RUN_FINISHED`), not the server's failure of an update whose run closed.
   */
  settleHandlersOnFailure: 'settle-handlers-on-failure',
  /**
   * Before the run's last model step, instructions whose senders are still being verified are waited
   * for, and go into that step: the validator accepted them on the promise of a step left to apply
   * them in, and applying one after the last step would fail the run (`STEP_LIMIT_EXCEEDED`) with its
   * answer in hand.
   */
  instructionsBeforeLastStep: 'instructions-before-last-step',
  /**
   * The ending of a run that finished (completed, or cancelled by the signal) is written in a
   * non-cancellable scope: a Temporal cancel during the write waits for it, then fails the run and
   * writes `cancelled` after it. It left `completed` on the record of a run Temporal calls cancelled.
   */
  writeEndingWhole: 'write-ending-whole',
  /**
   * A `cancel` signal verified while a model step runs cancels the step (its provider's request is
   * aborted) and ends the run as cancelled; before, the step ran on to its answer, which was dropped.
   */
  cancelStopsModelStep: 'cancel-stops-model-step',
  /**
   * Temporal's suggestion to continue-as-new is followed only after a model step of this run: a
   * namespace whose history thresholds are below what a generation needs to reach its first step would
   * otherwise continue-as-new forever without a step.
   */
  stepBeforeSuggestedContinue: 'step-before-suggested-continue',
  /** An input the workflow cannot read fails the run at once (`RUN_INPUT_INVALID`, {@link assertRunInput}). */
  checkRunInput: 'check-run-input',
} as const;

/** A validator's refusal: its stable code as the failure's type, which clients and the API read. */
function refused(code: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: code, message, nonRetryable: true });
}

/** What {@link unlessStopped} answers for a step it stopped. */
const STOPPED = Symbol('stopped');

/**
 * Runs `step` in a scope of its own that is cancelled as soon as `stop()` holds; {@link STOPPED} when
 * that cancellation, and nothing else, ended it (a Temporal cancel of the run is rethrown as it is).
 */
async function unlessStopped<T>(stop: () => boolean, step: () => Promise<T>): Promise<T | typeof STOPPED> {
  const scope = new CancellationScope();
  let settled = false;
  // Not cancellable, so a Temporal cancel of the run cannot reject it unhandled; it resolves once the
  // step settles at the latest, and creates no command of its own.
  void CancellationScope.nonCancellable(() => condition(() => settled || stop())).then(() => {
    if (!settled) scope.cancel();
  });
  try {
    return await scope.run(step);
  } catch (err) {
    if (isCancellation(err) && stop() && !CancellationScope.current().consideredCancelled) return STOPPED;
    throw err;
  } finally {
    settled = true;
  }
}

/**
 * Waits between verifications of a cancel's sender that got no answer: 1 s, doubling, at most 30 s;
 * for at most 10 minutes of workflow time in all.
 */
const VERIFY_RETRY_MS = { initial: 1000, max: 30_000, total: 600_000 } as const;

/**
 * Whether the sender of the signal being handled verifies. A refusal is a no. A failure that is not a
 * refusal (the database the revocation check reads is down past the local activity's own retries) is no
 * answer, and a cancel the API accepted (202) must not be dropped for it: the check runs again after a
 * timer, until an answer comes. The actor token's window ends that in practice (the worker then refuses
 * the token as expired, and audits it); the workflow's own bound is {@link VERIFY_RETRY_MS}`.total`,
 * whatever window the edge was given. It stops early when the answer no longer matters (`moot`: the run
 * is cancelled already, or finished) and when the run is cancelled through Temporal, which the run
 * records itself. Histories from before the patch, where such a failure dropped the cancel, replay
 * down that branch.
 */
async function senderVerifies(moot: () => boolean): Promise<boolean> {
  const deadline = Date.now() + VERIFY_RETRY_MS.total;
  for (let wait: number = VERIFY_RETRY_MS.initial; ; wait = Math.min(wait * 2, VERIFY_RETRY_MS.max)) {
    try {
      await verifyActor();
      return true;
    } catch (err) {
      if (isUserContextFailure(err) || isCancellation(err)) return false;
      if (!patched(Patches.retryCancelVerification)) return false;
    }
    if (Date.now() + wait > deadline) {
      log.warn('cancel dropped: its sender could not be verified in time', {
        triedForMs: VERIFY_RETRY_MS.total,
      });
      return false;
    }
    try {
      if (await condition(moot, wait)) return false;
    } catch (err) {
      if (isCancellation(err)) return false;
      throw err;
    }
  }
}

/**
 * The seed's AgentExecutionWorkflow. It never receives a user context argument: every activity runs as
 * the verified originator the plugin carries (continue-as-new included).
 */
export async function AgentExecutionWorkflow(params: AgentExecutionInput): Promise<AgentExecutionResult> {
  // Before anything reads it: a client of its own may start the run with anything (patched: such runs
  // recorded before the check went on until they failed, or threw).
  if (patched(Patches.checkRunInput)) assertRunInput(params);
  // Not clampInt: it differs on inputs these accept (a numeric string, `true`, a fraction of a second),
  // and recorded histories must replay with the limits they ran with.
  const maxSteps = Math.min(Math.max(Math.trunc(params.maxStepsPerRun ?? DEFAULT_STEPS_PER_RUN), 1), 200);
  const maxTotalSteps = clampInt(params.maxTotalSteps, DEFAULT_MAX_TOTAL_STEPS, 1, MAX_TOTAL_STEPS_LIMIT);
  const followUpMs = Math.min(Math.max(params.followUpSeconds ?? 0, 0), 3600) * 1000;
  const state: CarriedState = params.carried ?? {
    messages: [{ role: 'user', content: params.input }],
    steps: 0,
    toolCalls: 0,
    instructions: [],
    pending: [],
    generation: 0,
    runRecordId: params.runRecordId ?? '',
  };
  let status: RunStatus = params.carried ? 'running' : 'starting';
  let cancelled = false;
  let finished = false;
  // Validators see these (they never run on replay): a model step running, instructions accepted whose
  // senders are still being verified.
  let stepRunning = false;
  let verifying = 0;

  setHandler(cancelSignal, async () => {
    // The sandbox policy compared pseudonyms it cannot verify: verify the sender before acting on it.
    // A forged, replayed or revoked actor is refused here and the signal changes nothing.
    if (await senderVerifies(() => cancelled || finished)) cancelled = true;
  });
  setHandler(
    addInstructionUpdate,
    async (text) => {
      // Who added it, verified by the worker (the plugin already refused other workspaces).
      verifying++;
      let actor: Awaited<ReturnType<typeof verifyActor>>;
      try {
        actor = await verifyActor();
      } finally {
        verifying--;
      }
      // The run ended, or was cancelled, while the sender was being verified: say so rather than
      // report an instruction accepted that nothing will apply.
      if ((finished || cancelled) && patched(Patches.settleInstructions)) {
        throw ApplicationFailure.create({
          type: RunErrorCodes.RUN_FINISHED,
          message: 'the run ended before this instruction could be applied',
          nonRetryable: true,
        });
      }
      state.pending.push(text.trim());
      state.instructions.push({ text: text.trim(), addedBy: actor.userId });
      return { accepted: true, pending: state.pending.length };
    },
    {
      validator: (text) => {
        // Validators do not run on replay: what they refuse, and how, changes no recorded history.
        const invalid = RunErrorCodes.INSTRUCTION_INVALID;
        if (typeof text !== 'string' || text.trim().length === 0)
          throw refused(invalid, 'instruction is empty');
        // Characters as the API counts them (code points): an emoji is one, not two UTF-16 units.
        if (codePoints(text) > MAX_INSTRUCTION_LENGTH)
          throw refused(invalid, `instruction over ${MAX_INSTRUCTION_LENGTH} characters`);
        if (!isInstructionText(text))
          throw refused(invalid, 'instruction holds control characters or unpaired surrogates');
        if (finished || cancelled)
          throw refused(RunErrorCodes.RUN_FINISHED, 'run is no longer accepting instructions');
        // Those still being verified count: concurrent updates must not overshoot the cap.
        if (state.instructions.length + verifying >= MAX_INSTRUCTIONS)
          throw refused(RunErrorCodes.INSTRUCTION_LIMIT, `run already has ${MAX_INSTRUCTIONS} instructions`);
        // A cancel queues behind the verifications in flight: they must not outlast its actor window.
        if (verifying >= MAX_VERIFYING_INSTRUCTIONS)
          throw refused(
            RunErrorCodes.INSTRUCTION_BUSY,
            `${MAX_VERIFYING_INSTRUCTIONS} instructions are being verified; send it again shortly`,
          );
        // A step that is running counts too: an instruction needs a step left after it to be applied.
        if (state.steps + (stepRunning ? 1 : 0) >= maxTotalSteps)
          throw refused(RunErrorCodes.STEP_LIMIT_EXCEEDED, 'run has used all its steps');
      },
    },
  );
  setHandler(progressQuery, () => ({
    status,
    steps: state.steps,
    toolCalls: state.toolCalls,
    generation: state.generation,
    instructions: state.instructions,
    ...(state.answer !== undefined ? { answer: state.answer } : {}),
  }));

  try {
    if (!params.carried && patched(Patches.claimRunRecord)) {
      state.runRecordId = await acts.ensureRunRecord(params.agentId, params.input, params.runRecordId);
    } else if (!state.runRecordId) {
      state.runRecordId = await acts.ensureRunRecord(params.agentId, params.input);
    }
    return await execute();
  } catch (err) {
    // The run is over: an instruction arriving while its ending is recorded is refused, not accepted
    // for nothing.
    if (!(err instanceof ContinueAsNew) && patched(Patches.refuseInstructionsWhenFailed)) finished = true;
    await recordFailure(state.runRecordId, err);
    // One whose sender is still being verified is answered before the run closes: its handler sees the
    // run finished and fails the update with RUN_FINISHED (before the patch, the server failed it as
    // the run closed). A cancel being verified stops at its next wait (finished makes it moot). Not
    // cancellable: a run cancelled through Temporal waits too. Only for a failure of the run: any other
    // error fails the workflow task, and the run goes on once a fixed worker replays it.
    if (err instanceof TemporalFailure && patched(Patches.settleHandlersOnFailure)) {
      // Set again: a run whose catch began on a worker from before `refuse-instructions-when-failed`
      // replays without it, and its handlers must not accept instructions while the run waits for them.
      finished = true;
      await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
    }
    throw err;
  }

  // The run itself; a failure above is also written to the run record.
  async function execute(): Promise<AgentExecutionResult> {
    const agent = await acts.buildAgentConfig(params.agentId);
    status = 'running';
    let stepsThisRun = 0;

    for (;;) {
      if (cancelled) break;
      // The last step the run may take: an instruction still being verified goes into it (patched:
      // histories before it ran this step without).
      if (verifying > 0 && state.steps + 1 >= maxTotalSteps && patched(Patches.instructionsBeforeLastStep)) {
        await condition(() => verifying === 0 || cancelled);
        continue;
      }
      while (state.pending.length > 0) {
        const role = patched(Patches.memberInstructions) ? 'instruction' : 'system';
        state.messages.push({ role, content: state.pending.shift() as string });
        state.messages.push({ role: 'user', content: REVISE_PROMPT });
      }
      if (state.steps >= maxTotalSteps && patched(Patches.totalStepCap)) {
        throw ApplicationFailure.create({
          type: RunErrorCodes.STEP_LIMIT_EXCEEDED,
          message: `the run took ${state.steps} model steps, its limit`,
          nonRetryable: true,
        });
      }
      // A conversation grown too large to send continues as new too (patched: histories before it ran on).
      const overBudget = () =>
        conversationOverBudget(state.messages, stepsThisRun) && patched(Patches.conversationBudget);
      // Temporal's suggestion, once this run has taken a step (patched: histories before it followed it
      // at once).
      const suggested = () =>
        workflowInfo().continueAsNewSuggested &&
        (stepsThisRun > 0 || !patched(Patches.stepBeforeSuggestedContinue));
      if (stepsThisRun >= maxSteps || suggested() || overBudget()) {
        await condition(allHandlersFinished);
        // A cancel signal received before the wait may have finished verifying only during it.
        if (cancelled && patched(Patches.cancelBeforeContinueAsNew)) break;
        const carried = { ...state, generation: state.generation + 1 };
        if (patched(Patches.boundCarriedMessages)) carried.messages = boundMessages(state.messages);
        const next: AgentExecutionInput = { ...params, carried };
        if (patched(Patches.carryTaskOnce)) next.input = '';
        // Past Temporal's payload limit the worker refuses to send the continue-as-new and fails the
        // workflow task, again at every retry, for good: a failure with a code instead, recorded.
        if (payloadBytes(next) > MAX_CONTINUE_AS_NEW_BYTES && patched(Patches.continueAsNewLimit)) {
          throw ApplicationFailure.create({
            type: RunErrorCodes.CONVERSATION_TOO_LARGE,
            message: `the conversation is too large to carry to a new run (over ${MAX_CONTINUE_AS_NEW_BYTES} bytes)`,
            nonRetryable: true,
          });
        }
        return continueAsNew<typeof AgentExecutionWorkflow>(next);
      }
      stepRunning = true;
      let decision: Awaited<ReturnType<typeof acts.modelStep>> | typeof STOPPED;
      const stoppable = patched(Patches.cancelStopsModelStep);
      try {
        decision = stoppable
          ? await unlessStopped(
              () => cancelled,
              () => model.modelStep(agent, state.messages),
            )
          : await model.modelStep(agent, state.messages);
      } finally {
        stepRunning = false;
      }
      // Cancelled by the signal while the step ran: the run ends as cancelled, without its answer.
      if (decision === STOPPED) break;
      state.steps++;
      stepsThisRun++;
      // Answered in the same task that verified a cancel: the run ends as cancelled without acting on
      // the answer (no tool runs for a cancelled run).
      if (stoppable && cancelled) break;
      if (decision.type === 'tool_call') {
        state.toolCalls++;
        const hits = await runTool(decision.tool, decision.args);
        state.messages.push({ role: 'tool', tool: decision.tool, content: describeHits(hits) });
        continue;
      }
      state.answer = decision.content;
      state.messages.push({ role: 'assistant', content: decision.content });
      // An instruction accepted while this step ran (or as the follow-up timer fired below) was
      // promised to the caller: apply it instead of finishing.
      const instructionWaiting = () =>
        !cancelled && state.pending.length > 0 && patched(Patches.applyPendingInstructions);
      // Before finishing: an accepted instruction whose sender is still being verified is waited for.
      const instructionSettled = async () => {
        if (cancelled || verifying === 0 || !patched(Patches.settleInstructions)) return false;
        await condition(() => verifying === 0);
        return instructionWaiting();
      };
      if (instructionWaiting()) continue;
      if (followUpMs === 0 || cancelled) {
        if (await instructionSettled()) continue;
        break;
      }
      status = 'waiting';
      const more = await condition(() => cancelled || state.pending.length > 0, followUpMs);
      status = 'running';
      if (!more && !instructionWaiting() && !(await instructionSettled())) break;
    }

    finished = true;
    status = cancelled ? 'cancelled' : 'completed';
    const result: AgentExecutionResult = {
      status,
      ...(state.answer !== undefined ? { answer: state.answer } : {}),
      steps: state.steps,
      toolCalls: state.toolCalls,
      instructions: state.instructions,
    };
    const ending = { runRecordId: state.runRecordId, status, result };
    // Cancellable, a Temporal cancel abandoned the write (its attempt still commits, later) and wrote
    // `cancelled` at once: whichever committed last stayed on the record.
    if (patched(Patches.writeEndingWhole))
      await CancellationScope.nonCancellable(() => acts.recordRunResult(ending));
    else await acts.recordRunResult(ending);
    await condition(allHandlersFinished);
    return result;
  }
}

/**
 * A run that ends in a failure the workflow can see says so on its record too, not only in Temporal:
 * a refusal (`TOOL_NOT_ENABLED`, `AGENT_NOT_FOUND`, a context refusal...), retries exhausted
 * (`ACTIVITY_TIMEOUT`, `RUN_FAILED`), the step cap, and a Temporal cancellation (`cancelled`,
 * `CANCELLED`; written in a non-cancellable scope, since the cancelled scope refuses new activities).
 * Only stable codes are written ({@link runFailureCode}). A terminated or timed-out execution runs no
 * more workflow code: the API records those endings when it first sees them. continue-as-new also travels as an
 * exception and passes untouched, and so does any other error that is no TemporalFailure: that is a
 * bug in workflow code, which fails the workflow task (retried until a fixed worker replays it), not
 * the run, so writing `failed` would be false and would put commands in history the fix cannot replay.
 */
async function recordFailure(runRecordId: string, err: unknown): Promise<void> {
  if (err instanceof ContinueAsNew) return;
  if (err instanceof TemporalFailure && patched(Patches.recordEveryFailure)) {
    const outcome = {
      runRecordId,
      status: isCancelledFailure(err) ? ('cancelled' as const) : ('failed' as const),
      error: runFailureCode(err),
    };
    try {
      await CancellationScope.nonCancellable(() => acts.recordRunResult(outcome));
    } catch {
      // As below: the failure stands in Temporal.
    }
    return;
  }
  await recordApplicationFailure(runRecordId, err);
}

/**
 * The previous recordFailure, for histories written before `record-every-failure`: only
 * ApplicationFailures, with their raw type, behind its own patch so that runs that failed before it
 * replay as they were.
 */
async function recordApplicationFailure(runRecordId: string, err: unknown): Promise<void> {
  const failure = err instanceof ActivityFailure ? err.cause : err;
  if (!(failure instanceof ApplicationFailure) || !patched(Patches.recordFailedRuns)) return;
  try {
    await acts.recordRunResult({ runRecordId, status: 'failed', error: failure.type ?? 'RUN_FAILED' });
  } catch {
    // The record cannot be written (a membership revoked meanwhile: RLS refuses the write too). The
    // failure stands in Temporal: the API reports it from there, and writes it on the record when it
    // sees the run closed and its record still open.
  }
}

/** The number of code points in `text` (a lone surrogate counts as one). */
function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

async function runTool(tool: string, args: Record<string, unknown>): Promise<DocumentHit[]> {
  if (tool === 'searchWorkspaceDocuments') return acts.searchWorkspaceDocuments(args);
  throw ApplicationFailure.nonRetryable(`unknown tool ${tool}`, RunErrorCodes.UNKNOWN_TOOL);
}

function describeHits(hits: DocumentHit[]): string {
  if (hits.length === 0) return 'found no documents.';
  return `found ${hits.length} document(s): ${hits.map((h) => h.title).join(', ')}.`;
}
