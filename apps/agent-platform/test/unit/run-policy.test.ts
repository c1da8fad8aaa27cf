import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  RetryState,
  TimeoutFailure,
  TimeoutType,
} from '@temporalio/common';
import { msToNumber } from '@temporalio/common/lib/time.js';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from 'temporal-user-context';
import { MAX_ANSWER_LENGTH } from '../../src/providers/index.js';
import type { AgentMessage } from '../../src/providers/types.js';
import type { AgentExecutionInput } from '../../src/workflows/agent-execution.js';
import {
  ACTIVITY_OPTIONS,
  MAX_CARRIED_MESSAGES,
  MAX_CARRIED_MESSAGE_CHARS,
  MAX_CARRIED_OTHER_BYTES,
  MAX_CONVERSATION_BYTES,
  MAX_INSTRUCTIONS,
  RunErrorCodes,
  assertRunInput,
  boundMessages,
  clampInt,
  conversationBytes,
  conversationOverBudget,
  isInstructionText,
  payloadBytes,
  runFailureCode,
} from '../../src/workflows/run-policy.js';

const activityFailure = (cause: Error) =>
  new ActivityFailure('activity failed', 'modelStep', '1', RetryState.MAXIMUM_ATTEMPTS_REACHED, 'w', cause);

describe('activity retry policy', () => {
  it('keeps retrying through an outage of a minute or more when attempts fail fast', () => {
    const { retry, scheduleToCloseTimeout } = ACTIVITY_OPTIONS;
    let waited = 0;
    let wait = msToNumber(retry.initialInterval);
    for (let attempt = 1; attempt < retry.maximumAttempts; attempt++) {
      waited += Math.min(wait, msToNumber(retry.maximumInterval));
      wait *= retry.backoffCoefficient;
    }
    expect(waited).toBeGreaterThanOrEqual(60_000);
    // The overall bound leaves room for that waiting plus a few slow attempts.
    expect(msToNumber(scheduleToCloseTimeout)).toBeGreaterThan(waited + 2 * msToNumber('90s'));
  });
});

describe('runFailureCode', () => {
  it('keeps the codes the app and the library define', () => {
    expect(runFailureCode(activityFailure(ApplicationFailure.nonRetryable('no', 'TOOL_NOT_ENABLED')))).toBe(
      'TOOL_NOT_ENABLED',
    );
    expect(
      runFailureCode(activityFailure(ApplicationFailure.nonRetryable('no', ErrorCodes.MEMBERSHIP_REVOKED))),
    ).toBe(ErrorCodes.MEMBERSHIP_REVOKED);
    expect(runFailureCode(ApplicationFailure.nonRetryable('cap', 'STEP_LIMIT_EXCEEDED'))).toBe(
      'STEP_LIMIT_EXCEEDED',
    );
  });

  it('hides error class names behind RUN_FAILED', () => {
    // What the SDK makes of a pg DatabaseError thrown in an activity once its retries are spent.
    expect(runFailureCode(activityFailure(ApplicationFailure.retryable('boom', 'DatabaseError')))).toBe(
      'RUN_FAILED',
    );
    expect(runFailureCode(activityFailure(ApplicationFailure.create({ message: 'x' })))).toBe('RUN_FAILED');
    expect(runFailureCode(ApplicationFailure.nonRetryable('x', 'TypeError'))).toBe('RUN_FAILED');
  });

  it('names activity timeouts and cancellation', () => {
    const timeout = new TimeoutFailure('timed out', undefined, TimeoutType.START_TO_CLOSE);
    expect(runFailureCode(activityFailure(timeout))).toBe('ACTIVITY_TIMEOUT');
    expect(runFailureCode(new CancelledFailure('cancelled'))).toBe('CANCELLED');
    expect(runFailureCode(activityFailure(new CancelledFailure('cancelled')))).toBe('CANCELLED');
  });
});

