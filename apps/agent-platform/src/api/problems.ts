import { CommitOutcomeUnknownError } from 'temporal-user-context/postgres';
import {
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  WorkflowFailedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  isGrpcDeadlineError,
  isGrpcServiceError,
  QueryNotRegisteredError,
  ServiceError,
} from '@temporalio/client';
import {
  ApplicationFailure,
  CancelledFailure,
  TemporalFailure,
  TerminatedFailure,
  TimeoutFailure,
} from '@temporalio/common';
import { ErrorCodes, isUserContextError, type UserContextErrorCode } from 'temporal-user-context';
import { AuthError } from '../auth/verify.js';
import type { AgentRun, RunRecordEnding } from '../data/repositories/index.js';
import type { AgentExecutionResult } from '../workflows/agent-execution.js';
import { RunErrorCodes, isCancelledFailure, isStableCode, runFailureCode } from '../workflows/run-policy.js';

export const PROBLEM_BASE = 'https://agent-platform.example/problems/';

/** An RFC 7807 problem document. `code` is stable: clients match on it, never on `title`. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  /** A run the refused request may have started: a start's 503 or 504 (`GET /runs/:runId` tells). */
  runId?: string;
  /** A schedule the refused request may have created: a schedule create's 504. */
  scheduleId?: string;
}

/** Extension members of a problem (RFC 9457 §3.2): what a client acts on without reading `detail`. */
export type ProblemExtensions = Pick<Problem, 'runId' | 'scheduleId'>;

/**
 * For a signal or update to a run whose record the caller can see: the server's "workflow not found"
 * then means the run has ended (a closed execution takes no signals or updates), or never started.
 * That is the state of things (409 `RUN_NOT_RUNNING`), not a refusal or a guessed id (404, audited).
 * Returns on anything else.
 */
export function throwIfRunEnded(err: unknown): void {
  if (err instanceof WorkflowNotFoundError)
    throw new ProblemError(409, 'RUN_NOT_RUNNING', 'Run is not running', 'it has ended, or never started');
}

export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly title: string,
    readonly detail?: string,
    readonly extensions?: ProblemExtensions,
  ) {
    super(title);
  }
}

export function problem(
  status: number,
  code: string,
  title: string,
  detail?: string,
  extensions?: ProblemExtensions,
): Problem {
  return {
    type: `${PROBLEM_BASE}${code.toLowerCase().replace(/_/g, '-')}`,
    title,
    status,
    code,
    ...(detail ? { detail } : {}),
    ...extensions,
  };
}

const USER_CONTEXT_STATUS: Record<UserContextErrorCode, [number, string]> = {
  [ErrorCodes.MISSING]: [401, 'No user context'],
  [ErrorCodes.INVALID]: [401, 'Invalid user context'],
  [ErrorCodes.TOO_LARGE]: [400, 'User context too large'],
  [ErrorCodes.HEADER_MALFORMED]: [400, 'Malformed context header'],
  [ErrorCodes.TOKEN_INVALID]: [403, 'Context token invalid'],
  [ErrorCodes.KEY_UNKNOWN]: [403, 'Context key unknown'],
  [ErrorCodes.TOKEN_EXPIRED]: [403, 'Context token expired'],
  [ErrorCodes.AUDIENCE_MISMATCH]: [403, 'Context audience mismatch'],
  [ErrorCodes.LINEAGE_MISMATCH]: [403, 'Context lineage mismatch'],
  [ErrorCodes.EXPLICIT_MISMATCH]: [403, 'Explicit context mismatch'],
  [ErrorCodes.ACTOR_FORBIDDEN]: [403, 'Actor not allowed on this run'],
  // The workflow's own policy threw: a fault on our side, not a refusal the caller can act on.
  [ErrorCodes.POLICY_FAILED]: [500, 'Actor policy failed'],
  [ErrorCodes.SYSTEM_PRINCIPAL_FORBIDDEN]: [403, 'System principal not allowed'],
  [ErrorCodes.MEMBERSHIP_REVOKED]: [403, 'Not a member of this workspace'],
  [ErrorCodes.ROLE_MISSING]: [403, 'Role missing'],
  [ErrorCodes.REVOKED]: [403, 'Context revoked'],
  [ErrorCodes.PLAINTEXT_PAYLOAD]: [400, 'Plaintext payload refused'],
  [ErrorCodes.PAYLOAD_TAMPERED]: [400, 'Payload tampered'],
  [ErrorCodes.MISCONFIGURED]: [500, 'Server misconfigured'],
};

