import { CommitOutcomeUnknownError } from 'temporal-user-context/postgres';
import { QueryNotRegisteredError, WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  RetryState,
  TerminatedFailure,
  TimeoutFailure,
  TimeoutType,
} from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from 'temporal-user-context';
import { failureCode, isRunStalled, recordedEnding, runEnding, toProblem } from '../../src/api/problems.js';
import { runFailureCode } from '../../src/workflows/run-policy.js';

/** A run failed by an activity, as the client decodes it: WorkflowFailedError → ActivityFailure → cause. */
function failedRun(cause: Error): WorkflowFailedError {
  const activity = new ActivityFailure(
    'Activity task failed',
    'modelStep',
    '1',
    RetryState.MAXIMUM_ATTEMPTS_REACHED,
    'worker',
    cause,
  );
  return new WorkflowFailedError('Workflow execution failed', activity, RetryState.NON_RETRYABLE_FAILURE);
}

/** What the SDK makes of any other error an activity throws: its class name becomes the type. */
const classNamed = (name: string) =>
  ApplicationFailure.create({ type: name, message: 'relation "agents" does not exist' });

describe('failure codes', () => {
  it('passes the codes the platform and the library raise', () => {
    expect(failureCode(failedRun(ApplicationFailure.nonRetryable('x', 'TOOL_NOT_ENABLED')))).toBe(
      'TOOL_NOT_ENABLED',
    );
    expect(failureCode(failedRun(ApplicationFailure.nonRetryable('x', ErrorCodes.MEMBERSHIP_REVOKED)))).toBe(
      ErrorCodes.MEMBERSHIP_REVOKED,
    );
  });

  it('never gives an error class name as a code', () => {
    for (const name of ['DatabaseError', 'TypeError', 'Error', 'AbortError', 'URIError']) {
      const err = failedRun(classNamed(name));
      expect(failureCode(err)).toBeUndefined();
      expect(runEnding(err)).toEqual({ status: 'failed', error: { code: 'RUN_FAILED' } });
      const body = JSON.stringify(toProblem(err));
      expect(toProblem(err)).toMatchObject({ status: 409, code: 'RUN_FAILED' });
      expect(body).not.toContain(name);
    }
  });

  it('looks past a class name to a code further down the chain', () => {
    const wrapped = ApplicationFailure.create({
      type: 'Error',
      message: 'wrapped',
      cause: ApplicationFailure.nonRetryable('x', 'AGENT_NOT_FOUND'),
    });
    expect(failureCode(failedRun(wrapped))).toBe('AGENT_NOT_FOUND');
  });

  it('an update failing with a class name is an INSTRUCTION_REJECTED, not that name', () => {
    const err = new WorkflowUpdateFailedError('Workflow Update failed', classNamed('DatabaseError'));
    expect(toProblem(err)).toMatchObject({ status: 409, code: 'INSTRUCTION_REJECTED' });
    expect(toProblem(err).code).not.toContain('DatabaseError');
  });

  it("an update failing RUN_FINISHED (the run ended, or is cancelled and closing) is a 409 RUN_NOT_RUNNING; the validator's other codes are INSTRUCTION_REJECTED", () => {
    const failed = (type: string) =>
      new WorkflowUpdateFailedError(
        'Workflow Update failed',
        ApplicationFailure.create({ type, message: 'why', nonRetryable: true }),
      );
    expect(toProblem(failed('RUN_FINISHED'))).toMatchObject({ status: 409, code: 'RUN_NOT_RUNNING' });
    // The server's failure of an update its closed run left unanswered, and a run cancelled through
    // Temporal under the handler: the run is not running either.
    expect(toProblem(failed('AcceptedUpdateCompletedWorkflow'))).toMatchObject({ code: 'RUN_NOT_RUNNING' });
    expect(
      toProblem(new WorkflowUpdateFailedError('Workflow Update failed', new CancelledFailure('cancelled'))),
    ).toMatchObject({ status: 409, code: 'RUN_NOT_RUNNING' });
    // The server's own rejection of an update no worker processed: retryable, not the validator's.
    const unprocessed = new WorkflowUpdateFailedError(
      'Workflow Update failed',
      ApplicationFailure.create({
        type: 'UnprocessedUpdate',
        message: "Workflow Update is rejected because it wasn't processed by worker.",
        nonRetryable: true,
      }),
    );
    expect(toProblem(unprocessed)).toMatchObject({ status: 503, code: 'INSTRUCTION_NOT_TAKEN' });
    // The validator's "busy verifying others": nothing applied, send again (503, so Retry-After).
    expect(toProblem(failed('INSTRUCTION_BUSY'))).toMatchObject({ status: 503, code: 'INSTRUCTION_BUSY' });
    for (const type of ['INSTRUCTION_INVALID', 'INSTRUCTION_LIMIT', 'STEP_LIMIT_EXCEEDED'])
      expect(toProblem(failed(type))).toMatchObject({
        status: 409,
        code: 'INSTRUCTION_REJECTED',
        detail: 'why',
      });
  });
});