describe('boundMessages', () => {
  const task: AgentMessage = { role: 'user', content: 'the task '.repeat(2000) };
  const tool = (i: number): AgentMessage => ({ role: 'tool', tool: 'search', content: `result ${i}` });

  it('leaves a short conversation as it is', () => {
    const messages = [task, tool(1), { role: 'assistant' as const, content: 'done' }];
    expect(boundMessages(messages)).toEqual(messages);
  });

  it('keeps the task, every instruction and the most recent others, in order', () => {
    const instruction: AgentMessage = { role: 'system', content: 'answer in French' };
    const messages = [task, tool(0), instruction, ...Array.from({ length: 100 }, (_, i) => tool(i + 1))];
    const bounded = boundMessages(messages);
    expect(bounded).toHaveLength(2 + MAX_CARRIED_MESSAGES);
    expect(bounded[0]).toBe(task);
    expect(bounded[1]).toBe(instruction);
    expect(bounded.slice(2)).toEqual(messages.slice(-MAX_CARRIED_MESSAGES));
  });

  it("keeps instructions of both forms: members' (instruction) and older runs' (system)", () => {
    const member: AgentMessage = { role: 'instruction', content: 'answer in German' };
    const older: AgentMessage = { role: 'system', content: 'answer in French' };
    const messages = [task, member, older, ...Array.from({ length: 100 }, (_, i) => tool(i + 1))];
    const bounded = boundMessages([...messages, { role: 'instruction', content: 'z'.repeat(5000) }]);
    expect(bounded.slice(0, 3)).toEqual([task, member, older]);
    expect(bounded.at(-1)?.content).toHaveLength(5000); // an instruction is never cut
  });

  it('keeps only the most recent others that fit MAX_CARRIED_OTHER_BYTES together', () => {
    // Answers of 4000 characters weighing 6 bytes each as JSON: 12 fit in 300 000 bytes.
    const heavy = (i: number): AgentMessage => ({
      role: 'assistant',
      content: `${i}`.padEnd(4000, '\u0001'),
    });
    const instruction: AgentMessage = { role: 'instruction', content: 'answer in French' };
    const messages = [task, instruction, ...Array.from({ length: 30 }, (_, i) => heavy(i))];
    const bounded = boundMessages(messages);
    // Each weighs 2 + 2 + 3998 × 6 = 23 992 bytes as JSON: 12 fit in 300 000.
    const fit = 12;
    expect(bounded).toEqual([task, instruction, ...messages.slice(-fit)]);
    expect(conversationBytes(bounded.slice(2))).toBeLessThanOrEqual(MAX_CARRIED_OTHER_BYTES);
  });

  it('never cuts a carried message inside a surrogate pair', () => {
    const emoji = '\u{1F600}';
    const long = `${'a'.repeat(MAX_CARRIED_MESSAGE_CHARS - 2)}${emoji}${'b'.repeat(10)}`;
    const [, cut] = boundMessages([task, { role: 'assistant', content: long }]);
    expect(cut?.content).toBe(`${'a'.repeat(MAX_CARRIED_MESSAGE_CHARS - 2)}…`);
    expect(isInstructionText(cut?.content ?? '')).toBe(true);
  });

  it('cuts long tool results and answers, never the task or an instruction', () => {
    const long = 'x'.repeat(MAX_CARRIED_MESSAGE_CHARS * 3);
    const instruction: AgentMessage = { role: 'system', content: 'y'.repeat(2000) };
    const bounded = boundMessages([task, { role: 'tool', content: long }, instruction]);
    expect(bounded[0]).toBe(task);
    expect(bounded[1]?.content.length).toBe(MAX_CARRIED_MESSAGE_CHARS);
    expect(bounded[2]).toBe(instruction);
  });
});

