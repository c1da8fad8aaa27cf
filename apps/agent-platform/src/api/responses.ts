/**
 * What each route answers when it succeeds, for the OpenAPI document (found by review: it listed no
 * success response at all). The API serialises with `JSON.stringify` (see `createApi`), so these
 * schemas describe the answers and change none: the end-to-end tests check every answer they get
 * against the document, and an undeclared field or status fails them.
 */

const text = { type: 'string' } as const;
const integer = { type: 'integer' } as const;
const texts = { type: 'array', items: text } as const;

/** An object with exactly `required` and, optionally, `optional`. */
function object(
  required: Record<string, object>,
  optional: Record<string, object> = {},
): Record<string, unknown> {
  return {
    type: 'object',
    properties: { ...required, ...optional },
    required: Object.keys(required),
    additionalProperties: false,
  };
}

/** A success answer in JSON, with its description (and headers, when it has some). */
function json(description: string, schema: object, headers?: Record<string, object>) {
  return { description, content: { 'application/json': { schema } }, ...(headers ? { headers } : {}) };
}

const replayedHeader = {
  'idempotent-replayed': {
    schema: { type: 'string', enum: ['true'] },
    description: 'present on the answer to a retry with the same `Idempotency-Key`',
  },
};

const membership = object({ workspaceId: text, userId: text, roles: texts });
const agent = object({
  id: text,
  workspaceId: text,
  name: text,
  instructions: text,
  model: text,
  tools: texts,
  createdBy: text,
  createdAt: text,
  updatedAt: text,
});
const instruction = object({ text, addedBy: text });
const progress = object(
  {
    status: { type: 'string', enum: ['starting', 'running', 'waiting', 'completed', 'cancelled'] },
    steps: integer,
    toolCalls: integer,
    generation: integer,
    instructions: { type: 'array', items: instruction },
  },
  { answer: text },
);
const executionResult = object(
  {
    status: { type: 'string', enum: ['completed', 'cancelled'] },
    steps: integer,
    toolCalls: integer,
    instructions: { type: 'array', items: instruction },
  },
  { answer: text },
);
const recordStatus = { type: 'string', enum: ['pending', 'running', 'completed', 'failed', 'cancelled'] };
const nullableText = { type: ['string', 'null'] } as const;

/** A page: `key`'s items and, when more may follow, the cursor for the next page. */
const page = (key: string, item: object) => object({ [key]: { type: 'array', items: item } }, { next: text });

export const responses = {
  members: { 200: json('A page of members, by user id', page('members', membership)) },
  memberChanged: {
    200: json('The membership changed, as it now is', membership),
    201: json('The member added', membership),
  },
  removed: { 204: { type: 'null', description: 'Done, nothing to answer' } },
  agents: { 200: json('A page of agents, newest first', page('agents', agent)) },
  agentCreated: { 201: json('The agent created', agent) },
  agent: { 200: json('The agent', agent) },
  runStarted: {
    202: json(
      'The run, started (or, for a retry, as it is now)',
      object({ runId: text, workflowId: text, agentId: text, status: recordStatus }),
      replayedHeader,
    ),
  },
  runs: {
    200: json(
      'A page of runs, newest first',
      page(
        'runs',
        object(
          {
            runId: text,
            agentId: text,
            workflowId: nullableText,
            status: recordStatus,
            createdBy: text,
            createdAt: text,
            updatedAt: text,
          },
          { error: text },
        ),
      ),
    ),
  },
  run: {
    200: json(
      "The run's status in Temporal (lower case), its progress while a worker answers, and its record",
      object(
        {
          runId: text,
          agentId: text,
          workflowId: nullableText,
          status: text,
          record: object(
            { status: recordStatus, createdBy: text, createdAt: text, updatedAt: text },
            { error: text },
          ),
        },
        {
          retained: { type: 'boolean', enum: [false] },
          stalled: { type: 'boolean', enum: [true] },
          progress,
        },
      ),
    ),
  },
  runResult: {
    200: json(
      "The run's outcome: `running`, a result, or an ending's code",
      object(
        {
          runId: text,
          status: {
            type: 'string',
            enum: ['running', 'completed', 'cancelled', 'failed', 'terminated', 'timed_out'],
          },
        },
        { result: executionResult, error: object({ code: text }) },
      ),
    ),
  },
  cancelling: {
    202: json(
      'The cancel signal, sent',
      object({ runId: text, status: { type: 'string', enum: ['cancelling'] } }),
    ),
  },
  instructionAccepted: {
    200: json(
      'The instruction, accepted by the run; `pending`: instructions it has yet to act on',
      object({ runId: text, accepted: { type: 'boolean', enum: [true] }, pending: integer }),
    ),
  },
  scheduleCreated: {
    201: json(
      'The schedule, created (or, for a retry, the one the first attempt created)',
      object({ scheduleId: text, agentId: text, everySeconds: integer }, { paused: { type: 'boolean' } }),
      replayedHeader,
    ),
  },
  schedules: {
    200: json(
      "The workspace's schedules, newest first",
      object({
        schedules: {
          type: 'array',
          items: object(
            {
              scheduleId: text,
              agentId: text,
              createdBy: text,
              everySeconds: integer,
              createdAt: text,
              paused: { type: 'boolean' },
            },
            { endsAt: text },
          ),
        },
      }),
    ),
  },
  audit: {
    200: json(
      'Audit records, newest first; `next`, on a full page: the `before` of the page after',
      object(
        {
          events: {
            type: 'array',
            items: object(
              {
                id: text,
                time: text,
                action: text,
                decision: { type: 'string', enum: ['allow', 'deny'] },
                source: text,
                reason: text,
              },
              {
                userId: text,
                workspaceId: text,
                principal: text,
                tokenId: text,
                namespace: text,
                workflowId: text,
                runId: text,
                workflowType: text,
                activityType: text,
                activityId: text,
                attempt: integer,
                detail: text,
              },
            ),
          },
        },
        { next: text },
      ),
    ),
  },
} as const;