describe('Temporal unreachable', () => {
  it('is a 503 TEMPORAL_UNAVAILABLE, also as the cause of a client error; other gRPC errors stay 500', () => {
    const grpc = (code: number) =>
      Object.assign(new Error(`${code} UNAVAILABLE: No connection established`), {
        code,
        details: 'No connection established',
        metadata: {},
      });
    expect(toProblem(grpc(14))).toMatchObject({ status: 503, code: 'TEMPORAL_UNAVAILABLE' });
    expect(toProblem(new Error('start failed', { cause: grpc(14) }))).toMatchObject({
      status: 503,
      code: 'TEMPORAL_UNAVAILABLE',
    });
    expect(toProblem(grpc(13))).toMatchObject({ status: 500, code: 'INTERNAL' });
  });
});

describe('the database past its limits', () => {
  it('is a 503 DATABASE_UNAVAILABLE: no connection, a statement cancelled, the server going away', () => {
    const pgError = (code: string) => Object.assign(new Error(`database error ${code}`), { code });
    for (const err of [
      new Error('timeout exceeded when trying to connect'),
      new Error('Connection terminated due to connection timeout'),
      new Error('Connection terminated unexpectedly'),
      new Error('Client has encountered a connection error and is not queryable'),
      pgError('57014'),
      pgError('57P01'),
      pgError('53300'),
      pgError('08006'),
      Object.assign(pgError('ECONNREFUSED'), { syscall: 'connect' }),
      Object.assign(pgError('ENOTFOUND'), { syscall: 'getaddrinfo' }),
      // Every address of a host refused (Node 20's autoSelectFamily): the call named on each.
      Object.assign(
        new AggregateError(
          [
            Object.assign(pgError('ECONNREFUSED'), { syscall: 'connect' }),
            Object.assign(pgError('ECONNREFUSED'), { syscall: 'connect' }),
          ],
          'connect failed',
        ),
        { code: 'ECONNREFUSED' },
      ),
      new Error('scope failed', { cause: pgError('57P03') }),
      // No answer within the adapter's queryTimeoutMs (found by review: 500).
      new Error('Query read timeout'),
    ])
      expect(toProblem(err), err.message).toMatchObject({ status: 503, code: 'DATABASE_UNAVAILABLE' });
    // A COMMIT without an answer: the change may have been made, which the answer says.
    expect(
      toProblem(new CommitOutcomeUnknownError({ cause: new Error('Query read timeout') })),
    ).toMatchObject({
      status: 503,
      code: 'DATABASE_UNAVAILABLE',
      detail: expect.stringContaining('may have been made'),
    });
    for (const err of [
      pgError('23505'),
      pgError('42501'),
      new Error('Connection terminated'),
      // A query whose parameters do not match its text: a bug, not an outage.
      pgError('08P01'),
      // A system error's code from no system call.
      pgError('ECONNREFUSED'),
    ])
      expect(toProblem(err), err.message).toMatchObject({ status: 500, code: 'INTERNAL' });
    // Found by review: a client that left mid-body (Fastify's error) is a 400, not an outage.
    const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET', statusCode: 400 });
    expect(toProblem(aborted)).toMatchObject({ status: 400, code: 'BAD_REQUEST' });
    // A framework's refusal keeps a code that says what its status says.
    const outOfFolder = Object.assign(new Error('Forbidden'), { statusCode: 403 });
    expect(toProblem(outOfFolder)).toMatchObject({ status: 403, code: 'FORBIDDEN' });
    // What a workflow threw is the workflow's failure, whatever its message.
    const update = new WorkflowUpdateFailedError(
      'update failed',
      ApplicationFailure.create({ message: 'Connection terminated unexpectedly' }),
    );
    expect(toProblem(update)).toMatchObject({ status: 409, code: 'INSTRUCTION_REJECTED' });
  });
});

describe('query refusals', () => {
  it("take the code a query failure's message carries, and no other error's", () => {
    const refused = new QueryNotRegisteredError(
      `query refused: ${ErrorCodes.MEMBERSHIP_REVOKED}: no membership in workspace`,
      3,
    );
    expect(toProblem(refused)).toMatchObject({ code: ErrorCodes.MEMBERSHIP_REVOKED });
    // Any other error may quote a code it did not raise (a database message, a user's text).
    const quoted = new Error(`value "${ErrorCodes.MEMBERSHIP_REVOKED}" too long for type character varying`);
    expect(toProblem(quoted)).toMatchObject({ status: 500, code: 'INTERNAL' });
  });
});