function isUserContextCode(code: unknown): code is UserContextErrorCode {
  return typeof code === 'string' && code in USER_CONTEXT_STATUS;
}

/**
 * The first stable code in a Temporal failure's cause chain: an ApplicationFailure `type` the platform
 * or the library chose, or a library error's code. The SDK also fills `type` with the class name of any
 * other error an activity throws; that names internals and is skipped (callers fall back to
 * `RUN_FAILED`).
 */
export function failureCode(err: unknown): string | undefined {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    if (e instanceof ApplicationFailure && isStableCode(e.type)) return e.type;
    if (isUserContextError(e)) return e.code;
  }
  return undefined;
}

/** How a run that is over ended, when it did not return a result. */
export type RunEnding =
  | { status: 'failed'; error: { code: string } }
  | { status: 'cancelled'; error: { code: typeof RunErrorCodes.CANCELLED } }
  | { status: 'terminated'; error: { code: typeof RunErrorCodes.RUN_TERMINATED } }
  | { status: 'timed_out'; error: { code: typeof RunErrorCodes.RUN_TIMED_OUT } };

/**
 * Endings no workflow code sees (Temporal's status name → the ending): the API reports them, and
 * writes them on the run record, since the workflow cannot.
 */
export const ENDED_OUTSIDE = {
  TERMINATED: { status: 'terminated', error: { code: RunErrorCodes.RUN_TERMINATED } },
  TIMED_OUT: { status: 'timed_out', error: { code: RunErrorCodes.RUN_TIMED_OUT } },
} as const satisfies Record<string, RunEnding>;

/**
 * How a closed run record says its run ended, for a run Temporal no longer has (past the namespace's
 * retention): its result, or its ending by the code the record holds. `undefined` for a record still
 * open, whose run is then lost (settling at the limit marks it `RUN_LOST`).
 */
export function recordedEnding(
  run: Pick<AgentRun, 'status' | 'result' | 'error'>,
): { status: 'completed' | 'cancelled'; result: AgentExecutionResult } | RunEnding | undefined {
  // An ending recorded by its code (a run cancelled through Temporal) keeps the result a completion
  // written before it left (write-ending-whole): the code is the ending.
  if (
    (run.status === 'completed' || run.status === 'cancelled') &&
    !run.error &&
    run.result &&
    typeof run.result === 'object'
  )
    return { status: run.status, result: run.result as AgentExecutionResult };
  if (run.status !== 'failed' && run.status !== 'cancelled') return undefined;
  const code = publicErrorCode(run.error ?? RunErrorCodes.RUN_FAILED);
  if (code === RunErrorCodes.RUN_TERMINATED) return ENDED_OUTSIDE.TERMINATED;
  if (code === RunErrorCodes.RUN_TIMED_OUT) return ENDED_OUTSIDE.TIMED_OUT;
  if (code === RunErrorCodes.CANCELLED) return { status: 'cancelled', error: { code } };
  return { status: 'failed', error: { code } };
}

/**
 * What a run record says of an ending the API saw: the result (`completed`, or `cancelled` by the
 * platform's cancel), or `failed`/`cancelled` with the ending's code (a terminated or timed-out run is
 * `failed`, as the workflow would have written it had it run).
 */
export function recordEndingOf(
  outcome: { status: 'completed' | 'cancelled'; result: AgentExecutionResult } | RunEnding,
): RunRecordEnding {
  if ('result' in outcome) return { status: outcome.status, result: outcome.result };
  return { status: outcome.status === 'cancelled' ? 'cancelled' : 'failed', error: outcome.error.code };
}

/** The ending of a run Temporal reports as `status`, when no workflow code could record it. */
export function outsideEnding(status: string): RunEnding | undefined {
  return status === 'TERMINATED' || status === 'TIMED_OUT' ? ENDED_OUTSIDE[status] : undefined;
}

