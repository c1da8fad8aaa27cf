// Pure limits and mappings of AgentExecutionWorkflow, kept out of the workflow module so they can be
// unit-tested without a workflow context. Everything here must stay deterministic: it runs in the
// workflow sandbox. The API imports it too, so that a run's code is the same on its record and from
// the API; that holds only while nothing here needs a workflow context at load (`@temporalio/workflow`,
// which `temporal-user-context/workflow` loads, only declares until one of its functions is called).
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  ChildWorkflowFailure,
  TimeoutFailure,
  type ActivityOptions,
} from '@temporalio/common';
import { ErrorCodes } from 'temporal-user-context/workflow';
import { isInstruction, isRecord, type AgentMessage } from '../providers/types.js';

/** Codes this app raises itself: with the library's `USER_CONTEXT_*` codes, all a run record shows. */
export const RunErrorCodes = {
  AGENT_NOT_FOUND: 'AGENT_NOT_FOUND',
  RUN_NOT_FOUND: 'RUN_NOT_FOUND',
  TOOL_NOT_ENABLED: 'TOOL_NOT_ENABLED',
  /** The model provider refused the request (an unknown model, a bad key, a conversation too long). */
  MODEL_REJECTED: 'MODEL_REJECTED',
  /** The model provider's answer was not one a step can use (no message, a tool name not a string). */
  MODEL_RESPONSE_INVALID: 'MODEL_RESPONSE_INVALID',
  UNKNOWN_TOOL: 'UNKNOWN_TOOL',
  STEP_LIMIT_EXCEEDED: 'STEP_LIMIT_EXCEEDED',
  ACTIVITY_TIMEOUT: 'ACTIVITY_TIMEOUT',
  CANCELLED: 'CANCELLED',
  RUN_FAILED: 'RUN_FAILED',
  /**
   * An instruction's update, when the run has ended or been cancelled (refused by the validator), or
   * ended while its sender was being verified: nothing applies it.
   */
  RUN_FINISHED: 'RUN_FINISHED',
  /** An instruction's update: empty, too long, or with control characters or unpaired surrogates. */
  INSTRUCTION_INVALID: 'INSTRUCTION_INVALID',
  /** An instruction's update: the run has `MAX_INSTRUCTIONS` already. */
  INSTRUCTION_LIMIT: 'INSTRUCTION_LIMIT',
  /**
   * An instruction's update while `MAX_VERIFYING_INSTRUCTIONS` others' senders are being verified:
   * nothing was applied; send it again shortly.
   */
  INSTRUCTION_BUSY: 'INSTRUCTION_BUSY',
  /**
   * What a run would carry to its next generation is over {@link MAX_CONTINUE_AS_NEW_BYTES} (a task
   * from a client of its own, near Temporal's payload limit): the server would refuse the
   * continue-as-new for good, and the run would never end.
   */
  CONVERSATION_TOO_LARGE: 'CONVERSATION_TOO_LARGE',
  /**
   * The workflow's input is not an object, or its carried state lacks the lists every generation
   * reads: only a client of its own (not the API, not a continue-as-new) starts such a run.
   */
  RUN_INPUT_INVALID: 'RUN_INPUT_INVALID',
  /** Written by the API, not the workflow: its start call failed, though the server may have started it. */
  START_FAILED: 'START_FAILED',
  /** Written by the API, not the workflow: the run was terminated, or timed out, through Temporal. */
  RUN_TERMINATED: 'RUN_TERMINATED',
  RUN_TIMED_OUT: 'RUN_TIMED_OUT',
  /**
   * Written by the API, not the workflow: the run did start (its record has a Temporal run id) and
   * Temporal no longer knows it (ended, and past the namespace's retention) while its record still
   * said it was open.
   */
  RUN_LOST: 'RUN_LOST',
} as const;

/** Failures that retrying cannot fix: refusals, missing rows, a model asking for a tool it lacks. */
export const NON_RETRYABLE_ERROR_TYPES: readonly string[] = [
  ...Object.values(ErrorCodes),
  RunErrorCodes.AGENT_NOT_FOUND,
  RunErrorCodes.RUN_NOT_FOUND,
  RunErrorCodes.TOOL_NOT_ENABLED,
];