describe('run endings', () => {
  it("a record's ending past retention: its result, unless it ended by a code written after one", () => {
    const result = { status: 'completed', answer: 'done', steps: 1, toolCalls: 0, instructions: [] };
    expect(recordedEnding({ status: 'completed', result, error: null })).toEqual({
      status: 'completed',
      result,
    });
    // Found by review: a run cancelled through Temporal while its completion was written (whole)
    // keeps that result on its record, under the cancellation's code.
    expect(recordedEnding({ status: 'cancelled', result, error: 'CANCELLED' })).toEqual({
      status: 'cancelled',
      error: { code: 'CANCELLED' },
    });
  });

  const ended = (cause: Error) =>
    runEnding(new WorkflowFailedError('ended', cause, RetryState.NON_RETRYABLE_FAILURE));

  it('names cancellation, termination and timeout, each with its code', () => {
    expect(ended(new CancelledFailure('Workflow canceled'))).toEqual({
      status: 'cancelled',
      error: { code: 'CANCELLED' },
    });
    expect(ended(new TerminatedFailure('operator'))).toEqual({
      status: 'terminated',
      error: { code: 'RUN_TERMINATED' },
    });
    expect(ended(new TimeoutFailure('timed out', undefined, TimeoutType.START_TO_CLOSE))).toEqual({
      status: 'timed_out',
      error: { code: 'RUN_TIMED_OUT' },
    });
  });

  it('an activity that timed out inside a run is a failure of the run, not a run timeout', () => {
    const activityTimeout = new TimeoutFailure('activity', undefined, TimeoutType.START_TO_CLOSE);
    expect(runEnding(failedRun(activityTimeout))).toEqual({
      status: 'failed',
      error: { code: 'ACTIVITY_TIMEOUT' },
    });
  });

  it('gives the code the workflow writes on the run record for what it threw', () => {
    const thrown: Array<[unknown, string]> = [
      [new CancelledFailure('Workflow canceled'), 'CANCELLED'],
      [
        failedRun(new TimeoutFailure('activity', undefined, TimeoutType.START_TO_CLOSE)).cause,
        'ACTIVITY_TIMEOUT',
      ],
      [failedRun(ApplicationFailure.nonRetryable('x', 'TOOL_NOT_ENABLED')).cause, 'TOOL_NOT_ENABLED'],
      [
        failedRun(ApplicationFailure.nonRetryable('x', ErrorCodes.MEMBERSHIP_REVOKED)).cause,
        ErrorCodes.MEMBERSHIP_REVOKED,
      ],
      // Not a stable code: an internal class name never reaches the record.
      [failedRun(classNamed('DatabaseError')).cause, 'RUN_FAILED'],
      [ApplicationFailure.nonRetryable('cap', 'STEP_LIMIT_EXCEEDED'), 'STEP_LIMIT_EXCEEDED'],
    ];
    for (const [cause, code] of thrown) {
      expect(runFailureCode(cause)).toBe(code); // what the workflow writes
      expect(ended(cause as Error)?.error.code).toBe(code); // what the API reads
    }
  });

  it('is undefined for anything but the end of a run', () => {
    expect(runEnding(new Error('network'))).toBeUndefined();
  });
});

describe('isRunStalled', () => {
  const grpc = (code: number, details: string) =>
    Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });
  it('takes FAILED_PRECONDITION for a stalled run only where the server says the task is failing', () => {
    expect(isRunStalled(grpc(9, 'Workflow Task in failed state.'))).toBe(true);
    // Before the server fails fast, the same stalled run is answered so.
    expect(
      isRunStalled(
        grpc(9, 'Unable to perform workflow execution update due to unexpected workflow task failure.'),
      ),
    ).toBe(true);
    // Wrapped, as the SDK's ServiceError carries it.
    expect(
      isRunStalled(new Error('query failed', { cause: grpc(9, 'Workflow Task in failed state.') })),
    ).toBe(true);
    // Found by review: the same status answers a namespace failing over and a run waiting for its start.
    expect(isRunStalled(grpc(9, 'Namespace: prod is not active in cluster: a'))).toBe(false);
    expect(isRunStalled(grpc(9, 'Workflow task is not scheduled yet.'))).toBe(false);
    expect(isRunStalled(grpc(14, 'Workflow Task in failed state.'))).toBe(false);
    // Those other answers are the server's state for now: 503, not 500.
    expect(toProblem(grpc(9, 'Namespace: prod is not active in cluster: a'))).toMatchObject({
      status: 503,
      code: 'TEMPORAL_UNAVAILABLE',
    });
    // This library's refusal of a schedule update, sent with the same status, is final: never a 503.
    expect(toProblem(grpc(9, 'USER_CONTEXT_MISCONFIGURED: the update would …')).status).not.toBe(503);
  });
});