/**
 * A run record's error as clients see it: the platform's and the library's codes pass, anything else
 * (an error class name that older workflow versions wrote) is `RUN_FAILED`.
 */
export function publicErrorCode(error: string): string {
  return isStableCode(error) ? error : RunErrorCodes.RUN_FAILED;
}

/**
 * The ending a closed run's `result()` rejected with; `undefined` for anything but a run's end. A
 * failure or cancellation the workflow saw has the code the workflow wrote on the run record
 * ({@link runFailureCode} of what it threw). A terminated or timed-out run ran no workflow code to
 * record it, so those codes exist only here.
 */
export function runEnding(err: unknown): RunEnding | undefined {
  if (!(err instanceof WorkflowFailedError)) return undefined;
  // Only the direct cause says how the run itself ended: a timed-out activity inside a failed run is
  // a failure of the run.
  if (err.cause instanceof CancelledFailure)
    return { status: 'cancelled', error: { code: RunErrorCodes.CANCELLED } };
  if (err.cause instanceof TerminatedFailure) return ENDED_OUTSIDE.TERMINATED;
  if (err.cause instanceof TimeoutFailure) return ENDED_OUTSIDE.TIMED_OUT;
  return { status: 'failed', error: { code: runFailureCode(err.cause) } };
}

/**
 * The server's failure of an update accepted by a run that then closed without answering it (a run
 * terminated, timed out, or from before `settle-instructions`, while the sender was being verified).
 */
const ACCEPTED_UPDATE_COMPLETED_WORKFLOW = 'AcceptedUpdateCompletedWorkflow';

/**
 * Whether an update failed because its run ended or is ending: the workflow's `RUN_FINISHED`, the
 * server's failure of an update its closed run left unanswered, or the run's cancellation through
 * Temporal, which cancels the handler's verification of its sender (a local activity: the cancellation
 * comes wrapped in its ActivityFailure).
 */
function updateOutlivedRun(err: WorkflowUpdateFailedError, code: string | undefined): boolean {
  return (
    code === RunErrorCodes.RUN_FINISHED ||
    (err.cause instanceof ApplicationFailure && err.cause.type === ACCEPTED_UPDATE_COMPLETED_WORKFLOW) ||
    isCancelledFailure(err.cause)
  );
}

/**
 * A call Temporal could not be reached for (gRPC `UNAVAILABLE`, 14: the server down or restarting),
 * here or in the error's causes. Found by review: it was a 500 `INTERNAL`, which clients cannot tell
 * from a bug; it is worth retrying.
 */
/** The server's FAILED_PRECONDITION, here or in the error's causes. */
export function isFailedPrecondition(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++)
    // Not this library's refusals, which its gRPC interceptor answers with the same status (a refused
    // schedule update): those are final.
    if (isGrpcServiceError(e) && e.code === 9 && !(e.details ?? e.message).includes('USER_CONTEXT_'))
      return true;
  return false;
}

/**
 * A query or update of a running workflow whose workflow task keeps failing (the server's
 * `FAILED_PRECONDITION`, "Workflow Task in failed state"): the run is stalled until its task can run
 * again (a worker fixed, an operator's reset), not a fault of this API.
 */
export function isRunStalled(err: unknown): boolean {
  // FAILED_PRECONDITION also answers a namespace failing over or a run whose first task waits for its
  // start delay (found by review): only the server's word for a failing task is taken.
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++)
    if (
      isGrpcServiceError(e) &&
      e.code === 9 &&
      // "…due to Workflow Task in failed state", or, before the server fails fast, "…due to unexpected
      // workflow task failure" (found by review).
      /workflow task in failed state|unexpected workflow task failure/i.test(e.details ?? e.message)
    )
      return true;
  return false;
}

function isGrpcUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++)
    if (isGrpcServiceError(e) && e.code === 14) return true;
  return false;
}