/**
 * Every activity retries through a database or model-provider outage of a few minutes: the waits grow
 * 1, 2, 4, 8, 16 s and then stay at 30 s, for up to 12 attempts (3.5 min of waiting when attempts fail
 * fast). `scheduleToCloseTimeout` bounds one activity, all attempts included, when attempts hang until
 * `startToCloseTimeout` instead. Non-retryable refusals still fail on their first attempt.
 */
export const ACTIVITY_OPTIONS = {
  startToCloseTimeout: '90s',
  scheduleToCloseTimeout: '10m',
  retry: {
    initialInterval: '1s',
    backoffCoefficient: 2,
    maximumInterval: '30s',
    maximumAttempts: 12,
    nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES],
  },
} satisfies ActivityOptions;

/**
 * How long a model step may go without a heartbeat: a step whose worker died is tried again after 30 s
 * rather than after `startToCloseTimeout`. Far above how often heartbeats are sent
 * ({@link MODEL_STEP_HEARTBEAT_MS}, {@link HEARTBEAT_THROTTLE_MS}): a stalled event loop or a slow
 * heartbeat call does not time a healthy step out (and call the model twice).
 */
export const MODEL_STEP_HEARTBEAT_TIMEOUT_MS = 30_000;
/** How often a model step heartbeats while its provider works. */
export const MODEL_STEP_HEARTBEAT_MS = 2_000;
/**
 * The worker's `maxHeartbeatThrottleInterval`: it sends an activity's heartbeats at most this often
 * (else at most every 80% of the heartbeat timeout, 24 s). A cancellation of the step (its run
 * cancelled) reaches it only in a heartbeat's answer: within about 3 s.
 */
export const HEARTBEAT_THROTTLE_MS = 3_000;

/** The model step's options: every activity's, and a heartbeat timeout (changing it needs no patch). */
export const MODEL_STEP_OPTIONS = {
  ...ACTIVITY_OPTIONS,
  heartbeatTimeout: MODEL_STEP_HEARTBEAT_TIMEOUT_MS,
} satisfies ActivityOptions;

/**
 * Model steps one run lineage may take, all continue-as-new generations together, unless the input
 * asks for fewer.
 */
export const DEFAULT_MAX_TOTAL_STEPS = 100;
/** The most `maxTotalSteps` may ask for. */
export const MAX_TOTAL_STEPS_LIMIT = 1000;
/** Instructions one run lineage accepts; later ones are refused by the update validator. */
export const MAX_INSTRUCTIONS = 50;
/**
 * Instructions whose senders may be verified at once; the validator refuses more
 * (`INSTRUCTION_BUSY`). A run verifies senders one at a time (the library's serial verification), each
 * bounded by its local activity's attempts (3 × 30 s, ~93 s), and a `cancel` signal's verification
 * queues behind them: with at most two ahead of it, it starts well inside its actor token's 5-minute
 * window. Without a bound, a queue of instructions during a revocation store's outage let the window
 * pass, and the cancel the API had answered 202 was refused as expired and dropped.
 */
export const MAX_VERIFYING_INSTRUCTIONS = 2;
/** Messages carried into the next generation besides the task and instructions ({@link boundMessages}). */
export const MAX_CARRIED_MESSAGES = 40;
/** Characters kept of each carried tool, assistant or revision message. */
export const MAX_CARRIED_MESSAGE_CHARS = 4000;
/**
 * Bytes (as JSON text in UTF-8, {@link conversationBytes}) of the carried tool, assistant and revision
 * messages together: the most recent are kept while they fit (40 of 4000 characters could weigh
 * 960 KB were every character a control character).
 */
export const MAX_CARRIED_OTHER_BYTES = 300_000;

/**
 * The conversation a model step is sent, in bytes of its messages' contents as JSON text in UTF-8
 * ({@link conversationBytes}), above which the run continues as new (carrying {@link boundMessages})
 * before its next step. Within one generation the messages only grow (each step's tool result or answer,
 * each instruction): without a bound, a long conversation would pass Temporal's 2 MB payload limit in
 * the step's input, which no retry cures. What a generation carries is under it with the API's limits
 * (a unit test builds the heaviest case); a task sent by a client of its own may not be, and such a run
 * takes one step a generation ({@link conversationOverBudget}), or fails `CONVERSATION_TOO_LARGE` once
 * what it carries passes {@link MAX_CONTINUE_AS_NEW_BYTES}.
 */
export const MAX_CONVERSATION_BYTES = 1_000_000;

