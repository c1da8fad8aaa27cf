/**
 * The agent platform's HTTP API: the server, its hardening (bodies, parsers, methods, closing), the
 * caller's authentication, and the routes (./routes/), each of which acts as the caller.
 */
import { setMaxListeners } from 'node:events';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Client } from '@temporalio/client';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import {
  defaultAuditor,
  isUserContextError,
  type MirrorQueryIds,
  type UserContext,
} from 'temporal-user-context';
import type { ScopeAuditFields, SqlDatabase, UserScopeOptions } from 'temporal-user-context/postgres';
import { AuthError, type VerifyBearer } from '../auth/verify.js';
import { grantTolerance } from '../data/repositories/workspaces.js';
import { TASK_QUEUE } from '../workflows/agent-execution.js';
import { createRouteContext } from './context.js';
import { ParserRefusals } from './parser-refusals.js';
import { ProblemError, problem, toProblem } from './problems.js';
import { resolveQuotas, type Quotas } from './quotas.js';
import { RouteLogController } from './request-log.js';
import { registerAgentRoutes } from './routes/agents.js';
import { registerAuditRoutes } from './routes/audit.js';
import { registerMemberRoutes } from './routes/members.js';
import { registerRunByIdRoutes } from './routes/run.js';
import { registerRunRoutes } from './routes/runs.js';
import { registerScheduleRoutes } from './routes/schedules.js';
import { createRunSettling } from './run-settling.js';
import { ID, RETRY_AFTER_SECONDS } from './schemas.js';
import { UnfinishedWork } from './unfinished-work.js';
import { validatorCompiler } from './validation.js';
import { createWorkspaceSchedules } from './workspace-schedules.js';
const DEFAULT_WORKER_TIMEOUT_MS = 10_000;
const DEFAULT_TEMPORAL_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_GRACE_MS = 60_000;
/**
 * Least age past which a schedule row that Temporal does not list is dropped: the listing lags up to
 * ~15 s behind a create, which itself may take up to the API's Temporal deadline (added below).
 */
const SCHEDULE_ROW_STALE_MS = 120_000;

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
   * How long before a role's grant a bearer token may have been issued and still get it (default 30 s:
   * the identity provider's clock and the database's may differ); an older one is refused, 401
   * `AUTH_STALE` (migration 0019).
   */
  grantToleranceSeconds?: number;
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
 * The agent platform's HTTP API. Every handler authenticates a bearer JWT, runs Temporal client calls
 * inside `runAsUser(user, ...)` and database work inside `withUserScope(db, user, ...)`.
 */
export async function createApi(options: CreateApiOptions): Promise<FastifyInstance> {
  const { db, client } = options;
  const taskQueue = options.taskQueue ?? TASK_QUEUE;
  const limits = resolveQuotas(options.quotas);
  const workerTimeoutMs = options.workerTimeoutMs ?? DEFAULT_WORKER_TIMEOUT_MS;
  const temporalTimeoutMs = options.temporalTimeoutMs ?? DEFAULT_TEMPORAL_TIMEOUT_MS;
  const scheduleRowStaleMs = Math.max(SCHEDULE_ROW_STALE_MS, temporalTimeoutMs + 60_000);
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
        (body.code === 'AUTH_INVALID' || body.code === 'AUTH_EXPIRED' || body.code === 'AUTH_STALE') &&
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
    const identity = await options.verify(match[1]);
    request.userContext = identity.context;
    request.tokenIssuedAt = identity.issuedAt;
    // Before the body is read: a request to another workspace is refused (and audited) as such,
    // whatever its body (malformed, too large, of another type), not answered 400 or 413 without a
    // record. The router has set the path's parameters by now.
    const ws = (request.params as { ws?: string } | undefined)?.ws;
    // An empty workspace (`/workspaces//agents`) names none: the route's schema refuses it (400).
    if (ws !== undefined && ws !== '' && ws !== request.userContext.workspaceId) {
      throw new ProblemError(403, 'WORKSPACE_MISMATCH', 'Token is for another workspace');
    }
  };

  const ctx = createRouteContext({
    db,
    client,
    taskQueue,
    limits,
    workerTimeoutMs,
    temporalTimeoutMs,
    scheduleRowStaleMs,
    scope: options.scope,
    grantToleranceSeconds: grantTolerance(options.grantToleranceSeconds, 'grantToleranceSeconds'),
    mirrorQuery: options.mirrorQuery,
    auditor,
    audit,
    unfinished,
    audited,
    closing: closing.signal,
  });
  const schedules = createWorkspaceSchedules(ctx);
  const runs = createRunSettling(ctx);

  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));
  registerMemberRoutes(app, ctx, schedules);
  registerAgentRoutes(app, ctx, schedules);
  registerRunRoutes(app, ctx, runs);
  registerRunByIdRoutes(app, ctx, runs);
  registerScheduleRoutes(app, ctx, schedules);
  registerAuditRoutes(app, ctx);

  return app;
}