/**
 * The database unavailable or past its limits (config.ts, POOL_LIMITS), here or in the error's causes:
 * no pool slot within the wait, no connection (refused, reset, timed out, lost, not resolved, or
 * broken by a limit), a statement cancelled (57014: its timeout, or an operator), the server shutting
 * down or starting (57P01–57P03, 57P05), too many connections (53300), a connection exception (class
 * 08, but for 08P01, which a query whose parameters do not match its text raises). Worth retrying;
 * found by review as 500 `INTERNAL`. Not a Temporal failure's causes (what a workflow or an activity
 * threw, judged by the branches after this one), nor an HTTP error (Fastify's `ECONNRESET`, status 400,
 * for a client that left mid-body): found by review, each answered 503. A system error's code counts
 * only on an error from a system call (`syscall`), as the connection's are.
 */
function isDatabaseStalled(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof TemporalFailure || typeof (e as { statusCode?: unknown }).statusCode === 'number')
      return false;
    const { code } = e as { code?: unknown };
    if (typeof code === 'string') {
      if (SQLSTATES_UNAVAILABLE.has(code)) return true;
      if (fromSystemCall(e) && SYSTEM_ERRORS_UNAVAILABLE.has(code)) return true;
    }
    if (DATABASE_UNAVAILABLE_MESSAGES.has(e.message)) return true;
  }
  return false;
}
const SQLSTATES_UNAVAILABLE: ReadonlySet<string> = new Set([
  '57014',
  '57P01',
  '57P02',
  '57P03',
  '57P04',
  '57P05',
  '53300',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '08007',
]);
const SYSTEM_ERRORS_UNAVAILABLE: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * An error of a system call, or the `AggregateError` Node 20 raises when every address of a host
 * refused (its `autoSelectFamily`: the code on the whole, the call on each; found by review, a host
 * with an IPv4 and an IPv6 address, such as `localhost`, answered 500).
 */
function fromSystemCall(e: Error): boolean {
  const called = (x: unknown) => typeof (x as { syscall?: unknown } | null)?.syscall === 'string';
  return called(e) || (e instanceof AggregateError && e.errors.some(called));
}
/** What pg and pg-pool throw without a code. */
const DATABASE_UNAVAILABLE_MESSAGES: ReadonlySet<string> = new Set([
  'timeout exceeded when trying to connect',
  // No answer within the adapter's queryTimeoutMs (found by review: answered 500).
  'Query read timeout',
  'Connection terminated due to connection timeout',
  'Connection terminated unexpectedly',
  'Client has encountered a connection error and is not queryable',
]);

