import { createHash, randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import {
  ScheduleNotFoundError,
  WorkflowNotFoundError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowUpdateRPCTimeoutOrCancelledError,
  isGrpcCancelledError,
  isGrpcDeadlineError,
  type Client,
  type WorkflowExecutionStatusName,
} from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { decodeOptionalSinglePayload } from '@temporalio/common/lib/internal-non-workflow/index.js';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import {
  WORKSPACE_ID_ATTRIBUTE,
  defaultAuditor,
  isUserContextError,
  runAsUser,
  type MirrorQueryIds,
  type UserContext,
} from 'temporal-user-context';
import {
  queryAuditTrail,
  type AuditTrailFilter,
  withUserScope,
  type ScopeAuditFields,
  type ScopedTransaction,
  type SqlDatabase,
  type UserScopeOptions,
} from 'temporal-user-context/postgres';
import { AuthError, type VerifyBearer } from '../auth/verify.js';
import { resolveQuotas, type Quotas } from './quotas.js';
import {
  AgentRepository,
  AdminChangedError,
  AgentRunRepository,
  ScheduleRepository,
  LastAdminError,
  MembershipRepository,
  type AgentRun,
  type RunRecordEnding,
} from '../data/repositories/index.js';
import { PAGE_CURSOR_PATTERN } from '../data/repositories/common.js';
import {
  TASK_QUEUE,
  type AgentExecutionInput,
  type AgentExecutionResult,
  type Progress,
} from '../workflows/agent-execution.js';
import { MAX_TOTAL_STEPS_LIMIT, RunErrorCodes } from '../workflows/run-policy.js';
import {
  ProblemError,
  outsideEnding,
  recordEndingOf,
  problem,
  publicErrorCode,
  recordedEnding,
  runEnding,
  isFailedPrecondition,
  isRunStalled,
  throwIfRunEnded,
  toProblem,
  type RunEnding,
} from './problems.js';
import { responses } from './responses.js';
import { SettleMemory } from './settle-memory.js';
import { UnfinishedWork } from './unfinished-work.js';
import { RouteLogController } from './request-log.js';
import { ParserRefusals } from './parser-refusals.js';
import { validatorCompiler } from './validation.js';

export const WORKFLOW_TYPE = 'AgentExecutionWorkflow';
/** Shortest schedule interval: a tighter one is a load generator, not an agent schedule. */
export const MIN_SCHEDULE_SECONDS = 60;
const SCHEDULE_PREFIX = 'agent-schedule-';
/**
 * Least age past which a schedule row that Temporal does not list is dropped: the listing lags up to
 * ~15 s behind a create, which itself may take up to the API's Temporal deadline (added below).
 */
const SCHEDULE_ROW_STALE_MS = 120_000;
/** Memo key of the API's own record of a schedule: which workspace, agent and user it belongs to. */
const SCHEDULE_MEMO = 'agentPlatform';
const DEFAULT_WORKER_TIMEOUT_MS = 10_000;
const DEFAULT_TEMPORAL_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_GRACE_MS = 60_000;
/** Waits between the deletes of a schedule whose create timed out without a key (undoTimedOut). */
const LATE_DELETE_MS = [1000, 4000, 25_000] as const;
/** Statuses after which nothing follows; CONTINUED_AS_NEW is not one (the chain goes on). */
const FINAL_STATUSES: ReadonlySet<WorkflowExecutionStatusName> = new Set([
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TERMINATED',
  'TIMED_OUT',
]);

declare module 'fastify' {
  interface FastifyRequest {
    userContext?: UserContext;
  }
}

export interface CreateApiOptions {
  db: SqlDatabase;
  /** A Temporal client with the UserContextPlugin and the edge key ring. */
  client: Client;
  verify: VerifyBearer;
  taskQueue?: string;
  /**
   * The request log: off (default), on, a level, or a pino logger to write to. The processes give the
   * library's `stdoutLogger()`, whose exit is bounded while stdout stalls (pino's default is not).
   */
  logger?: boolean | { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' } | FastifyBaseLogger;
  /** Options for every withUserScope call (auditor, app role). */
  scope?: Omit<UserScopeOptions, 'requireRole'>;
  /**
   * How long a call only a worker can answer may wait: the `addInstruction` update (then 504
   * `INSTRUCTION_TIMEOUT`) and the `progress` query (then the status comes without progress).
   * Default 10 s.
   */
  workerTimeoutMs?: number;
  /**
   * How long each other Temporal call of a request may take (a start, a describe, a signal, a closed
   * run's result, a schedule's listing, create, describe, pause or delete), then 504 `TEMPORAL_TIMEOUT`
   * (a start at a workspace's limit that brings its open runs up to date counts a describe that did not
   * answer as no news). A start's 504 names its run, which may have started; a schedule create that
   * timed out is deleted again.
   * Without it a Temporal that accepts connections but does not answer would hold requests without end.
   * Default 10 s.
   */
  temporalTimeoutMs?: number;
  /**
   * How long closing lets requests in progress finish before it closes their connections (their work
   * is then waited for, within twice the longer of the two timeouts above). Default 60 s, or twice the
   * longer timeout when that is more: longer than a request bounded by the database's limits (the
   * platform's: 10 s for a connection, 45 s for an answer), so that closing cuts only what is stuck
   * (found by review: 20 s cut requests that would have answered).
   */
  closeGraceMs?: number;
  /**
   * The edge plugin's `mirrorQuery`: when its search-attribute mirror is on, the schedule listing asks
   * the server for the workspace's schedules only, instead of reading every schedule of the namespace.
   * Each one found is still checked against the record in its memo.
   */
  mirrorQuery?: (ids: MirrorQueryIds) => string;
  /**
   * Per-workspace limits: runs pending or running at once (default 100) and schedules (default 50).
   * Past them a start or a schedule is refused, 429 `QUOTA_EXCEEDED`, audited.
   */
  quotas?: Partial<Quotas>;
  /**
   * How long a client may take to send a whole request, headers and body (default 30 s): then 408, and
   * the connection is closed, so that a client trickling its body does not hold a socket for good.
   */
  requestTimeoutMs?: number;
}

/** What the API records in a schedule's memo when it creates it. */
interface ScheduleRecord {
  workspaceId: string;
  agentId: string;
  createdBy: string;
  everySeconds: number;
  createdAt: string;
}

function scheduleRecord(value: unknown): ScheduleRecord | undefined {
  const r = value as Partial<ScheduleRecord> | null | undefined;
  return typeof r?.workspaceId === 'string' &&
    typeof r.agentId === 'string' &&
    typeof r.createdBy === 'string' &&
    typeof r.everySeconds === 'number' &&
    typeof r.createdAt === 'string'
    ? (r as ScheduleRecord)
    : undefined;
}

type RunOutcome = { status: 'running' } | { status: string; result: AgentExecutionResult } | RunEnding;

const ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}$' } as const;
// Lower-case only, as the database and randomUUID() write them: ids are compared as text (a schedule's
// memo names its agent), so an upper-case spelling of the same id must not pass for another.
const UUID = {
  type: 'string',
  pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
} as const;
// The roles this API knows: `admin` administers, and any membership may use the workspace (start,
// schedule, cancel and instruct runs). A role it does not know would grant what a membership grants.
const ROLES = {
  type: 'array',
  items: { type: 'string', enum: ['admin', 'member'] },
  maxItems: 16,
  uniqueItems: true,
} as const;
const problemSchema = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string' },
    detail: { type: 'string' },
  },
  required: ['type', 'title', 'status', 'code'],
} as const;
/** Seconds a 503's `Retry-After` asks a client to wait: a dependency's outage, not this request's fault. */
export const RETRY_AFTER_SECONDS = 5;
/** A refusal's answer as the API sends it: a problem document (RFC 9457), its `code` stable. */
const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: problemSchema } },
});
/**
 * The problems every route may answer. Found by review: the document declared four statuses as
 * `application/json`; every route may also answer 408, 413, 414, 415, 431 (the request itself), 409,
 * 422, 429 (by route) and 5xx (the service), listed in docs/agent-platform.md with their codes.
 */
const errors = {
  400: problemResponse('VALIDATION_FAILED, BAD_REQUEST'),
  401: problemResponse('AUTH_MISSING, AUTH_INVALID, AUTH_EXPIRED'),
  403: problemResponse('WORKSPACE_MISMATCH, FORBIDDEN, and the user-context codes that forbid'),
  404: problemResponse('NOT_FOUND, RUN_NOT_FOUND, AGENT_NOT_FOUND, SCHEDULE_NOT_FOUND'),
  '4xx': problemResponse('a request refused by its state or size: see docs/agent-platform.md, Errors'),
  '5xx': {
    ...problemResponse(
      'INTERNAL, AUTH_UNAVAILABLE, TEMPORAL_UNAVAILABLE, DATABASE_UNAVAILABLE, RUN_STALLED, INSTRUCTION_NOT_TAKEN, INSTRUCTION_BUSY, TEMPORAL_TIMEOUT, INSTRUCTION_TIMEOUT',
    ),
    headers: {
      'Retry-After': {
        type: 'integer',
        description: 'on a 503 or 504: seconds to wait before trying again',
      },
    },
  },
};
/** The errors of a route a workspace's quota may refuse. */
const limitedErrors = { ...errors, 429: problemResponse('QUOTA_EXCEEDED') };
const SCHEDULE_ID = {
  type: 'string',
  pattern: `^${SCHEDULE_PREFIX}[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
} as const;
/**
 * Free text. PostgreSQL stores no NUL character in `text` or `jsonb`, nor a lone surrogate in `jsonb`:
 * such input is refused here (400) rather than failing later (a 500, or every run of a schedule).
 * Ajv compiles patterns with the `u` flag, so a well-formed pair (an emoji) is one code point, allowed.
 */
const TEXT = { type: 'string', pattern: '^[^\\u0000\\uD800-\\uDFFF]*$' } as const;
/**
 * Something to read: at least one character that is not white space, a control or a format character
 * (zero-width, bidi controls, soft hyphen), a combining mark alone, or a blank that is a letter or a
 * symbol by its class (the Hangul fillers, the blank braille pattern). Found by review: a name of one
 * zero-width space, an instruction of one `\u180e`, took a slot and a model step for nothing. One
 * lookahead from the start: linear.
 */
const SAYS_SOMETHING = '(?=[\\s\\S]*[^\\s\\p{Cc}\\p{Cf}\\p{M}\\u115F\\u1160\\u3164\\uFFA0\\u2800])';
/**
 * An instruction: something to read, and no control character but tab and line breaks (NEL among
 * them: C0 ones the workflow's validator refuses too, `isInstructionText`; DEL and C1 ones here only).
 */
const INSTRUCTION_PATTERN = `^${SAYS_SOMETHING}[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u0084\\u0086-\\u009F\\uD800-\\uDFFF]*$`;
/**
 * A name (an agent's, a model's): one line, something to read, and no control or bidi control character,
 * which would make a listing show it as another (`\u202Etxt.exe`).
 */
const NAME = {
  type: 'string',
  pattern: `^${SAYS_SOMETHING}[^\\p{Cc}\\u2028\\u2029\\u202A-\\u202E\\u2066-\\u2069\\uD800-\\uDFFF]*$`,
} as const;
const security = [{ bearerAuth: [] }];
/** A listing's page cursor, as the `next` of the page before gives it. */
const PAGE_CURSOR = { type: 'string', pattern: PAGE_CURSOR_PATTERN } as const;
/**
 * An idempotency key: 1 to 255 visible ASCII characters but `"` and `\`, bare (as most APIs take it)
 * or quoted (`"…"`, the structured-field string the IETF draft writes).
 */
const IDEMPOTENCY_KEY = {
  type: 'string',
  pattern: '^(?:[!#-\\[\\]-~]{1,255}|"[!#-\\[\\]-~]{1,255}")$',
} as const;

/** A run record whose start call failed (`START_FAILED`): its workflow may never have started. */
const isStartFailed = (run: { status: string; error: string | null }): boolean =>
  run.status === 'failed' && run.error === RunErrorCodes.START_FAILED;

/** The key of an `Idempotency-Key` header the route's schema has checked, without its quotes. */
function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  return header.startsWith('"') ? header.slice(1, -1) : header;
}