describe('conversationBytes', () => {
  it('is the UTF-8 length of each content as JSON text, whatever the characters', () => {
    const weigh = (content: string) => conversationBytes([{ role: 'user', content }]);
    for (const content of [
      '',
      'plain',
      'é€😀',
      '"\\\n\t\b\f\r',
      '\u0001\u001f\u007f',
      'a\uD800b\uDC00c',
      '\uDBFF',
    ]) {
      expect(weigh(content), JSON.stringify(content)).toBe(Buffer.byteLength(JSON.stringify(content)));
    }
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary' }), { maxLength: 5 }), (contents) => {
        const messages = contents.map((content): AgentMessage => ({ role: 'tool', content }));
        const expected = contents.reduce((n, c) => n + Buffer.byteLength(JSON.stringify(c)), 0);
        expect(conversationBytes(messages)).toBe(expected);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(
        fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) }),
        (content) => {
          expect(weigh(content)).toBe(Buffer.byteLength(JSON.stringify(content)));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('payloadBytes weighs any JSON value as Buffer.byteLength(JSON.stringify(value))', () => {
    const anyText = fc.string({
      unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
    });
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), fc.array(anyText, { maxLength: 4 }), (value, texts) => {
        const input = { value, texts };
        expect(payloadBytes(input)).toBe(Buffer.byteLength(JSON.stringify(input)));
      }),
      { numRuns: 1000 },
    );
  });

  it("is over budget only past MAX_CONVERSATION_BYTES, and never before a generation's first step", () => {
    const of = (bytes: number): AgentMessage[] => [{ role: 'user', content: 'x'.repeat(bytes - 2) }];
    expect(conversationOverBudget(of(MAX_CONVERSATION_BYTES), 1)).toBe(false);
    expect(conversationOverBudget(of(MAX_CONVERSATION_BYTES + 1), 1)).toBe(true);
    expect(conversationOverBudget(of(3 * MAX_CONVERSATION_BYTES), 0)).toBe(false);
  });

  it('the largest continue-as-new input the API lets a run grow stays well under 2 MB, and its conversation under the budget', () => {
    // The heaviest characters each field can hold: control characters (6 bytes as JSON) where the API
    // or a model lets them in, emoji (4 bytes a character) in instructions, which refuse control
    // characters; the task (10 000), 50 instructions (2000 each), 100 answers cut to MAX_ANSWER_LENGTH,
    // and tool results naming 20 documents of 500-character titles.
    const control = (n: number) => '\u0001'.repeat(n);
    const instruction = '\u{1F600}'.repeat(2000);
    expect(isInstructionText(instruction)).toBe(true);
    const task: AgentMessage = { role: 'user', content: control(10_000) };
    const messages: AgentMessage[] = [task];
    for (let i = 0; i < 100; i++) {
      if (i < MAX_INSTRUCTIONS) messages.push({ role: 'instruction', content: instruction });
      messages.push({ role: 'tool', tool: 'searchWorkspaceDocuments', content: control(20 * 500) });
      messages.push({ role: 'assistant', content: control(MAX_ANSWER_LENGTH) });
    }
    const carried = boundMessages(messages);
    expect(conversationBytes(carried)).toBeLessThan(MAX_CONVERSATION_BYTES);
    const input: AgentExecutionInput = {
      agentId: randomUUID(),
      // Carried once, as the first message (patch carry-task-once).
      input: '',
      runRecordId: randomUUID(),
      followUpSeconds: 3600,
      maxStepsPerRun: 200,
      maxTotalSteps: 1000,
      carried: {
        messages: carried,
        steps: 999,
        toolCalls: 999,
        instructions: Array.from({ length: MAX_INSTRUCTIONS }, () => ({
          text: instruction,
          addedBy: 'u'.repeat(128),
        })),
        pending: [],
        generation: 99,
        answer: control(MAX_ANSWER_LENGTH),
        runRecordId: randomUUID(),
      },
    };
    // ~1.35 MB (docs/agent-platform.md): well under MAX_CONTINUE_AS_NEW_BYTES.
    expect(payloadBytes(input)).toBeLessThan(1_400_000);
  });
});