/**
 * The most a continue-as-new input may weigh (as JSON text in UTF-8, {@link payloadBytes}): Temporal's
 * default payload limit is 2 MiB (2 097 152 bytes; the worker takes the namespace's, and a namespace set
 * lower than this needs this lower too), and the codec's framing and the payload's metadata need a
 * little of it. With the API's limits a run carries at most ~1.35 MB (a unit test builds the heaviest
 * case). Lowering it is replay-safe; raising it is not without a new patch (a recorded failure would
 * replay as a continue-as-new).
 */
export const MAX_CONTINUE_AS_NEW_BYTES = 1_900_000;

/** `value` as JSON text in UTF-8, in bytes: what it weighs as a workflow's input. */
export function payloadBytes(value: unknown): number {
  // Asked once a generation, at its end: the copy is affordable (the workflow sandbox has TextEncoder).
  return new TextEncoder().encode(JSON.stringify(value) ?? '').length;
}

/** The UTF-8 length of `text` as a JSON string, quotes included: what it weighs in a payload. */
function jsonBytes(text: string): number {
  let bytes = 2;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20) bytes += c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6;
    else if (c === 0x22 || c === 0x5c) bytes += 2;
    else if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    // A surrogate: 2 bytes for each half of a pair (4 in all), 6 for a lone one (`\udXXX`).
    else if (c >= 0xd800 && c <= 0xdfff) bytes += isPaired(text, i) ? 2 : 6;
    else bytes += 3;
  }
  return bytes;
}

function isPaired(text: string, i: number): boolean {
  const c = text.charCodeAt(i);
  if (c <= 0xdbff) {
    const next = text.charCodeAt(i + 1);
    return next >= 0xdc00 && next <= 0xdfff;
  }
  const previous = text.charCodeAt(i - 1);
  return previous >= 0xd800 && previous <= 0xdbff;
}

/** The messages' contents as JSON text in UTF-8, in bytes ({@link MAX_CONVERSATION_BYTES}). */
export function conversationBytes(messages: readonly AgentMessage[]): number {
  let bytes = 0;
  for (const message of messages) bytes += jsonBytes(message.content);
  return bytes;
}

/**
 * Whether the conversation is over {@link MAX_CONVERSATION_BYTES} and this generation has taken a step
 * (so that a run whose carried messages alone are over it takes one step a generation instead of
 * continuing as new for ever).
 */
export function conversationOverBudget(messages: readonly AgentMessage[], stepsThisRun: number): boolean {
  return stepsThisRun > 0 && conversationBytes(messages) > MAX_CONVERSATION_BYTES;
}

/**
 * Refuses (`RUN_INPUT_INVALID`, non-retryable) a workflow input the workflow could not read: not an
 * object; without carried state, a task (`input`) that is not text; carried state (`carried`, given)
 * that is not an object with `pending` and `instructions` lists and `messages` whose role and content
 * are text. Workflow code reading it would throw a TypeError (at once, or at its first step's
 * conversation budget), which fails the workflow task again at every retry, for good and with no code;
 * the run fails instead. Nothing else is checked: what the workflow reads leniently (numbers as
 * strings, say) it keeps reading so.
 */
export function assertRunInput(params: unknown): void {
  const problem = !isRecord(params)
    ? 'the input is not an object'
    : params.carried !== undefined && params.carried !== null
      ? carriedIsReadable(params.carried)
        ? undefined
        : 'the carried state is not an object with messages (role and content text), pending and instructions lists'
      : typeof params.input !== 'string'
        ? 'the task (input) is not text'
        : undefined;
  if (problem === undefined) return;
  throw ApplicationFailure.create({
    type: RunErrorCodes.RUN_INPUT_INVALID,
    message: problem,
    nonRetryable: true,
  });
}

function carriedIsReadable(carried: unknown): boolean {
  return (
    isRecord(carried) &&
    Array.isArray(carried.messages) &&
    carried.messages.every(
      (m) => isRecord(m) && typeof m.role === 'string' && typeof m.content === 'string',
    ) &&
    Array.isArray(carried.pending) &&
    Array.isArray(carried.instructions)
  );
}

/** `value` as an integer in [min, max]; `fallback` unless it is a finite number (payloads hold anything). */
export function clampInt(value: unknown, fallback: number, min: number, max: number): number {
  const n = typeof value === 'number' && Number.isFinite(value) ? Math.trunc(value) : fallback;
  return Math.min(Math.max(n, min), max);
}