/** Maps any error to a problem document; unknown errors become a generic 500 with no internals. */
export function toProblem(err: unknown): Problem {
  if (err instanceof ProblemError)
    return problem(err.status, err.code, err.title, err.detail, err.extensions);
  if (err instanceof AuthError)
    return err.code === 'AUTH_UNAVAILABLE'
      ? problem(503, err.code, 'Identity provider unavailable')
      : problem(401, err.code, 'Unauthorized');
  if (isUserContextError(err)) {
    const [status, title] = USER_CONTEXT_STATUS[err.code];
    return problem(status, err.code, title);
  }
  const validation = (err as { validation?: unknown; statusCode?: number }).validation;
  if (validation)
    return problem(400, 'VALIDATION_FAILED', 'Request validation failed', (err as Error).message);
  if (err instanceof WorkflowNotFoundError) return problem(404, 'RUN_NOT_FOUND', 'Run not found');
  if (err instanceof ScheduleNotFoundError) return problem(404, 'SCHEDULE_NOT_FOUND', 'Schedule not found');
  if (err instanceof ScheduleAlreadyRunning)
    return problem(409, 'SCHEDULE_EXISTS', 'Schedule already exists');
  if (isGrpcDeadlineError(err)) return problem(504, 'TEMPORAL_TIMEOUT', 'Temporal did not answer in time');
  if (isGrpcUnavailable(err)) return problem(503, 'TEMPORAL_UNAVAILABLE', 'Temporal is unavailable');
  // A run whose task keeps failing (RUN_STALLED where a route says so), a namespace failing over, a run
  // whose first task waits for its start: the server's state for now, not a fault of this API.
  if (isFailedPrecondition(err))
    return problem(503, 'TEMPORAL_UNAVAILABLE', 'Temporal cannot serve this now', 'try again later');
  if (err instanceof WorkflowUpdateFailedError || err instanceof WorkflowFailedError) {
    const code = failureCode(err);
    if (isUserContextCode(code)) {
      const [status, title] = USER_CONTEXT_STATUS[code];
      return problem(status, code, title);
    }
    // The run ended, or was cancelled and is closing: the state of things, as for a run gone already.
    if (err instanceof WorkflowUpdateFailedError && updateOutlivedRun(err, code))
      return problem(409, 'RUN_NOT_RUNNING', 'Run is not running', safeMessage(err.cause));
    // The server's own rejection of an update a worker's workflow task left unprocessed (a task that
    // failed, a worker of another version): no validator judged it, and nothing was applied, so the
    // same instruction may be sent again (found by review: answered 409 INSTRUCTION_REJECTED).
    if (
      err instanceof WorkflowUpdateFailedError &&
      err.cause instanceof ApplicationFailure &&
      err.cause.type === 'UnprocessedUpdate'
    )
      return problem(
        503,
        'INSTRUCTION_NOT_TAKEN',
        'Instruction not taken',
        'the run did not process it (its workflow task failed or ended without it): nothing was applied; send it again',
      );
    // Busy for now, not refused: the same instruction may be sent again.
    if (err instanceof WorkflowUpdateFailedError && code === RunErrorCodes.INSTRUCTION_BUSY)
      return problem(
        503,
        'INSTRUCTION_BUSY',
        'The run is busy verifying instructions',
        safeMessage(err.cause),
      );
    if (err instanceof WorkflowUpdateFailedError)
      return problem(409, 'INSTRUCTION_REJECTED', 'Instruction rejected', safeMessage(err.cause));
    return problem(409, code ?? 'RUN_FAILED', 'Run failed');
  }
  // Query refusals arrive as a gRPC/query failure whose message carries the stable code; only those
  // are read so (another error's message may quote a code it did not raise).
  const message = err instanceof Error ? err.message : '';
  const queryFailure = err instanceof QueryNotRegisteredError || err instanceof ServiceError;
  const code = queryFailure ? Object.values(ErrorCodes).find((c) => message.includes(c)) : undefined;
  if (code) {
    const [status, title] = USER_CONTEXT_STATUS[code];
    return problem(status, code, title);
  }
  // Its COMMIT got no answer: what the request changed may be in the database (found by review: 500).
  if (err instanceof CommitOutcomeUnknownError)
    return problem(
      503,
      'DATABASE_UNAVAILABLE',
      'The database is unavailable',
      'its answer to the last change was lost: the change may have been made; check before sending it again',
    );
  if (isDatabaseStalled(err)) return problem(503, 'DATABASE_UNAVAILABLE', 'The database is unavailable');
  const statusCode = (err as { statusCode?: number }).statusCode;
  // A refusal of the framework's or a plugin's: its code says what its status says (found by review: the
  // documentation's static files refused a path out of their folder with 403 `BAD_REQUEST`).
  if (statusCode === 403) return problem(403, 'FORBIDDEN', 'Forbidden');
  if (statusCode === 404) return problem(404, 'NOT_FOUND', 'Not found');
  if (statusCode && statusCode >= 400 && statusCode < 500)
    return problem(statusCode, 'BAD_REQUEST', 'Bad request', message);
  return problem(500, 'INTERNAL', 'Internal server error');
}

function safeMessage(err: unknown): string | undefined {
  return err instanceof TemporalFailure || err instanceof Error ? err.message.slice(0, 200) : undefined;
}

/** A thing of this workspace that is not there, or not the caller's to see (the two answer alike). */
export function notFound(what: string): ProblemError {
  return new ProblemError(
    404,
    `${what.toUpperCase()}_NOT_FOUND`,
    `${what[0]?.toUpperCase()}${what.slice(1)} not found`,
  );
}

/** A workspace at one of its limits (`quotas`): 429, for the caller to try again once work ends. */
export function quotaExceeded(what: string, limit: number): ProblemError {
  return new ProblemError(
    429,
    'QUOTA_EXCEEDED',
    'The workspace is at a limit',
    `at most ${limit} ${what} per workspace`,
  );
}