/**
 * The update id of an instruction sent with an idempotency key: the same for the same user, key and
 * instruction (a retry), another for anything else; a digest, so that neither the key nor the text
 * reaches Temporal's update id in clear.
 */
export function instructionUpdateId(
  who: { userId: string; workspaceId: string },
  key: string,
  instruction: string,
): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([who.workspaceId, who.userId, key, instruction]))
    .digest('base64url');
  return `instruction-${digest}`;
}

/**
 * What a run start asks for, as a digest: a retry with the same idempotency key must ask for the same
 * (agent, task and every option, absent ones included).
 */
export function runRequestDigest(
  agentId: string,
  body: { input: string; followUpSeconds?: number; maxStepsPerRun?: number; maxTotalSteps?: number },
): string {
  return requestDigest([
    agentId,
    body.input,
    body.followUpSeconds ?? null,
    body.maxStepsPerRun ?? null,
    body.maxTotalSteps ?? null,
  ]);
}

/** What a schedule create asks for, as a digest (the agent, the interval and the task). */
export function scheduleRequestDigest(
  agentId: string,
  body: { everySeconds: number; input: string },
): string {
  return requestDigest(['schedule', agentId, body.everySeconds, body.input]);
}

/** SHA-256 (base64url) of what a request asked for, as a JSON array (unambiguous, in a fixed order). */
function requestDigest(asked: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify(asked)).digest('base64url');
}

/**
 * The route's path parameters as ` name=value` pairs. Ids as they are; a value the route's schema would
 * refuse (the request may be refused for it) quoted as a JSON string, cut to 64 characters: text of the
 * caller's choosing never passes for more pairs in the trail.
 */
function paramsOf(request: FastifyRequest): string {
  const params = (request.params ?? {}) as Record<string, unknown>;
  return Object.entries(params)
    .map(([name, value]) => {
      const text = String(value);
      return ` ${name}=${ID_TEXT.test(text) ? text : JSON.stringify(text.slice(0, 64))}`;
    })
    .join('');
}
const ID_TEXT = new RegExp(ID.pattern);

/**
 * What the SDK's client rejects a call with when its abort signal cancelled it (gRPC status 1,
 * CANCELLED, as @grpc/grpc-js makes it): for a call not made because the signal had fired already.
 */
function cancelledCall(): Error {
  const details = 'Cancelled before the call';
  return Object.assign(new Error(`1 CANCELLED: ${details}`), { code: 1, details, metadata: {} });
}

function notFound(what: string): ProblemError {
  return new ProblemError(
    404,
    `${what.toUpperCase()}_NOT_FOUND`,
    `${what[0]?.toUpperCase()}${what.slice(1)} not found`,
  );
}

/** Open run records a start at the limit brings up to date with Temporal, at most (see settleOpenRuns). */
const SETTLE_AT_ONCE = 10;
/** After a settling that changed nothing, a workspace's refused starts settle nothing for this long. */
const SETTLE_PAUSE_MS = 1000;

/** What kind of error a Temporal call failed with, for an audit record: a gRPC status, no text. */
function temporalErrorKind(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  const code = e?.code ?? e?.cause?.code;
  return typeof code === 'number' ? `gRPC status ${code}` : 'an error (see the API log)';
}

/** A workspace at one of its limits (`quotas`): 429, for the caller to try again once work ends. */
function quotaExceeded(what: string, limit: number): ProblemError {
  return new ProblemError(
    429,
    'QUOTA_EXCEEDED',
    'The workspace is at a limit',
    `at most ${limit} ${what} per workspace`,
  );
}

/**
 * The agent platform's HTTP API. Every handler authenticates a bearer JWT, runs Temporal client calls
 * inside `runAsUser(user, ...)` and database work inside `withUserScope(db, user, ...)`.
 */