/**
 * The conversation a continue-as-new generation starts from. Kept whole: the first message (the task
 * the run was started with) and every instruction (at most {@link MAX_INSTRUCTIONS}, each at most 2000
 * characters without control characters but tab and line breaks), because dropping either would change
 * what the run is asked to do. Of the rest — tool results, answers, revision prompts — only the most
 * recent, at most {@link MAX_CARRIED_MESSAGES} of them and {@link MAX_CARRIED_OTHER_BYTES} together, each
 * cut to {@link MAX_CARRIED_MESSAGE_CHARS} characters: older tool results are what a model needs least.
 * With the API's limits the whole continue-as-new input stays under ~1.35 MB, below Temporal's 2 MB
 * payload limit, however long the lineage runs (a unit test builds the worst case). Order is preserved.
 * Tool results reach providers as plain user text, so dropping one never orphans a tool call.
 */
export function boundMessages(messages: readonly AgentMessage[]): AgentMessage[] {
  const cutMessages = messages.map((m, i) =>
    i === 0 || isInstruction(m) || m.content.length <= MAX_CARRIED_MESSAGE_CHARS
      ? m
      : { ...m, content: `${sliceWhole(m.content, MAX_CARRIED_MESSAGE_CHARS - 1)}…` },
  );
  let others = 0;
  let otherBytes = 0;
  const keep = new Array<boolean>(messages.length).fill(false);
  for (let i = cutMessages.length - 1; i >= 0; i--) {
    const message = cutMessages[i] as AgentMessage;
    if (i === 0 || isInstruction(message)) {
      keep[i] = true;
      continue;
    }
    // Newest first: once one does not fit, no older one is kept (the kept ones stay contiguous).
    otherBytes += conversationBytes([message]);
    keep[i] = others++ < MAX_CARRIED_MESSAGES && otherBytes <= MAX_CARRIED_OTHER_BYTES;
    if (!keep[i]) others = MAX_CARRIED_MESSAGES;
  }
  return cutMessages.filter((_, i) => keep[i]);
}

/** The first `end` UTF-16 units of `text`, one fewer when the last would split a surrogate pair. */
function sliceWhole(text: string, end: number): string {
  const last = text.charCodeAt(end - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? end - 1 : end);
}

/**
 * Whether an instruction may be carried and sent: no C0 control character (U+0000–U+001F) but tab and
 * line breaks (each would weigh 6 bytes as JSON, and NUL is no PostgreSQL text), no unpaired surrogate. The
 * API refuses the same (400); the update's validator refuses what a client of its own sends.
 */
export function isInstructionText(text: string): boolean {
  return !UNCARRIED.test(text);
}
const UNCARRIED =
  // eslint-disable-next-line no-control-regex -- control characters are what it looks for
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const STABLE_CODES: ReadonlySet<string> = new Set([
  ...Object.values(ErrorCodes),
  ...Object.values(RunErrorCodes),
]);

/**
 * Whether `code` is one of the app's or the library's codes, rather than an error class name
 * (`DatabaseError`, `TypeError`) that the SDK puts in an ApplicationFailure's `type`.
 */
export function isStableCode(code: unknown): code is string {
  return typeof code === 'string' && STABLE_CODES.has(code);
}

/** True when the workflow was cancelled through Temporal (not the app's `cancel` signal). */
export function isCancelledFailure(err: unknown): boolean {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    if (e instanceof CancelledFailure) return true;
    if (!(e instanceof ActivityFailure || e instanceof ChildWorkflowFailure)) return false;
  }
  return false;
}

/**
 * The stable code a failed run records. Only codes from {@link RunErrorCodes} and the library's
 * `ErrorCodes` pass: anything else an activity threw reaches the workflow as an ApplicationFailure
 * whose `type` is the thrown error's class name (`DatabaseError`, `TypeError`...), an implementation
 * detail that must not become part of the run record's contract, so it is `RUN_FAILED`.
 */
export function runFailureCode(err: unknown): string {
  if (isCancelledFailure(err)) return RunErrorCodes.CANCELLED;
  const failure = err instanceof ActivityFailure ? err.cause : err;
  if (err instanceof ActivityFailure && failure instanceof TimeoutFailure)
    return RunErrorCodes.ACTIVITY_TIMEOUT;
  if (failure instanceof ApplicationFailure && isStableCode(failure.type)) return failure.type;
  return RunErrorCodes.RUN_FAILED;
}