describe('isInstructionText', () => {
  it('refuses control characters but tab and line breaks, NUL and unpaired surrogates', () => {
    for (const ok of ['plain', 'tab\there', 'line\nbreak\r\n', 'emoji \u{1F600}', 'del \u007f', 'nbsp\u00a0'])
      expect(isInstructionText(ok), JSON.stringify(ok)).toBe(true);
    for (const bad of [
      'nul\u0000',
      'bell\u0007',
      'vt\u000b',
      'ff\u000c',
      'esc\u001b',
      'us\u001f',
      'lone \uD800',
      'lone \uDC00x',
      'swapped \uDC00\uD800',
    ])
      expect(isInstructionText(bad), JSON.stringify(bad)).toBe(false);
  });
});

describe('clampInt', () => {
  it('falls back on anything that is not a finite number, so a limit cannot be switched off', () => {
    expect(clampInt(undefined, 100, 1, 1000)).toBe(100);
    expect(clampInt('abc', 100, 1, 1000)).toBe(100);
    expect(clampInt(Number.NaN, 100, 1, 1000)).toBe(100);
    expect(clampInt(Number.POSITIVE_INFINITY, 100, 1, 1000)).toBe(100);
    expect(clampInt(5000, 100, 1, 1000)).toBe(1000);
    expect(clampInt(0, 100, 1, 1000)).toBe(1);
    expect(clampInt(7.9, 100, 1, 1000)).toBe(7);
  });
});

describe('assertRunInput', () => {
  const refusal = (input: unknown) => {
    try {
      assertRunInput(input);
      return undefined;
    } catch (err) {
      return err;
    }
  };
  const carried = { messages: [{ role: 'user', content: 'x' }], pending: [], instructions: [] };

  it('refuses, non-retryably with RUN_INPUT_INVALID, an input the workflow could not read', () => {
    const unreadable: unknown[] = [
      null,
      undefined,
      5,
      'input',
      [],
      { agentId: 'a', input: 'x', carried: 5 },
      { agentId: 'a', input: 'x', carried: [] },
      { agentId: 'a', input: 'x', carried: { ...carried, messages: 'x' } },
      { agentId: 'a', input: 'x', carried: { ...carried, messages: [null] } },
      { agentId: 'a', input: 'x', carried: { ...carried, pending: undefined } },
      { agentId: 'a', input: 'x', carried: { ...carried, instructions: {} } },
      { agentId: 'a', input: 'x', carried: { ...carried, messages: [{ role: 'tool', content: 5 }] } },
      { agentId: 'a', input: 'x', carried: { ...carried, messages: [{ role: 'user' }] } },
      { agentId: 'a' },
      { agentId: 'a', input: 5 },
    ];
    for (const input of unreadable)
      expect(refusal(input), JSON.stringify(input) ?? 'undefined').toMatchObject({
        type: RunErrorCodes.RUN_INPUT_INVALID,
        nonRetryable: true,
      });
  });

  it('accepts what the API and a continue-as-new send, and what the workflow reads leniently', () => {
    const readable: unknown[] = [
      { agentId: 'a', input: 'x' },
      { agentId: 'a', input: 'x', runRecordId: 'r', followUpSeconds: 5, maxStepsPerRun: 2 },
      {
        agentId: 'a',
        input: '',
        carried: { ...carried, steps: 1, toolCalls: 0, generation: 1, runRecordId: 'r' },
      },
      { agentId: 'a', input: 'x', carried: null },
      // Read leniently before this check, and so still: runs recorded with them replay as they ran.
      { agentId: 'a', input: 'x', followUpSeconds: '5' },
      { input: '' },
    ];
    for (const input of readable) expect(refusal(input), JSON.stringify(input)).toBeUndefined();
  });
});