export async function createApi(options: CreateApiOptions): Promise<FastifyInstance> {
  const { db, client } = options;
  const taskQueue = options.taskQueue ?? TASK_QUEUE;
  const limits = resolveQuotas(options.quotas);
  const workerTimeoutMs = options.workerTimeoutMs ?? DEFAULT_WORKER_TIMEOUT_MS;
  const temporalTimeoutMs = options.temporalTimeoutMs ?? DEFAULT_TEMPORAL_TIMEOUT_MS;
  // How long a schedule's row counts without Temporal's listing to confirm it (migration 0012).
  const scheduleRowStaleMs = Math.max(SCHEDULE_ROW_STALE_MS, temporalTimeoutMs + 60_000);
  /** Temporal calls in `fn` end at the deadline (`bounded` inside sets its own). */
  const timely = <T>(fn: () => Promise<T>): Promise<T> =>
    client.withDeadline(Date.now() + temporalTimeoutMs, fn);
  // Every identity this API acts for came from the edge JWT, not from a Temporal header.
  const audit: ScopeAuditFields = { ...options.scope?.audit, source: 'edge' };
  // The API's own records (401/403/404, quota refusals, changes) go where its scopes' do; without an
  // auditor given, to the process's default, as withUserScope's own: none goes unrecorded.
  const auditor = options.scope?.auditor ?? defaultAuditor();
  /** An `api.request` refusal: of `who` when known (anonymous records coalesce with their kind). */
  const apiDenial = (code: string, detail: string, who?: UserContext) =>
    auditor.emit({
      action: 'api.request',
      decision: 'deny',
      ...audit,
      source: 'edge',
      reason: code,
      ...(who ? { userId: who.userId, workspaceId: who.workspaceId } : {}),
      detail,
    });
  /**
   * Records a refusal of the router, made before any route or authentication ran: anonymous (the token
   * is not read), and named by what was refused, never by the raw URL.
   */
  const routerRefusal = (method: string, code: string, what: string) => apiDenial(code, `${method} ${what}`);
  const requestTimeout = options.requestTimeoutMs ?? 30_000;
  // 0 would turn off Node's headers timeout too (Node caps it at this when the server is made).
  if (!Number.isInteger(requestTimeout) || requestTimeout < 100)
    throw new TypeError('requestTimeoutMs must be an integer of at least 100');
  /** What requests still run (authentication, handlers) and the late deletes of timed-out schedule creates. */
  const unfinished = new UnfinishedWork();
  /** Aborted as the API begins to close: waits that only read (a result's long poll) end then. */
  const closing = new AbortController();
  // One listener per long poll open: as many as there are polls, not a leak.
  setMaxListeners(0, closing.signal);
  /** The record of a refused request: its caller once authenticated, its route and parameters. */
  const requestRefusal = (request: FastifyRequest, code: string) =>
    apiDenial(
      code,
      // A request no route takes: named so, never by its path (the catch-all's parameter).
      request.routeOptions.url === undefined
        ? `${request.method} unknown route`
        : `${request.method} ${request.routeOptions.url}${paramsOf(request)}`,
      request.userContext,
    );
  const parserRefusals = new ParserRefusals({
    request: (request) => requestRefusal(request, 'BAD_REQUEST'),
    bytes: (what) => routerRefusal('HTTP', 'BAD_REQUEST', what),
  });
  const given = options.logger;
  const app = Fastify({
    ...(typeof given === 'object' && 'child' in given
      ? { loggerInstance: given }
      : { logger: given ?? false }),
    // A request that arrives while closing runs as any other (closing waits for it): Fastify's own 503
    // for it was no problem document. None should: every answer sent once closing began closes its
    // connection (the onSend hook below), and Node closes the idle ones as closing begins.
    return503OnClosing: false,
    // Request lines name the route's pattern, never the URL or the client (./request-log.ts).
    logController: new RouteLogController(),
    // Ids are up to 128 characters (the ID pattern): the router's default of 100 answered a longer
    // one with a bare 414 before any route ran (a member with such an id could not be removed). Past
    // this, frameworkErrors (below) answers 414 with a problem document.
    routerOptions: { maxParamLength: 256 },
    // The whole request in time: a client that trickles its body does not hold a socket for good.
    requestTimeout,
    // Given to Node's server as it is made, too: set afterwards (as Fastify sets it), Node 20 applies
    // it to a request's headers only, and a body could trickle until the headers timeout (60 s). Node
    // looks for requests past it every 30 s by default, which would let one run for up to twice the
    // limit: every second.
    http: { requestTimeout, connectionsCheckingInterval: 1000 },
    // What Node's HTTP parser refuses: a problem document too, on record (./parser-refusals.ts).
    clientErrorHandler: (err, socket) => parserRefusals.handler(err, socket),
    // What the router refuses before any route runs (a path parameter past the limit, a malformed
    // percent-encoding) is a problem document too, not Fastify's own JSON.
    frameworkErrors: (error, request, reply) => {
      // Answered before any hook runs: a parser refusal of its body later is not answered again.
      parserRefusals.answeredByRouter(request as unknown as FastifyRequest);
      const long = error.code === 'FST_ERR_MAX_PARAM_LENGTH';
      routerRefusal(request.method, 'BAD_REQUEST', long ? 'path parameter too long' : 'malformed URL');
      void (reply as unknown as FastifyReply)
        .status(long ? 414 : 400)
        .type('application/problem+json')
        .send(problem(long ? 414 : 400, 'BAD_REQUEST', long ? 'Path parameter too long' : 'Malformed URL'));
    },
  });

  // Bodies validated as sent, never converted to the schema's types (./validation.ts).
  app.setValidatorCompiler(validatorCompiler);
  // Answers are written as the handlers make them: the routes' response schemas (./responses.ts) are
  // the OpenAPI document's, which the end-to-end tests check every answer against, and never drop or
  // convert a field as Fastify's own serialiser would.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  // Bodies are JSON, and read as they came: found by review, a `text/plain` body reached the routes
  // (a cancel took one), and one in UTF-16 or gzip was read as UTF-8 JSON. 415 for each, on record.
  app.removeContentTypeParser('text/plain');
  // JSON bodies read as UTF-8 strictly, then parsed as Fastify parses them (its prototype-poisoning
  // checks included): found by review, a byte that is no UTF-8 became U+FFFD in an agent's name.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new ProblemError(400, 'BAD_REQUEST', 'Bad request', 'the body is not UTF-8'), undefined);
      return;
    }
    parseJson(request, text, done);
  });
  app.addHook('preParsing', async (request, _reply, payload) => {
    const { headers } = request;
    // Only a body that will be read: Fastify reads none for GET and HEAD, and an empty one is no body.
    if (request.method === 'GET' || request.method === 'HEAD') return payload;
    const length = headers['content-length'];
    if (length === '0' || (length === undefined && headers['transfer-encoding'] === undefined))
      return payload;
    const encoding = headers['content-encoding']?.trim().toLowerCase();
    if (encoding !== undefined && encoding !== '' && encoding !== 'identity')
      throw new ProblemError(415, 'BAD_REQUEST', 'Unsupported media type', 'bodies are not compressed');
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(headers['content-type'] ?? '')?.[1]?.toLowerCase();
    // US-ASCII text is UTF-8 text.
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8' && charset !== 'us-ascii')
      throw new ProblemError(415, 'BAD_REQUEST', 'Unsupported media type', 'bodies are UTF-8 JSON');
    return payload;
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Agent platform',
        version: '0.1.0',
        description: 'Agents run as Temporal workflows that carry the caller as a signed user context.',
      },
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  // Refusals already on record: audited by the route (refused()) or, for a UserContextError, by the
  // library where it was raised (db.scope, client.*).
  const audited = new WeakSet<object>();
  app.setErrorHandler((err, request, reply) => {
    const body = toProblem(err);
    if (body.status >= 500) request.log.error({ err }, 'request failed');
    // Every other refusal leaves a record too: a failed authentication, a token for another workspace,
    // a run or agent id that names nothing here (which is how guessing another workspace's ids shows:
    // the ids are in the detail), a body the route refuses (400, 413, 415: what the request asked, in
    // the detail, never the body), a state that refuses the request (409). A request refused because the
    // identity provider's keys could not be had (503) is refused all the same: recorded too (anonymous,
    // so coalesced with its kind in the database). Failures of the service (5xx) are logged, not audited.
    const decided = (body.status >= 400 && body.status < 500) || body.code === 'AUTH_UNAVAILABLE';
    const onRecord =
      (typeof err === 'object' && err !== null && audited.has(err)) || parserRefusals.refusedBody(request);
    if (decided && !onRecord && !isUserContextError(err)) requestRefusal(request, body.code);
    // RFC 9110 §11.6.1 and RFC 6750 §3: a 401 names the scheme to authenticate with.
    // `error="invalid_token"` only for a bearer token refused as such (RFC 6750 §3.1: none for a request
    // without one, or with another scheme), so that a client refreshes its token only when that helps.
    if (body.status === 401)
      void reply.header(
        'www-authenticate',
        (body.code === 'AUTH_INVALID' || body.code === 'AUTH_EXPIRED') &&
          /^Bearer [A-Za-z0-9._~+/=-]+$/i.test(request.headers.authorization ?? '')
          ? 'Bearer error="invalid_token"'
          : 'Bearer',
      );
    // RFC 9110 §10.2.3: a 503 says when to try again, so that clients back off by the same measure
    // rather than each by its own guess (the identity provider's, Temporal's or the database's outage).
    // So do a 504 (found by review: a Temporal that went down answers 504 once the SDK's retries reach
    // the call's deadline) and a retry that came while its first attempt is still at work.
    if (body.status === 503 || body.status === 504 || body.code === 'IDEMPOTENCY_KEY_IN_USE')
      void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
    void reply.status(body.status).type('application/problem+json').send(body);
  });
  // Closing waits for the API's own work in flight (./unfinished-work.ts): Node's server waits for
  // requests whose clients are still there, not for one whose client went away, whose hooks and
  // handler still run to their end, writing and recording. What such a request runs is the
  // authentication below and its handler, each tracked; one that never reaches its handler (its body
  // never came) runs nothing more. A handler's Temporal calls each end within temporalTimeoutMs or
  // workerTimeoutMs (a keyed replay makes two in a row); a long poll ends at once; each late delete is
  // a call within temporalTimeoutMs.
  // The API's first hook: the parser's refusal of bytes that came with the headers follows at once,
  // and must find the request marked (./parser-refusals.ts).
  app.addHook('onRequest', async (request, reply) => parserRefusals.handling(request, reply));
  // Every answer sent once closing began closes its connection. Found by review: a request in flight
  // then was answered keep-alive, and Node, which closes idle connections only as closing begins, left
  // its socket open until the keep-alive timeout (72 s), holding the close and the audit records
  // written after it past a supervisor's grace period.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing.signal.aborted) void reply.header('connection', 'close');
    return payload;
  });
  // The methods each route's path takes, for a 405 to a path with another method (below).
  const methodsByPath: { pattern: RegExp; methods: Set<string> }[] = [];
  // Every route registered from here on (all but the documentation's, which writes nothing).
  app.addHook('onRoute', (route) => {
    const pattern = new RegExp(`^${route.url.replace(/:[^/]+/g, '[^/]+')}/?$`);
    const known = methodsByPath.find((entry) => entry.pattern.source === pattern.source);
    const methods = known?.methods ?? new Set<string>();
    if (!known) methodsByPath.push({ pattern, methods });
    for (const method of [route.method].flat()) methods.add(method);
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, request, reply) {
      const result: unknown = handler.call(this, request, reply);
      unfinished.track(result);
      return result;
    } as typeof handler;
  });
  // How long closing waits for requests in progress, then for their work.
  const workGraceMs = 2 * Math.max(temporalTimeoutMs, workerTimeoutMs);
  const closeGraceMs = options.closeGraceMs ?? Math.max(DEFAULT_CLOSE_GRACE_MS, workGraceMs);
  // Past 2^31 - 1 ms (or not a number), Node's timer fires at once: closing would cut every request.
  if (!Number.isInteger(closeGraceMs) || closeGraceMs < 0 || closeGraceMs > 2 ** 31 - 1)
    throw new TypeError('closeGraceMs must be an integer from 0 to 2147483647');
  let forceClose: ReturnType<typeof setTimeout> | undefined;
  app.addHook('preClose', () => {
    closing.abort();
    // Node's server closes once every connection has: a handler stuck on a database that stopped
    // answering held its client's connection, and with it the whole shutdown, the audit flush and the
    // exit after it, for as long as the client waited (found by review). Past the grace, the
    // connections are closed; the handlers' work is waited for (below), within the same bound.
    forceClose = setTimeout(() => app.server.closeAllConnections(), closeGraceMs);
    forceClose.unref();
  });
  app.addHook('onClose', async () => {
    clearTimeout(forceClose);
    const left = await unfinished.close(workGraceMs);
    if (left > 0) app.log.warn({ left }, 'api: closed with work still running: its records may be lost');
  });
  app.setNotFoundHandler((request, reply) => {
    // A path a route takes, with a method it does not: 405 with the methods it takes (RFC 9110 §15.5.6;
    // found by review: it answered 404, as for a path nothing takes).
    const path = request.url.split('?')[0]!;
    const allowed = methodsByPath.find((entry) => entry.pattern.test(path))?.methods;
    const refused = parserRefusals.refusedBody(request);
    if (allowed) {
      if (!refused) routerRefusal(request.method, 'METHOD_NOT_ALLOWED', 'method not allowed');
      void reply
        .status(405)
        .header('allow', [...allowed].sort().join(', '))
        .type('application/problem+json')
        .send(problem(405, 'METHOD_NOT_ALLOWED', 'Method not allowed'));
      return;
    }
    // Refused by the parser already (its body's bytes came with its headers): on record once.
    if (!refused) routerRefusal(request.method, 'NOT_FOUND', 'unknown route');
    void reply
      .status(404)
      .type('application/problem+json')
      .send(problem(404, 'NOT_FOUND', 'Not found'));
  });

  app.addHook('onRequest', (request) => {
    const authenticated = authenticate(request);
    unfinished.track(authenticated);
    return authenticated;
  });
  /** The caller, from the bearer JWT, before the body is read (tracked for closing: see above). */
  const authenticate = async (request: FastifyRequest): Promise<void> => {
    const url = request.routeOptions.url;
    if (url === undefined || url === '/healthz' || url.startsWith('/docs')) return;
    const header = request.headers.authorization;
    // The scheme's name is case-insensitive (RFC 7235): `bearer` is `Bearer`.
    if (!header) throw new AuthError('AUTH_MISSING', 'bearer token required');
    // Node keeps the first of two `Authorization` headers; a proxy or rate limiter in front may read
    // the last, and log or limit another user than the one this API acts for (found by review).
    const { rawHeaders } = request.raw;
    let credentials = 0;
    for (let i = 0; i < rawHeaders.length; i += 2)
      if (rawHeaders[i]!.toLowerCase() === 'authorization') credentials++;
    if (credentials > 1) throw new AuthError('AUTH_INVALID', 'one Authorization header is allowed');
    const match = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(header);
    // A credential was sent, in a form this API does not take (another scheme, text after the token).
    if (!match?.[1]) throw new AuthError('AUTH_INVALID', 'a bearer token is required');
    request.userContext = await options.verify(match[1]);
    // Before the body is read: a request to another workspace is refused (and audited) as such,
    // whatever its body (malformed, too large, of another type), not answered 400 or 413 without a
    // record. The router has set the path's parameters by now.
    const ws = (request.params as { ws?: string } | undefined)?.ws;
    // An empty workspace (`/workspaces//agents`) names none: the route's schema refuses it (400).
    if (ws !== undefined && ws !== '' && ws !== request.userContext.workspaceId) {
      throw new ProblemError(403, 'WORKSPACE_MISMATCH', 'Token is for another workspace');
    }
  };

  const user = (request: FastifyRequest): UserContext => {
    if (!request.userContext) throw new AuthError('AUTH_MISSING', 'bearer token required');
    return request.userContext;
  };
  /** The roles the request's last scope found the caller still holds (claimed ∩ stored). */
  const effectiveRoles = new WeakMap<FastifyRequest, readonly string[]>();
  const scoped = <T>(
    request: FastifyRequest,
    fn: (tx: ScopedTransaction) => Promise<T>,
    requireRole?: string,
  ): Promise<T> =>
    withUserScope(
      db,
      user(request),
      (tx) => {
        effectiveRoles.set(request, tx.effectiveRoles);
        return fn(tx);
      },
      { ...options.scope, auditor, audit, ...(requireRole ? { requireRole } : {}) },
    );
  /**
   * Runs `fn` as the caller for Temporal: the context its tokens carry names the roles the caller's
   * membership still has, not the identity provider's claim (found by review: a demoted admin's runs
   * and schedules carried `admin` for their tokens' lives, and a token's roles the store never gave
   * reached workflow code as `getUserContext().roles`). A request that ran no scope yet runs one.
   */
  const asUser = async <T>(request: FastifyRequest, fn: () => Promise<T>): Promise<T> => {
    if (!effectiveRoles.has(request)) await scoped(request, async () => undefined);
    const roles = effectiveRoles.get(request) ?? [];
    return runAsUser({ ...user(request), roles: [...roles] }, () => timely(fn));
  };
  /**
   * Audits a refusal the API decides itself, after its database scope was allowed (without this record
   * the trail would show that scope's `allow` and nothing of the refusal), and returns `refusal`,
   * marked as on record, for the route to throw.
   */
  const refused = <E extends Error>(
    request: FastifyRequest,
    action: string,
    refusal: E & { code: string },
    detail?: string,
  ): E => {
    record(request, action, 'deny', refusal.code, detail);
    audited.add(refusal);
    return refusal;
  };
  /** One record of a decision the API made itself, as the caller (`source: 'edge'`). */
  const record = (
    request: FastifyRequest,
    action: string,
    decision: 'allow' | 'deny',
    reason: string,
    detail: string | undefined,
  ): void => {
    const { userId, workspaceId } = user(request);
    auditor.emit({
      action,
      decision,
      ...audit,
      source: 'edge',
      reason,
      userId,
      workspaceId,
      ...(detail ? { detail } : {}),
    });
  };
  /**
   * Audits a change the API made (its database scope's `allow` names no target): who changed what, for
   * changes of who may do what (memberships and their roles) and of what agents do (their instructions
   * and tools), which the trail must show whoever reads it later.
   */
  const changed = (request: FastifyRequest, action: string, detail: string): void =>
    record(request, action, 'allow', 'ok', detail);
  /**
   * Runs Temporal calls that wait on a run or a worker so that none outlives its request: they are
   * cancelled at the deadline, and as soon as the HTTP client goes away. With `endsAtClose` (a wait
   * that only reads), also as soon as the API begins to close.
   */
  const bounded = <T>(
    reply: FastifyReply,
    timeoutMs: number,
    fn: () => Promise<T>,
    endsAtClose = false,
  ): Promise<T> => {
    // The SDK cancels a call when the signal fires, not one started after it fired: a client gone, or
    // a closing begun, before the call is answered as the SDK's cancelled call is, without a call.
    if (reply.raw.destroyed || (endsAtClose && closing.signal.aborted))
      return Promise.reject(cancelledCall());
    const gone = new AbortController();
    const abort = () => gone.abort();
    reply.raw.once('close', abort);
    if (endsAtClose) closing.signal.addEventListener('abort', abort, { once: true });
    // The deadline also ends a call started after the signal fired (the next page of a result() that
    // follows a continue-as-new).
    return client
      .withAbortSignal(gone.signal, () => client.withDeadline(Date.now() + timeoutMs, fn))
      .finally(() => {
        reply.raw.off('close', abort);
        closing.signal.removeEventListener('abort', abort);
      });
  };

  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));

  // ---- members (workspace admins) ----
  /**
   * A membership change that would leave no admin is refused (409 LAST_ADMIN), and one by an admin
   * removed or demoted while it waited for its turn (403, the library's code); both audited.
   */
  const keepingAnAdmin = async <T>(request: FastifyRequest, change: () => Promise<T>): Promise<T> => {
    try {
      return await change();
    } catch (err) {
      if (err instanceof AdminChangedError) throw refused(request, 'members.change', err);
      if (!(err instanceof LastAdminError)) throw err;
      throw refused(
        request,
        'members.change',
        new ProblemError(409, err.code, 'The workspace must keep at least one admin'),
      );
    }
  };
  app.get<{ Params: { ws: string }; Querystring: { limit?: number; after?: string } }>(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary:
          'List members by user id (admins), a page at a time (`after`: the `next` of the page before)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 500 }, after: ID },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.members },
      },
    },
    async (request) => {
      const { limit = 100, after } = request.query;
      const page = await scoped(
        request,
        (tx) => new MembershipRepository(tx).page(after === undefined ? { limit } : { limit, after }),
        'admin',
      );
      return { members: page.items, ...(page.next === undefined ? {} : { next: page.next }) };
    },
  );
  app.post<{ Params: { ws: string }; Body: { userId: string; roles: string[] } }>(
    '/workspaces/:ws/members',
    {
      schema: {
        tags: ['members'],
        summary: 'Add or change a member (admins)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        body: {
          type: 'object',
          properties: { userId: ID, roles: { ...ROLES, minItems: 1 } },
          required: ['userId', 'roles'],
          additionalProperties: false,
        },
        response: { ...errors, ...responses.memberChanged },
      },
    },
    async (request, reply) => {
      const { userId, roles } = request.body;
      // The member's recent schedules read in the same transaction, after the change (and its lock):
      // nothing the member creates once re-added is among them. Listed ones created since are skipped
      // by their creation time (`since`, this process's clock).
      const since = Date.now();
      const { added, recent } = await keepingAnAdmin(request, () =>
        scoped(
          request,
          async (tx) => {
            const added = await new MembershipRepository(tx).upsert(userId, roles);
            return { added, recent: await new ScheduleRepository(tx).createdBy(userId, scheduleRowStaleMs) };
          },
          'admin',
        ),
      );
      // Schedules from an earlier membership that escaped the pause at removal (created while it was
      // being removed) would act again as of now: paused, for an admin to resume.
      changed(request, 'members.change', `member ${userId}: roles ${[...roles].sort().join(', ')}`);
      if (added === 'added') await pauseSchedulesOf(request, userId, 'added again', recent, since);
      return reply.status(201).send({ workspaceId: request.params.ws, userId, roles });
    },
  );
  app.delete<{ Params: { ws: string; userId: string } }>(
    '/workspaces/:ws/members/:userId',
    {
      schema: {
        tags: ['members'],
        summary:
          'Remove a member (admins); their running agents are refused at the next step, their schedules paused',
        security,
        params: { type: 'object', properties: { ws: ID, userId: ID }, required: ['ws', 'userId'] },
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      // The member's recent schedules read in the same transaction, after the removal took its lock (a
      // create racing it has written its row, or meets the removal in its own check): an admin who
      // removes themselves can read nothing once it commits.
      const { removed, recent } = await keepingAnAdmin(request, () =>
        scoped(
          request,
          async (tx) => {
            const removed = await new MembershipRepository(tx).remove(request.params.userId);
            return {
              removed,
              recent: await new ScheduleRepository(tx).createdBy(request.params.userId, scheduleRowStaleMs),
            };
          },
          'admin',
        ),
      );
      if (!removed) throw notFound('member');
      changed(request, 'members.change', `member ${request.params.userId} removed`);
      await pauseSchedulesOf(request, request.params.userId, 'removed', recent);
      return reply.status(204).send();
    },
  );
  /**
   * Pauses the schedules a removed member created in the workspace: each run they start would act as
   * someone who is no longer a member, and be refused (two deny records per run, forever), and re-adding
   * the member would silently make them act again. Paused, an admin sees them in the list and deletes
   * or resumes them. Best effort: the membership is already gone, so a schedule that cannot be paused
   * now only leaves its runs refused; each failure is recorded. Besides those Temporal lists, `recent`:
   * the ones the API recorded as theirs lately (`agent_schedules`, read in the membership change's own
   * transaction). Found by review: a schedule created just before the removal, which the listing did not
   * show yet, escaped the pause (and again when they were re-added).
   */
  const pauseSchedulesOf = async (
    request: FastifyRequest,
    userId: string,
    why: 'removed' | 'added again',
    recent: readonly string[],
    /** Re-added: listed schedules created from this time on are the new membership's, not paused. */
    since?: number,
  ): Promise<void> => {
    const { workspaceId } = user(request);
    let listing: Awaited<ReturnType<typeof workspaceSchedules>> | undefined;
    try {
      listing = await workspaceSchedules(workspaceId);
    } catch (err) {
      pauseFailed(request, userId, undefined, err);
    }
    const listed = new Set(listing?.map((s) => s.scheduleId));
    const pause = (scheduleId: string) =>
      // The note is the schedule's state, in clear in Temporal (no payload, no codec): it names no one.
      asUser(request, () => client.schedule.getHandle(scheduleId).pause(`creator ${why}`));
    // At once: each call has its own deadline, so a Temporal that does not answer costs the request
    // one deadline, not one per schedule.
    await Promise.all([
      ...(listing ?? [])
        .filter(
          (s) =>
            s.createdBy === userId && !s.paused && (since === undefined || Date.parse(s.createdAt) < since),
        )
        .map(({ scheduleId }) =>
          pause(scheduleId).catch((err: unknown) => pauseFailed(request, userId, scheduleId, err)),
        ),
      // Recorded and not listed yet (or the listing failed); a create that never took effect leaves a
      // row with no schedule behind for a while, which is no failure.
      ...recent
        .filter((scheduleId) => !listed.has(scheduleId))
        .map((scheduleId) =>
          pause(scheduleId).catch((err: unknown) => {
            if (!(err instanceof ScheduleNotFoundError)) pauseFailed(request, userId, scheduleId, err);
          }),
        ),
    ]);
  };
  const pauseFailed = (
    request: FastifyRequest,
    member: string,
    scheduleId: string | undefined,
    err: unknown,
    action: 'schedule.pause' | 'schedule.delete' = 'schedule.pause',
  ) => {
    // The error itself goes to the log only: its text (hosts, ports) is not for the workspace's trail.
    request.log.warn({ err, scheduleId }, "could not pause or delete a member's schedule");
    auditor.emit({
      action,
      decision: 'deny',
      ...audit,
      source: 'edge',
      reason: 'ERROR',
      userId: user(request).userId,
      workspaceId: user(request).workspaceId,
      // A call that timed out may yet have taken effect.
      detail: `schedules of member ${member}${scheduleId ? `: ${scheduleId}` : ''} ${isGrpcDeadlineError(err) ? 'perhaps not paused or deleted: Temporal did not answer in time' : `not paused or deleted: ${temporalErrorKind(err)}`}`,
    });
  };

  // ---- agents ----
  const agentBody = {
    type: 'object',
    properties: {
      name: { ...NAME, minLength: 1, maxLength: 200 },
      instructions: { ...TEXT, maxLength: 10_000 },
      model: { ...NAME, minLength: 1, maxLength: 200 },
      tools: {
        type: 'array',
        items: { type: 'string', enum: ['searchWorkspaceDocuments'] },
        uniqueItems: true,
      },
    },
    additionalProperties: false,
  } as const;
  const agentParams = { type: 'object', properties: { ws: ID, agentId: UUID }, required: ['ws', 'agentId'] };
  type AgentBody = { name: string; instructions?: string; model?: string; tools?: string[] };

  app.get<{ Params: { ws: string }; Querystring: { limit?: number; before?: string } }>(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'List agents, newest first, a page at a time (`before`: the `next` of the page before)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 500 }, before: PAGE_CURSOR },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.agents },
      },
    },
    async (request) => {
      const { limit = 100, before } = request.query;
      const page = await scoped(request, (tx) =>
        new AgentRepository(tx).page(before === undefined ? { limit } : { limit, before }),
      );
      return { agents: page.items, ...(page.next === undefined ? {} : { next: page.next }) };
    },
  );
  app.post<{ Params: { ws: string }; Body: AgentBody }>(
    '/workspaces/:ws/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'Create an agent (admins)',
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        body: { ...agentBody, required: ['name'] },
        response: { ...errors, ...responses.agentCreated },
      },
    },
    async (request, reply) => {
      const { name, instructions, model, tools } = request.body;
      const agent = await scoped(
        request,
        (tx) =>
          new AgentRepository(tx).create({
            name,
            model: model ?? 'local',
            ...(instructions !== undefined ? { instructions } : {}),
            tools: tools ?? ['searchWorkspaceDocuments'],
          }),
        'admin',
      );
      changed(request, 'agent.create', `agent ${agent.id}: tools ${agent.tools.join(', ') || '-'}`);
      return reply.status(201).send(agent);
    },
  );
  app.get<{ Params: { ws: string; agentId: string } }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Get an agent',
        security,
        params: agentParams,
        response: { ...errors, ...responses.agent },
      },
    },
    async (request) => {
      const agent = await scoped(request, (tx) => new AgentRepository(tx).get(request.params.agentId));
      if (!agent) throw notFound('agent');
      return agent;
    },
  );
  app.patch<{ Params: { ws: string; agentId: string }; Body: Partial<AgentBody> }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Update an agent (admins)',
        security,
        params: agentParams,
        // At least one field: an empty patch changed nothing yet was recorded as an update.
        body: { ...agentBody, minProperties: 1 },
        response: { ...errors, ...responses.agent },
      },
    },
    async (request) => {
      const agent = await scoped(
        request,
        (tx) => new AgentRepository(tx).update(request.params.agentId, request.body),
        'admin',
      );
      if (!agent) throw notFound('agent');
      // Which fields, not their values: instructions are the workspace's text, not the trail's.
      changed(request, 'agent.update', `agent ${agent.id}: ${Object.keys(request.body).sort().join(', ')}`);
      return agent;
    },
  );
  app.delete<{ Params: { ws: string; agentId: string } }>(
    '/workspaces/:ws/agents/:agentId',
    {
      schema: {
        tags: ['agents'],
        summary: 'Delete an agent (admins)',
        security,
        params: agentParams,
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      // An admin's, checked live before the schedules are read.
      await scoped(request, async () => undefined, 'admin');
      // A schedule that names the agent would fail every run it starts: it goes first.
      const listedAt = Date.now();
      const scheduled = (await workspaceSchedules(user(request).workspaceId)).some(
        (s) => s.agentId === agentId,
      );
      if (scheduled)
        throw refused(
          request,
          'agent.delete',
          new ProblemError(409, 'AGENT_IN_USE', 'A schedule starts runs of this agent: delete it first'),
          agentId,
        );
      // A schedule created moments ago, which the listing does not show yet, names it in its row.
      const outcome = await scoped(
        request,
        async (tx) =>
          // Rows as recent as the listing's lag, counted from when the listing was read.
          (await new ScheduleRepository(tx).namesAgent(agentId, scheduleRowStaleMs + (Date.now() - listedAt)))
            ? ('scheduled' as const)
            : new AgentRepository(tx).delete(agentId),
        'admin',
      );
      if (outcome === 'scheduled')
        throw refused(
          request,
          'agent.delete',
          new ProblemError(
            409,
            'AGENT_IN_USE',
            'A schedule starts runs of this agent: delete it first',
            'a schedule created moments ago names it (or its create was undone): delete it, or try again in a few minutes',
          ),
          agentId,
        );
      if (outcome === 'missing') throw notFound('agent');
      if (outcome === 'in-use')
        throw refused(
          request,
          'agent.delete',
          new ProblemError(409, 'AGENT_IN_USE', 'The agent has runs; their records are kept'),
          agentId,
        );
      changed(request, 'agent.delete', `agent ${agentId}`);
      return reply.status(204).send();
    },
  );

  // ---- runs ----
  type RunBody = { input: string; followUpSeconds?: number; maxStepsPerRun?: number; maxTotalSteps?: number };
  const runBody = {
    type: 'object',
    properties: {
      input: { ...TEXT, minLength: 1, maxLength: 10_000 },
      followUpSeconds: { type: 'integer', minimum: 0, maximum: 3600 },
      maxStepsPerRun: { type: 'integer', minimum: 1, maximum: 200 },
      maxTotalSteps: { type: 'integer', minimum: 1, maximum: MAX_TOTAL_STEPS_LIMIT },
    },
    required: ['input'],
    additionalProperties: false,
  } as const;

  app.post<{
    Params: { ws: string; agentId: string };
    Body: RunBody;
    Headers: { 'idempotency-key'?: string };
  }>(
    '/workspaces/:ws/agents/:agentId/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'Start an agent run (AgentExecutionWorkflow)',
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key, agent and body, by the ' +
          'same user) answers the run the first one started (header `idempotent-replayed: true`), and starts ' +
          'it if the first attempt never could; the same key with another request is refused (422).',
        security,
        params: agentParams,
        headers: {
          type: 'object',
          properties: { 'idempotency-key': IDEMPOTENCY_KEY },
        },
        body: runBody,
        response: {
          ...responses.runStarted,
          ...limitedErrors,
          422: problemResponse('IDEMPOTENCY_KEY_REUSED'),
          504: problemResponse('TEMPORAL_TIMEOUT'),
        },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const key = idempotencyKey(request.headers['idempotency-key']);
      const idempotency =
        key === undefined ? undefined : { key, digest: runRequestDigest(agentId, request.body) };
      /**
       * The run's record, unless the workspace is at its limit of open runs; or the run this user started
       * with the same idempotency key (`replayed`), whatever the limit. A record of the key whose start
       * failed comes back as it is (`startFailed`) until `reopen`: its start may have taken effect.
       */
      const record = (reopen = false) =>
        scoped(request, async (tx) => {
          const runs = new AgentRunRepository(tx);
          // The lock this takes orders the workspace's starts: a retry sent while its first attempt is
          // still running waits for that attempt's record, and finds it.
          const open = await runs.countOpenLocked(limits.openRuns);
          const prior = idempotency ? await runs.findByIdempotencyKey(idempotency.key) : undefined;
          if (prior && prior.digest !== idempotency?.digest)
            throw refused(
              request,
              'runs.start',
              new ProblemError(
                422,
                'IDEMPOTENCY_KEY_REUSED',
                'Idempotency key already used',
                'this key started another request: send a new key for a new run',
              ),
              `run ${prior.run.id}`,
            );
          // A run started (or being started) answers as it is, whatever the limit.
          if (prior && !isStartFailed(prior.run)) return { run: prior.run, replayed: true };
          if (prior && !reopen) return { run: prior.run, replayed: true, startFailed: true };
          if (!(await new AgentRepository(tx).get(agentId))) throw notFound('agent');
          // A new run, or one whose start failed and that this retry starts: either counts from now on.
          if (open >= limits.openRuns) return undefined;
          if (prior) {
            // Its workflow may have claimed it meanwhile (a start that failed yet took effect): as it is then.
            const reopened = await runs.reopenStartFailed(prior.run.id);
            if (reopened) return { run: reopened, replayed: true, reopened: true };
            return { run: (await runs.get(prior.run.id)) ?? prior.run, replayed: true };
          }
          const workflowId = `agent-run-${randomUUID()}`;
          const run = await runs
            .create({
              agentId,
              workflowId,
              input: { input: request.body.input },
              ...(idempotency ? { idempotency } : {}),
            })
            .catch((err: unknown) => {
              // The agent was deleted after it was read (the insert waited for the workspace's lock): its
              // foreign key refuses the row. Not found, as it would have been a moment later.
              const fk = err as { code?: unknown; constraint?: unknown } | null;
              if (fk?.code === '23503' && fk.constraint === 'agent_runs_workspace_id_agent_id_fkey')
                throw notFound('agent');
              throw err;
            });
          return { run, replayed: false };
        });
      // At the limit, records of runs that ended without recording it (terminated, timed out, their
      // own write refused or failed, never started) may be what fills it: brought up to date, then
      // asked once more.
      const limited = async (reopen = false) =>
        (await record(reopen)) ?? ((await settleOpenRuns(request)) ? await record(reopen) : undefined);
      let recorded = await limited();
      if (recorded && 'startFailed' in recorded) {
        // Its start was reported failed, yet may have taken effect (a timeout after the server acted):
        // then the run is there, not yet claimed by a worker, and answers as it is, whatever the limit.
        const started = await startedAfterAll(request, recorded.run);
        if (started) {
          void reply.header('idempotent-replayed', 'true');
          const { id: runId, workflowId } = recorded.run;
          return reply.status(202).send({ runId, workflowId, agentId, status: started });
        }
        recorded = await limited(true);
      }
      if (!recorded)
        throw refused(request, 'runs.start', quotaExceeded('runs pending or running', limits.openRuns));
      const { replayed } = recorded;
      let { run } = recorded;
      const workflowId = run.workflowId ?? '';
      // A replay starts the run only if no attempt could: its record still pending (the first attempt
      // died, or is still starting it, or its start failed and the record was reopened above). The
      // workflow id makes that start the same run.
      const starts = !replayed || run.status === 'pending';
      // Whether the run this request answers was started by another attempt: it may be over already.
      let startedBefore = replayed && !starts;
      if (starts) {
        const args: AgentExecutionInput = {
          agentId,
          input: request.body.input,
          runRecordId: run.id,
          ...(request.body.followUpSeconds !== undefined
            ? { followUpSeconds: request.body.followUpSeconds }
            : {}),
          ...(request.body.maxStepsPerRun !== undefined
            ? { maxStepsPerRun: request.body.maxStepsPerRun }
            : {}),
          ...(request.body.maxTotalSteps !== undefined ? { maxTotalSteps: request.body.maxTotalSteps } : {}),
        };
        try {
          await asUser(request, () =>
            client.workflow.start(WORKFLOW_TYPE, {
              taskQueue,
              workflowId,
              args: [args],
              // Never a second run under this id: not while one runs (the server's default), nor after
              // it ended (a replay of a key whose run has finished).
              workflowIdReusePolicy: 'REJECT_DUPLICATE',
            }),
          );
        } catch (err) {
          // Another attempt with this key started it (a retry racing its first attempt, or a start that
          // timed out yet took effect): the run is there, as asked. A record this retry reopened goes
          // back to START_FAILED (only while still pending): its workflow moves it to running when it
          // claims it, and one that ended without claiming it must not leave it open for good.
          if (err instanceof WorkflowExecutionAlreadyStartedError) startedBefore = true;
          if (err instanceof WorkflowExecutionAlreadyStartedError && 'reopened' in recorded)
            run = await scoped(request, async (tx) => {
              const runs = new AgentRunRepository(tx);
              return (await runs.markStartFailed(run.id)) ?? (await runs.get(run.id)) ?? run;
            });
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) {
            // Only a record still pending: a start that timed out may have taken effect, and its workflow
            // may have marked the record running already.
            await scoped(request, (tx) => new AgentRunRepository(tx).markStartFailed(run.id));
            if (isGrpcDeadlineError(err))
              throw new ProblemError(
                504,
                'TEMPORAL_TIMEOUT',
                'Temporal did not answer in time',
                `run ${run.id} may have started: GET /runs/${run.id} tells`,
              );
            // Named too: a connection lost as the call was sent leaves it unsaid whether it arrived.
            if (toProblem(err).code === 'TEMPORAL_UNAVAILABLE')
              throw new ProblemError(
                503,
                'TEMPORAL_UNAVAILABLE',
                'Temporal is unavailable',
                `run ${run.id} most likely did not start: GET /runs/${run.id} tells`,
              );
            throw err;
          }
        }
      }
      if (replayed) void reply.header('idempotent-replayed', 'true');
      // A run another attempt started: Temporal is asked whether it is over, which its record may not
      // say yet (terminated or timed out, an ending its workflow could not write, or a run that ended
      // before it claimed its record).
      if (startedBefore && (run.status === 'running' || run.status === 'pending'))
        run = await replayedRun(request, run);
      // A replay says where the run's record is now (`running` until it ends, as for a new start; a
      // START_FAILED record whose workflow was already there, `failed` until that workflow claims it).
      const status = replayed && run.status !== 'pending' ? run.status : 'running';
      return reply.status(202).send({ runId: run.id, workflowId, agentId, status });
    },
  );

  app.get<{ Params: { ws: string }; Querystring: { agentId?: string; limit?: number; before?: string } }>(
    '/workspaces/:ws/runs',
    {
      schema: {
        tags: ['runs'],
        summary:
          "List the workspace's runs, newest first (optionally of one agent), a page at a time (`before`: the `next` of the page before)",
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: {
            agentId: UUID,
            limit: { type: 'integer', minimum: 1, maximum: 500 },
            before: PAGE_CURSOR,
          },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.runs },
      },
    },
    async (request) => {
      const { agentId, limit = 50, before } = request.query;
      const page = await scoped(request, (tx) =>
        new AgentRunRepository(tx).page(before === undefined ? { limit } : { limit, before }, agentId),
      );
      return {
        ...(page.next === undefined ? {} : { next: page.next }),
        runs: page.items.map((r) => ({
          runId: r.id,
          agentId: r.agentId,
          workflowId: r.workflowId,
          status: r.status,
          createdBy: r.createdBy,
          createdAt: r.createdAt,
          updatedAt: r.updatedAt,
          // Older workflow versions recorded an activity's error class here; only codes go out.
          ...(r.error ? { error: publicErrorCode(r.error) } : {}),
        })),
      };
    },
  );

  /**
   * A replayed run's record, brought up to date when Temporal has the run closed; as it is when
   * Temporal does not answer now (the replay still answers from the record).
   */
  const replayedRun = async (request: FastifyRequest, run: AgentRun): Promise<AgentRun> => {
    if (!run.workflowId) return run;
    const withId = { ...run, workflowId: run.workflowId };
    try {
      const { status } = await asUser(request, () =>
        client.withDeadline(Date.now() + temporalTimeoutMs, () =>
          client.workflow.getHandle(withId.workflowId).describe(),
        ),
      );
      return await settleRecord(request, withId, status.name);
    } catch (err) {
      request.log.warn({ err, runId: run.id }, 'could not ask Temporal for a replayed run');
      return run;
    }
  };

  const runParams = { type: 'object', properties: { runId: UUID }, required: ['runId'] } as const;
  const loadRun = async (
    request: FastifyRequest<{ Params: { runId: string } }>,
  ): Promise<AgentRun & { workflowId: string }> => {
    const run = await scoped(request, (tx) => new AgentRunRepository(tx).get(request.params.runId));
    if (!run?.workflowId) throw notFound('run');
    return run as AgentRun & { workflowId: string };
  };

  /**
   * Brings up to {@link SETTLE_AT_ONCE} of the workspace's open run records up to date with Temporal,
   * those looked at least recently first (never, then the oldest look): a run closed in Temporal gets
   * the ending its workflow could not record ({@link settleRecord}: terminated, timed out, its own
   * write refused or failed), and a record whose workflow never started (the API stopped between the
   * record and the start) is marked failed once it is a minute old. Resolves to whether any record
   * changed. One settling per workspace at a time, whose outcome (never its error: that is its
   * caller's) starts refused meanwhile share, and none again within {@link SETTLE_PAUSE_MS} of one that
   * changed nothing: a member at the limit cannot turn refused starts into a stream of describes (and
   * of reads of closed runs' endings). Best effort: a run Temporal cannot describe now, or a write that
   * fails, leaves the record as it is.
   */
  const settleOpenRuns = (request: FastifyRequest): Promise<boolean> => {
    const { workspaceId } = user(request);
    const running = settling.get(workspaceId);
    if (running) return running;
    if (memory.pausing(workspaceId, Date.now())) return Promise.resolve(false);
    const settle = (async () => {
      const now = Date.now();
      const open = await scoped(request, (tx) => new AgentRunRepository(tx).listOpen(limits.openRuns));
      // Records no longer open are forgotten: the map holds at most the workspace's open ones.
      const looked = memory.looks(workspaceId, new Set(open.map((run) => run.id)));
      const due = open
        .filter((run) => run.workflowId)
        .sort((a, b) => (looked.get(a.id) ?? 0) - (looked.get(b.id) ?? 0))
        .slice(0, SETTLE_AT_ONCE);
      const settled = await Promise.all(
        due.map(async (run) => {
          looked.set(run.id, now);
          const withId = { ...run, workflowId: run.workflowId! };
          try {
            const description = await asUser(request, () =>
              client.workflow.getHandle(withId.workflowId).describe(),
            );
            return (await settleRecord(request, withId, description.status.name)) !== withId;
          } catch (err) {
            // A minute since the record was written, or reopened by a retry with its idempotency key.
            if (!(err instanceof WorkflowNotFoundError) || now - Date.parse(run.updatedAt) < 60_000)
              return false;
            // A record with a Temporal run id did start: its workflow is gone (past retention), not
            // unstarted.
            // Never started: marked only while still pending (a retry with its idempotency key may
            // have started it meanwhile, and its workflow marked it running).
            return scoped(request, (tx) => {
              const runs = new AgentRunRepository(tx);
              return run.runId
                ? runs.setStatus(run.id, 'failed', { error: RunErrorCodes.RUN_LOST })
                : runs.markStartFailed(run.id);
            }).then(
              () => true,
              (writeErr: unknown) => {
                request.log.warn({ err: writeErr, runId: run.id }, 'could not settle a run record');
                return false;
              },
            );
          }
        }),
      );
      const changed = settled.some(Boolean);
      memory.settled(workspaceId, changed, Date.now());
      return changed;
    })().finally(() => settling.delete(workspaceId));
    // Others share the outcome, never the error: it is this caller's (its membership gone meanwhile, a
    // database error), answered and recorded for this caller only.
    settling.set(
      workspaceId,
      settle.catch(() => false),
    );
    return settle;
  };
  /** Settlings in progress, by workspace. */
  const settling = new Map<string, Promise<boolean>>();
  /** When a workspace's last settling changed nothing, and when its open records were last looked at. */
  const memory = new SettleMemory(SETTLE_PAUSE_MS);

  /**
   * How a run Temporal reports closed (`status`) ended, as its record should say, read from Temporal as
   * the caller: a terminated or timed-out run's from its status alone, any other's from its result or
   * its failure. `undefined` for a run still open, or when Temporal does not tell now (logged).
   */
  const temporalEnding = async (
    request: FastifyRequest,
    workflowId: string,
    status: WorkflowExecutionStatusName,
  ): Promise<RunRecordEnding | undefined> => {
    const outside = outsideEnding(status);
    if (outside) return recordEndingOf(outside);
    if (!FINAL_STATUSES.has(status)) return undefined;
    try {
      const result = await asUser(request, () =>
        client.withDeadline(
          Date.now() + temporalTimeoutMs,
          () => client.workflow.getHandle(workflowId).result() as Promise<AgentExecutionResult>,
        ),
      );
      return recordEndingOf({ status: result.status, result });
    } catch (err) {
      const ending = runEnding(err);
      if (ending) return recordEndingOf(ending);
      request.log.warn({ err, workflowId }, 'could not read how a run ended');
      return undefined;
    }
  };

  /**
   * Writes how a run ended on its record, as the caller, when the record still says `pending` or
   * `running`: a terminated or timed-out run ran no workflow code to record it, and a workflow's own
   * write can be refused (its creator removed meanwhile) or fail (the database down past the activity's
   * retries). Until somebody looks, listings show the last recorded status, and the record counts as
   * open. Best effort: a read must not fail because this write did (it is logged, and tried again on
   * the next look).
   */
  const reconcile = async (
    request: FastifyRequest,
    run: AgentRun & { workflowId: string },
    ending: RunRecordEnding | undefined,
  ): Promise<AgentRun> => {
    if (!ending || (run.status !== 'pending' && run.status !== 'running')) return run;
    try {
      return await scoped(request, async (tx) => {
        const repo = new AgentRunRepository(tx);
        // Nothing updated: another request (or a late write of the workflow) got there first.
        return (await repo.markEnded(run.id, run.workflowId, ending)) ?? (await repo.get(run.id)) ?? run;
      });
    } catch (err) {
      // A refusal of the caller (removed, or the scope misconfigured) is the answer: found by review, a
      // member removed while waiting on a result was logged here and given the result.
      if (isUserContextError(err)) throw err;
      request.log.warn({ err, runId: run.id }, 'could not record the run ending on its record');
      return run;
    }
  };

  /** {@link reconcile} with the ending Temporal reports for `status` (read only for a record still open). */
  const settleRecord = async (
    request: FastifyRequest,
    run: AgentRun & { workflowId: string },
    status: WorkflowExecutionStatusName,
  ): Promise<AgentRun> =>
    run.status === 'pending' || run.status === 'running'
      ? reconcile(request, run, await temporalEnding(request, run.workflowId, status))
      : run;

  app.get<{ Params: { runId: string } }>(
    '/runs/:runId',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run status and progress (query `progress`; absent when no worker answers in time)',
        security,
        params: runParams,
        response: { ...errors, ...responses.run },
      },
    },
    async (request, reply) => {
      const loaded = await loadRun(request);
      const handle = client.workflow.getHandle(loaded.workflowId);
      const recordOf = (run: AgentRun) => ({
        status: run.status,
        ...(run.error ? { error: publicErrorCode(run.error) } : {}),
        createdBy: run.createdBy,
        createdAt: run.createdAt,
        updatedAt: run.updatedAt,
      });
      let description: Awaited<ReturnType<typeof handle.describe>>;
      try {
        description = await asUser(request, () => handle.describe());
      } catch (err) {
        // Past retention Temporal no longer has the run: a closed record still says how it ended. One
        // whose start failed and that no workflow claimed (no Temporal run id) was never retained.
        const ended = err instanceof WorkflowNotFoundError ? recordedEnding(loaded) : undefined;
        if (!ended) throw err;
        return {
          runId: loaded.id,
          agentId: loaded.agentId,
          workflowId: loaded.workflowId,
          status: ended.status,
          ...(loaded.error === RunErrorCodes.START_FAILED && !loaded.runId ? {} : { retained: false }),
          record: recordOf(loaded),
        };
      }
      const temporalStatus = description.status.name;
      const run = await settleRecord(request, loaded, temporalStatus);
      let progress: Progress | undefined;
      let stalled = false;
      if (temporalStatus === 'RUNNING') {
        try {
          progress = await asUser(request, () =>
            bounded(reply, workerTimeoutMs, () => handle.query<Progress>('progress')),
          );
        } catch (err) {
          // A run whose workflow task keeps failing answers no query (found by review: a 500); its
          // status still stands, and says so. So it does for the server's other FAILED_PRECONDITION
          // answers (a namespace failing over), and without a worker to answer.
          if (isRunStalled(err)) stalled = true;
          else if (!isFailedPrecondition(err) && !isGrpcDeadlineError(err) && !isGrpcCancelledError(err))
            throw err;
        }
      }
      return {
        runId: run.id,
        agentId: run.agentId,
        workflowId: run.workflowId,
        status: temporalStatus.toLowerCase(),
        ...(stalled ? { stalled } : {}),
        ...(progress ? { progress } : {}),
        record: recordOf(run),
      };
    },
  );
  app.get<{ Params: { runId: string }; Querystring: { waitSeconds?: number } }>(
    '/runs/:runId/result',
    {
      schema: {
        tags: ['runs'],
        summary: 'Run result (optionally wait for it)',
        description:
          '`status`: `running`, `completed` or `cancelled` (with `result`), or `failed`, `cancelled`, ' +
          '`terminated`, `timed_out` (with `error.code`). A closed run always gives its ending; ' +
          '`waitSeconds` only matters while the run is open.',
        security,
        params: runParams,
        querystring: {
          type: 'object',
          properties: { waitSeconds: { type: 'integer', minimum: 0, maximum: 60 } },
          additionalProperties: false,
        },
        response: { ...responses.runResult, ...errors, 504: problemResponse('TEMPORAL_TIMEOUT') },
      },
    },
    async (request, reply) => {
      const run = await loadRun(request);
      const handle = client.workflow.getHandle(run.workflowId);
      const waitMs = (request.query.waitSeconds ?? 0) * 1000;
      const outcome = await asUser(request, async (): Promise<RunOutcome> => {
        let status;
        try {
          ({ status } = await handle.describe());
        } catch (err) {
          // Past retention: the record's ending and result, when it is closed (see GET /runs/:runId).
          const ended = err instanceof WorkflowNotFoundError ? recordedEnding(run) : undefined;
          if (!ended) throw err;
          return ended;
        }
        // A terminated or timed-out run's ending is known from its status: written before its result is
        // read (which a disconnect or a deadline may cut short).
        const outside = outsideEnding(status.name);
        if (outside) await reconcile(request, run, recordEndingOf(outside));
        const open = !FINAL_STATUSES.has(status.name);
        if (open && waitMs === 0) return { status: 'running' };
        // After waiting, the caller's membership is checked again before the ending is given: it was
        // checked as the request began, up to a minute before (found by review: a member removed while
        // waiting got the answer). A record still open is written by `reconcile` below, whose scope
        // checks it; a record closed already (a start reported failed that took effect) is not.
        const recordOpen = run.status === 'pending' || run.status === 'running';
        const stillMember = () =>
          open && !recordOpen ? scoped(request, async () => undefined) : Promise.resolve();
        // Written on the record when it still says pending or running: a run terminated or timed out
        // (before or while this request waited), or one whose workflow could not write its ending.
        try {
          // A long poll ends as the API begins to close (answered `running`), not after it.
          const result = await bounded(
            reply,
            open ? waitMs : temporalTimeoutMs,
            () => handle.result() as Promise<AgentExecutionResult>,
            open,
          );
          await stillMember();
          await reconcile(request, run, recordEndingOf({ status: result.status, result }));
          return { status: result.status, result };
        } catch (err) {
          if (open && (isGrpcDeadlineError(err) || isGrpcCancelledError(err))) return { status: 'running' };
          const ending = runEnding(err);
          if (!ending) throw err;
          await stillMember();
          await reconcile(request, run, recordEndingOf(ending));
          return ending;
        }
      });
      return { runId: run.id, ...outcome };
    },
  );
  app.post<{ Params: { runId: string }; Body: Record<string, never> | undefined }>(
    '/runs/:runId/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a run (signal `cancel`)',
        security,
        params: runParams,
        description: 'No body, or an empty JSON object.',
        response: { ...errors, ...responses.cancelling },
      },
    },
    async (request, reply) => {
      // No body, or an empty object (found by review: any body passed, a `reason` among it ignored). Not
      // a body schema: Fastify would refuse a request with no body at all.
      const body: unknown = request.body;
      if (
        body !== undefined &&
        (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length > 0)
      )
        throw new ProblemError(
          400,
          'VALIDATION_FAILED',
          'Request validation failed',
          'a cancel takes no body',
        );
      const run = await loadRun(request);
      await asUser(request, () => client.workflow.getHandle(run.workflowId).signal('cancel', 'api')).catch(
        (err: unknown) => {
          throwIfRunEnded(err);
          throw err;
        },
      );
      return reply.status(202).send({ runId: run.id, status: 'cancelling' });
    },
  );
  app.post<{
    Params: { runId: string };
    Body: { instruction: string };
    Headers: { 'idempotency-key'?: string };
  }>(
    '/runs/:runId/instructions',
    {
      schema: {
        tags: ['runs'],
        summary: 'Add an instruction to a running agent (update `addInstruction`)',
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key and instruction, by the ' +
          'same user, to the same run) is the same update: applied once, its answer given again. The same ' +
          'key with another instruction is another instruction.',
        security,
        params: runParams,
        headers: { type: 'object', properties: { 'idempotency-key': IDEMPOTENCY_KEY } },
        body: {
          type: 'object',
          // Something to say: not empty, not only white space (the workflow's validator would refuse it).
          properties: {
            instruction: { ...TEXT, pattern: INSTRUCTION_PATTERN, minLength: 1, maxLength: 2000 },
          },
          required: ['instruction'],
          additionalProperties: false,
        },
        response: {
          ...responses.instructionAccepted,
          ...errors,
          409: problemResponse('RUN_NOT_RUNNING, INSTRUCTION_REJECTED'),
          504: problemResponse('INSTRUCTION_TIMEOUT, TEMPORAL_TIMEOUT'),
        },
      },
    },
    async (request, reply) => {
      const run = await loadRun(request);
      const key = idempotencyKey(request.headers['idempotency-key']);
      try {
        const outcome = await asUser(request, () =>
          bounded(reply, workerTimeoutMs, () =>
            client.workflow
              .getHandle(run.workflowId)
              .executeUpdate<{ accepted: true; pending: number }, [string]>('addInstruction', {
                args: [request.body.instruction],
                // Temporal applies an update id once per run, and answers a repeat with its outcome
                // (found by review: a retry after a 504 that "may still be applied" applied it twice).
                ...(key === undefined
                  ? {}
                  : { updateId: instructionUpdateId(user(request), key, request.body.instruction) }),
              }),
          ),
        );
        return { runId: run.id, ...outcome };
      } catch (err) {
        // The server accepts an update only once a worker has run the workflow's handler for it; with
        // no worker polling, the call would wait for one forever.
        throwIfRunEnded(err);
        if (isRunStalled(err))
          throw new ProblemError(
            503,
            'RUN_STALLED',
            'The run is stalled',
            'its workflow task keeps failing: the instruction was not taken; try again once the run is mended',
          );
        // Cancelled too when its client went away before the call (bounded): answered as the SDK's own.
        if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError || isGrpcCancelledError(err))
          throw new ProblemError(
            504,
            'INSTRUCTION_TIMEOUT',
            'Instruction not taken in time',
            `no worker took it within ${Math.ceil(workerTimeoutMs / 1000)} s; it may still be applied when one does`,
          );
        throw err;
      }
    },
  );

  // ---- schedules ----
  // Temporal holds the schedules; the memo the API writes at creation says whose they are. A schedule
  // still runs only as the creator its signed header names, whatever a memo says.
  app.post<{
    Params: { ws: string; agentId: string };
    Body: { everySeconds: number; input: string };
    Headers: { 'idempotency-key'?: string };
  }>(
    '/workspaces/:ws/agents/:agentId/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: `Run an agent on a schedule (every N seconds, N ≥ ${MIN_SCHEDULE_SECONDS}) as the caller`,
        description:
          'With an `Idempotency-Key` header, a retry of the same request (same key, agent and body, by the ' +
          'same user) answers the schedule the first one created (header `idempotent-replayed: true`) while ' +
          'that schedule exists; the same key with another request is refused (422), and while the first ' +
          'attempt is still creating it, 409.',
        security,
        params: agentParams,
        headers: { type: 'object', properties: { 'idempotency-key': IDEMPOTENCY_KEY } },
        body: {
          type: 'object',
          properties: {
            everySeconds: { type: 'integer', minimum: MIN_SCHEDULE_SECONDS, maximum: 31_536_000 },
            input: { ...TEXT, minLength: 1, maxLength: 10_000 },
          },
          required: ['everySeconds', 'input'],
          additionalProperties: false,
        },
        response: {
          ...responses.scheduleCreated,
          ...limitedErrors,
          409: problemResponse('SCHEDULE_EXISTS, IDEMPOTENCY_KEY_IN_USE'),
          422: problemResponse('IDEMPOTENCY_KEY_REUSED'),
        },
      },
    },
    async (request, reply) => {
      const { agentId } = request.params;
      const { everySeconds } = request.body;
      const { workspaceId } = user(request);
      const key = idempotencyKey(request.headers['idempotency-key']);
      const idempotency =
        key === undefined ? undefined : { key, digest: scheduleRequestDigest(agentId, request.body) };
      // Membership and the agent are checked live before anything is listed.
      if (!(await scoped(request, (tx) => new AgentRepository(tx).get(agentId)))) throw notFound('agent');
      const scheduleId = `${SCHEDULE_PREFIX}${randomUUID()}`;
      // Counted from the API's own schedule rows, written under the workspace's lock before each create
      // (creates at the same moment, in any API process, take turns and see each other), together with
      // Temporal's listing (schedules created before those rows, or by another path).
      const listed = (await workspaceSchedules(workspaceId)).map((s) => s.scheduleId);
      const reserved = await scoped(request, (tx) =>
        new ScheduleRepository(tx).reserve({
          scheduleId,
          agentId,
          limit: limits.schedules,
          listed,
          staleAfterMs: scheduleRowStaleMs,
          ...(idempotency ? { idempotency } : {}),
        }),
      );
      // Deleted since it was read above (its delete took the same lock).
      if (reserved === 'agent-missing') throw notFound('agent');
      if (typeof reserved === 'object') return replaySchedule(request, reply, reserved.prior);
      if (!reserved) throw refused(request, 'schedule.create', quotaExceeded('schedules', limits.schedules));
      const args: AgentExecutionInput = { agentId, input: request.body.input };
      const record: ScheduleRecord = {
        workspaceId,
        agentId,
        createdBy: user(request).userId,
        everySeconds,
        createdAt: new Date().toISOString(),
      };
      /** Deletes the schedule just created: `deleted`, `absent`, or the error. */
      const deleteCreated = () =>
        asUser(request, () => client.schedule.getHandle(scheduleId).delete()).then(
          () => 'deleted' as const,
          (deleteErr: unknown) =>
            deleteErr instanceof ScheduleNotFoundError ? ('absent' as const) : deleteErr,
        );
      /** Deletes the schedule just created, best effort (a failure is logged and audited). */
      const undo = async () => {
        const outcome = await deleteCreated();
        if (outcome !== 'deleted' && outcome !== 'absent')
          pauseFailed(request, user(request).userId, scheduleId, outcome, 'schedule.delete');
      };
      /**
       * {@link undo} for a keyless create that timed out: it may take effect after the delete that
       * follows it, which then finds nothing (or times out too), so the delete is tried again after the
       * answer, until one deletes the schedule or half a minute has passed (a failure audited at the
       * last try).
       */
      const undoTimedOut = async (retriesMs: readonly number[] = LATE_DELETE_MS): Promise<void> => {
        const outcome = await deleteCreated();
        if (outcome === 'deleted') return;
        const [wait, ...rest] = retriesMs;
        const failed = (err: unknown) =>
          pauseFailed(request, user(request).userId, scheduleId, err, 'schedule.delete');
        if (wait !== undefined)
          return unfinished.later(
            wait,
            () => undoTimedOut(rest),
            () => failed(new Error('the API closed before the schedule was known deleted')),
          );
        if (outcome !== 'absent') failed(outcome);
      };
      try {
        await asUser(request, () =>
          client.schedule.create({
            scheduleId,
            spec: { intervals: [{ every: `${everySeconds}s` }] },
            action: {
              type: 'startWorkflow',
              workflowType: WORKFLOW_TYPE,
              taskQueue,
              args: [args],
              workflowId: `${scheduleId}-run`,
            },
            memo: { [SCHEDULE_MEMO]: record },
          }),
        );
      } catch (err) {
        // A create that timed out may have taken effect, or take effect after the delete below: deleted
        // (and again after the answer, while it may still land: undoTimedOut), so that the client's
        // retry does not leave two schedules starting runs, and its row
        // kept (counted until Temporal has long not listed the schedule). With an idempotency key it is
        // not deleted: the client's retry with the key finds it if it took effect (a retry may already
        // have been told so), and is answered 409 until its row goes stale if it did not.
        if (!isGrpcDeadlineError(err)) await forgetSchedule(request, scheduleId);
        else if (idempotency) {
          // Kept for the retry, unless its creator was removed meanwhile (the check below, now): the
          // removal's pause may not have seen it.
          await scoped(request, async () => undefined).catch(async (recheck: unknown) => {
            if (!isUserContextError(recheck)) return;
            // Once: its key's row stays, and a retry with the key may yet answer the schedule, should
            // the create land later (re-adding the member pauses what escaped).
            await undo();
            throw recheck;
          });
          throw new ProblemError(
            504,
            'TEMPORAL_TIMEOUT',
            'Temporal did not answer in time',
            `schedule ${scheduleId} may have been created: send the request again with the same Idempotency-Key`,
          );
        } else await undoTimedOut();
        throw err;
      }
      // The creator may have been removed while the schedule was being created, after the check above
      // and before the removal's pause could list it: checked again, and the schedule deleted if so
      // (its row, which the removed creator can no longer drop, goes with a later create).
      try {
        await scoped(request, async () => undefined);
      } catch (err) {
        // Removed (a refusal of the library), or, without a key to find it again by, not known either way.
        if (isUserContextError(err) || !idempotency) await undo();
        throw err;
      }
      return reply.status(201).send({ scheduleId, agentId, everySeconds });
    },
  );

  /**
   * The answer to a schedule create with an idempotency key its user gave an earlier create: that
   * create's schedule once it exists (201, as then), 409 while it does not yet (the first attempt is
   * still creating it, or died: its row stops counting, and the key is free, once it is stale), 422 for
   * another request with the key.
   */
  const replaySchedule = async (
    request: FastifyRequest<{ Params: { ws: string; agentId: string }; Body: { everySeconds: number } }>,
    reply: FastifyReply,
    prior: { scheduleId: string; sameRequest: boolean },
  ) => {
    const detail = `schedule ${prior.scheduleId}`;
    if (!prior.sameRequest)
      throw refused(
        request,
        'schedule.create',
        new ProblemError(
          422,
          'IDEMPOTENCY_KEY_REUSED',
          'Idempotency key already used',
          'this key created another schedule: send a new key for a new schedule',
        ),
        detail,
      );
    let record: ScheduleRecord | undefined;
    let paused = false;
    try {
      const description = await asUser(request, () => client.schedule.getHandle(prior.scheduleId).describe());
      record = scheduleRecord(description.memo?.[SCHEDULE_MEMO]);
      paused = description.state.paused;
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
    }
    // Not there yet, or not the one this user's create wrote (its memo says whose it is).
    const { userId, workspaceId } = user(request);
    if (
      record?.createdBy !== userId ||
      record.workspaceId !== workspaceId ||
      record.agentId !== request.params.agentId
    )
      throw refused(
        request,
        'schedule.create',
        new ProblemError(
          409,
          'IDEMPOTENCY_KEY_IN_USE',
          'A request with this key is still being handled',
          'retry shortly: its schedule is not there yet',
        ),
        detail,
      );
    void reply.header('idempotent-replayed', 'true');
    return reply.status(201).send({
      scheduleId: prior.scheduleId,
      agentId: record.agentId,
      everySeconds: record.everySeconds,
      // Paused since (its creator was removed, then added again): said, not answered as if running.
      ...(paused ? { paused: true } : {}),
    });
  };

  /**
   * The status a run whose start was reported failed answers with when its workflow is there after all
   * (the start took effect): `running` while it runs; once it ended, its record's, which stays `failed`
   * (`START_FAILED`) when the workflow ended before claiming it (GET settles only open records).
   * Undefined when Temporal does not have it.
   */
  const startedAfterAll = async (
    request: FastifyRequest,
    run: { workflowId: string | null; status: string },
  ): Promise<string | undefined> => {
    const { workflowId } = run;
    if (!workflowId) return undefined;
    try {
      const description = await asUser(request, () => client.workflow.getHandle(workflowId).describe());
      return description.status.name === 'RUNNING' ? 'running' : run.status;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return undefined;
      throw err;
    }
  };

  /**
   * Marks a schedule's row deleted (the schedule is gone, or was never created), best effort: a row left
   * counted is dropped by a create once Temporal's listing has long stopped showing its schedule.
   */
  const forgetSchedule = (request: FastifyRequest, scheduleId: string) =>
    scoped(request, (tx) => new ScheduleRepository(tx).markDeleted(scheduleId)).catch((err: unknown) => {
      request.log.warn({ err, scheduleId }, 'could not mark a schedule row deleted');
    });

  /** The API's record in a raw memo field, or `undefined` when it cannot be read with our keys. */
  const readScheduleRecord = async (payload: Payload | null | undefined) => {
    if (!payload) return undefined;
    try {
      return scheduleRecord(await decodeOptionalSinglePayload(client.options.loadedDataConverter, payload));
    } catch {
      return undefined;
    }
  };

  /** The workspace's schedules, as their memo records name them (unsorted). */
  const workspaceSchedules = async (workspaceId: string) => {
    const schedules: (ScheduleRecord & { scheduleId: string; paused: boolean; endsAt?: string })[] = [];
    // Raw pages rather than client.schedule.list(): that decodes every memo it is given and stops at
    // the first it cannot (another application's, a plaintext one), failing every workspace. With the
    // search-attribute mirror the server narrows the list to the schedules mirrored as this
    // workspace's, and those mirrored as nobody's (created before the mirror, or cleared by an
    // update), so that none of the workspace's schedules drops out of sight. Anyone with namespace
    // access can set those attributes: the memo still decides.
    const mirrored = options.mirrorQuery?.({ workspaceId });
    const query =
      mirrored === undefined ? undefined : `(${mirrored}) OR ${WORKSPACE_ID_ATTRIBUTE.name} IS NULL`;
    let nextPageToken: Uint8Array | undefined;
    do {
      const token = nextPageToken;
      const page = await timely(() =>
        client.workflowService.listSchedules({
          namespace: client.options.namespace,
          maximumPageSize: 1000,
          ...(query ? { query } : {}),
          ...(token ? { nextPageToken: token } : {}),
        }),
      );
      for (const entry of page.schedules ?? []) {
        if (!entry.scheduleId?.startsWith(SCHEDULE_PREFIX)) continue;
        const record = await readScheduleRecord(entry.memo?.fields?.[SCHEDULE_MEMO]);
        if (record?.workspaceId !== workspaceId) continue;
        // When it stops starting runs: the library ends every schedule inside its creator's token window.
        const end = entry.info?.spec?.endTime;
        schedules.push({
          scheduleId: entry.scheduleId,
          ...record,
          paused: entry.info?.paused === true,
          ...(end?.seconds ? { endsAt: new Date(Number(end.seconds) * 1000).toISOString() } : {}),
        });
      }
      nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (nextPageToken);
    return schedules;
  };

  app.get<{ Params: { ws: string } }>(
    '/workspaces/:ws/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: "List the workspace's schedules, newest first",
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        response: { ...errors, ...responses.schedules },
      },
    },
    async (request) => {
      // Membership is checked live, as for every other route, before anything is read.
      await scoped(request, async () => undefined);
      const { workspaceId } = user(request);
      const schedules = await workspaceSchedules(workspaceId);
      schedules.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
      return {
        schedules: schedules.map(({ workspaceId: _ws, ...rest }) => rest),
      };
    },
  );
  app.delete<{ Params: { ws: string; scheduleId: string } }>(
    '/workspaces/:ws/schedules/:scheduleId',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Delete a schedule (its creator or a workspace admin): it starts no more runs',
        security,
        params: {
          type: 'object',
          properties: { ws: ID, scheduleId: SCHEDULE_ID },
          required: ['ws', 'scheduleId'],
        },
        response: { ...errors, ...responses.removed },
      },
    },
    async (request, reply) => {
      const roles = await scoped(request, async (tx) => tx.effectiveRoles);
      const me = user(request);
      const handle = client.schedule.getHandle(request.params.scheduleId);
      let record: ScheduleRecord | undefined;
      try {
        record = scheduleRecord((await asUser(request, () => handle.describe())).memo?.[SCHEDULE_MEMO]);
      } catch (err) {
        // Not decodable with our keys: not a schedule this API created.
        if (!isUserContextError(err)) throw err;
      }
      // Another workspace's schedule is as absent as a missing one.
      if (record?.workspaceId !== me.workspaceId) {
        throw refused(request, 'schedule.delete', notFound('schedule'), request.params.scheduleId);
      }
      if (record.createdBy !== me.userId && !roles.includes('admin')) {
        throw refused(
          request,
          'schedule.delete',
          new ProblemError(
            403,
            'SCHEDULE_FORBIDDEN',
            "Only the schedule's creator or a workspace admin may delete it",
          ),
          request.params.scheduleId,
        );
      }
      await asUser(request, () => handle.delete());
      await forgetSchedule(request, request.params.scheduleId);
      return reply.status(204).send();
    },
  );

  // ---- audit (workspace admins) ----
  app.get<{
    Params: { ws: string };
    Querystring: { limit?: number; before?: string } & AuditTrailFilter;
  }>(
    '/workspaces/:ws/audit',
    {
      schema: {
        tags: ['audit'],
        summary: "The workspace's audit trail (admins)",
        security,
        params: { type: 'object', properties: { ws: ID }, required: ['ws'] },
        querystring: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            // The id of the last record of the previous page: the records older than it.
            before: {
              type: 'string',
              pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
            },
            // Only the records that match every one given.
            userId: ID,
            action: { type: 'string', pattern: '^[a-z][A-Za-z0-9._-]{0,127}$' },
            decision: { type: 'string', enum: ['allow', 'deny'] },
            reason: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,128}$' },
            workflowId: { type: 'string', minLength: 1, maxLength: 1000 },
          },
          additionalProperties: false,
        },
        response: { ...errors, ...responses.audit },
      },
    },
    async (request) => {
      const limit = request.query.limit ?? 100;
      const events = await queryAuditTrail(db, user(request), {
        auditor,
        ...(options.scope?.appRole ? { appRole: options.scope.appRole } : {}),
        audit,
        limit,
        ...(request.query.before ? { before: request.query.before } : {}),
        filter: auditFilter(request.query),
      });
      // A full page may have more after it: `next` says where to go on, as the other listings do (found
      // by review: a client had to know that the last record's id is the next page's `before`).
      return { events, ...(events.length === limit ? { next: events[events.length - 1]!.id } : {}) };
    },
  );

  return app;
}

/** The audit route's filter: the query's filter fields that were given. */
function auditFilter(query: AuditTrailFilter): AuditTrailFilter {
  const filter: AuditTrailFilter = {};
  if (query.userId !== undefined) filter.userId = query.userId;
  if (query.action !== undefined) filter.action = query.action;
  if (query.decision !== undefined) filter.decision = query.decision;
  if (query.reason !== undefined) filter.reason = query.reason;
  if (query.workflowId !== undefined) filter.workflowId = query.workflowId;
  return filter;
}
