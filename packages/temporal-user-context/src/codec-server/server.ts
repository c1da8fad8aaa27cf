import type { Payload, PayloadCodec } from '@temporalio/common';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Auditor } from '../audit/sinks.js';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { ENCODING_ENCRYPTED, META_ENCODING, META_WORKFLOW_ID } from '../crypto/codec/format.js';
import {
  authenticate,
  bearerToken,
  jwtVerifier,
  type CodecPrincipal,
  type JwtOptions,
  type VerifyToken,
} from './auth.js';
import {
  MAX_JSON_DEPTH,
  jsonShapeProblem,
  maxJsonContainers,
  parsePayloadsBody,
  payloadsToJson,
} from './body.js';
import { originAllowed, setCorsHeaders, setPreflightHeaders } from './cors.js';
import { CodecServerCodes, CodecServerError } from './errors.js';

/** Options of {@link createCodecServer}. */
export interface CodecServerOptions {
  /**
   * The payload codec (normally an `AesGcmPayloadCodec`, e.g. `plugin.codec`). Called without
   * serialization context: a codec with `forNamespace` (as `AesGcmPayloadCodec` has) is bound to
   * {@link CodecServerOptions.namespace} with it, whatever namespace it fell back to before.
   */
  codec: PayloadCodec & {
    readonly namespace?: string;
    /**
     * This codec bound to `namespace`. The server passes `{ onRefusal: null }`: it records every
     * refusal itself, with the caller, so a refusal hook of the codec's would record each one twice.
     */
    forNamespace?(
      namespace: string,
      options?: { onRefusal?: null },
    ): PayloadCodec & { readonly namespace?: string };
  };
  /** The one namespace this server decodes for; `X-Namespace` must equal it, and payloads are bound to it. */
  namespace: string;
  /** Exact origin of the Web UI, e.g. `https://temporal.example.com` (scheme, host, port; no path). */
  allowedOrigin: string;
  /** Custom token verification; give this or {@link CodecServerOptions.jwt}. */
  verifyToken?: VerifyToken;
  /** JWT verification with jose against the UI's identity provider. */
  jwt?: JwtOptions;
  /** Scope a token needs to decode. Default `codec:decode`. */
  decodeScope?: string;
  /** Scope a token needs to encode. Default `codec:encode`. */
  encodeScope?: string;
  /**
   * Serve `/encode`: `true` or `false` (the default: the UI cannot make ciphertext). Anything else is
   * refused with `USER_CONTEXT_MISCONFIGURED`, so that `encode: 'no'` cannot switch it on.
   */
  encode?: boolean;
  /** Every decision is audited here. */
  auditor: Auditor;
  /**
   * Largest request body in bytes, an integer from 1 KiB to 1 GiB. Default 8 MiB (a 2 MB payload is
   * ~2.7 MB of base64).
   */
  bodyLimit?: number;
  /** Most payloads per request, an integer from 1 to 1 000 000. Default 1000. */
  maxPayloads?: number;
  /**
   * Most workflows whose payloads one `/decode` may read, an integer from 1 to 10 000. Default 100 (the
   * Web UI asks for one workflow's at a time). Every workflow read gets an audit record of its own;
   * past the limit the request is refused (`CODEC_BAD_REQUEST`, 400) before anything is decrypted.
   */
  maxDecodeWorkflows?: number;
  /**
   * Most time in milliseconds a client may take to send a whole request, headers and body, an integer
   * from 1000 to 600 000. Default 30 000. Node checks this deadline every 30 s, so a stalled request is
   * cut after 30 to 60 s at the default. Raise it with `bodyLimit` for slow links: 8 MiB in 30 s needs
   * about 2.3 Mbit/s.
   */
  requestTimeoutMs?: number;
  /**
   * Most time in milliseconds a connection may stay silent (nothing read, nothing written) while a
   * request is read, handled or answered, an integer from 1000 to 600 000. Default 30 000. Idle
   * keep-alive connections follow Node's keep-alive timeout instead.
   */
  connectionTimeoutMs?: number;
  /** TLS key and certificate. The Web UI only sends the access token to an `https://` endpoint. */
  https?: { key: string | Buffer; cert: string | Buffer };
  /** Fastify logger option. Default false. */
  logger?: boolean;
  /**
   * Where the routes sit: `/decode` and `/encode` under it (default none, at the root). For an
   * endpoint the Web UI is given with a path, one per namespace behind one host, say
   * (`https://codec.example.com/prod` → `basePath: '/prod'`): the UI posts to the endpoint plus
   * `/decode`. `/` and path segments of `[A-Za-z0-9._~-]` (not `.` or `..`), no trailing `/`.
   */
  basePath?: string;
  /**
   * Answer `Access-Control-Allow-Credentials: true` to the allowed origin (default false). For the Web
   * UI's "include cross-origin credentials" setting, whose requests a browser otherwise blocks. Cookies
   * are never read: a request is still authorised by its bearer token alone.
   */
  allowCredentials?: boolean;
}

type Operation = 'decode' | 'encode';

/**
 * A remote codec server (Temporal's codec server protocol) for the Web UI and CLI: `POST /decode`,
 * and `POST /encode` only when enabled. Each call must come from the configured UI origin (or from no
 * browser at all), carry a valid bearer token with the operation's scope and name the configured
 * namespace. Refusals are `{ code, message }`; every decision is audited. Not listening yet: call
 * `listen()` on the returned instance.
 *
 * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` for options it cannot serve safely (no
 *   codec, a namespace that is not the codec's, a cap or timeout out of range, `jwt` options that would
 *   switch a check off).
 */
export function createCodecServer(options: CodecServerOptions): FastifyInstance {
  // `plugin.codec` is undefined while the plugin's codec is off: refused by name, not with a TypeError
  // (found by review).
  const given = options.codec as Partial<CodecServerOptions['codec']> | undefined;
  if (typeof given?.decode !== 'function' || typeof given.encode !== 'function')
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "codec server: codec is required (plugin.codec is undefined while the plugin's codec is off)",
    );
  const verify = resolveVerifier(options);
  if (typeof options.namespace !== 'string' || options.namespace.length === 0) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: namespace is required');
  }
  // The server's namespace is the one it serves: a plugin's codec falls back to the namespace the plugin
  // was built with, which in a codec-server process (no client, no worker) is rarely the one served.
  const codec =
    typeof options.codec.forNamespace === 'function'
      ? options.codec.forNamespace(options.namespace, { onRefusal: null })
      : options.codec;
  if (codec.namespace !== undefined && codec.namespace !== options.namespace) {
    // A codec that cannot be rebound would bind every payload to another namespace than X-Namespace.
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: namespace differs from the codec namespace',
    );
  }
  if (!/^https?:\/\/[^/\s]+$/.test(options.allowedOrigin)) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: allowedOrigin must be scheme://host[:port]',
    );
  }
  // Without a sink every request would fail in the audit call, unrecorded, with a 500.
  if (typeof (options.auditor as Partial<Auditor> | undefined)?.emit !== 'function') {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: auditor must have an emit function');
  }
  const { auditor, namespace, allowedOrigin } = options;
  const scopes: Record<Operation, string> = {
    decode: options.decodeScope ?? 'codec:decode',
    encode: options.encodeScope ?? 'codec:encode',
  };
  // NaN or Infinity would turn a cap off (every comparison with NaN is false): refused, not defaulted.
  const maxPayloads = numberOption('codec server: maxPayloads', options.maxPayloads, 1000, {
    min: 1,
    max: 1_000_000,
    integer: true,
  });
  const maxDecodeWorkflows = numberOption(
    'codec server: maxDecodeWorkflows',
    options.maxDecodeWorkflows,
    100,
    { min: 1, max: 10_000, integer: true },
  );
  const bodyLimit = numberOption('codec server: bodyLimit', options.bodyLimit, 8 * 1024 * 1024, {
    min: 1024,
    max: 1024 * 1024 * 1024,
    integer: true,
  });
  // Without deadlines (Fastify's default is none) a client that sends its request slowly, or never
  // reads the answer, holds a connection and its buffers for as long as it likes.
  const requestTimeout = numberOption('codec server: requestTimeoutMs', options.requestTimeoutMs, 30_000, {
    min: 1000,
    max: 600_000,
    integer: true,
  });
  const connectionTimeout = numberOption(
    'codec server: connectionTimeoutMs',
    options.connectionTimeoutMs,
    30_000,
    { min: 1000, max: 600_000, integer: true },
  );
  // A truthy check would serve /encode for `encode: 'no'`: only a real boolean is taken.
  if (options.encode !== undefined && typeof options.encode !== 'boolean') {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: encode must be a boolean');
  }
  const encodeEnabled = options.encode === true;
  if (options.allowCredentials !== undefined && typeof options.allowCredentials !== 'boolean') {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: allowCredentials must be a boolean');
  }
  const allowCredentials = options.allowCredentials === true;
  const basePath = options.basePath ?? '';
  // Segments `.` and `..` are refused too: a path that resolves elsewhere is no place to serve from.
  if (typeof basePath !== 'string' || !/^(\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._~-]+)*$/.test(basePath)) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: basePath must be empty or /segment[/segment...] of [A-Za-z0-9._~-] (not . or ..), with no trailing /',
    );
  }

  // The caller of each authorised request, for the records made after `onRequest`.
  const principals = new WeakMap<FastifyRequest, CodecPrincipal>();
  // The latest request of each connection, so that a refusal of Node's HTTP parser (a body past
  // requestTimeoutMs) is recorded as that request's, and not answered twice.
  const lastReply = new WeakMap<Socket, FastifyReply>();
  // Requests refused (and recorded) by Node's HTTP parser while their route was still at work: what
  // the route does next (its own refusal, or the error of the closed connection) is not recorded again.
  const parserRefused = new WeakSet<FastifyRequest>();

  const audit = (
    req: FastifyRequest,
    action: string,
    decision: 'allow' | 'deny',
    reason: string,
    principal?: CodecPrincipal,
    detail?: string,
    workflowId?: string,
  ): void => {
    if (parserRefused.has(req)) return;
    auditor.emit({
      action,
      decision,
      source: principal ? 'edge' : 'none',
      reason,
      namespace,
      ...(workflowId !== undefined ? { workflowId } : {}),
      ...(principal ? { userId: principal.subject } : {}),
      detail: [`origin=${quoted(req.headers.origin)}`, detail].filter(Boolean).join(' '),
    });
  };

  // Requests already refused: if the reply did not finish (a client that hung up while an async onSend
  // hook of the host app ran), Fastify goes on to the next hook or the route; they must do nothing.
  const refused = new WeakSet<FastifyRequest>();
  const refuse = (reply: FastifyReply, err: CodecServerError | UserContextError): FastifyReply => {
    refused.add(reply.request);
    const status = err instanceof CodecServerError ? err.status : 422;
    const message = err instanceof CodecServerError ? err.message : err.reason;
    if (status === 401) reply.header('www-authenticate', 'Bearer');
    return reply.code(status).type('application/json').send({ code: err.code, message });
  };

  /**
   * The origin check, first for every request (routed, unknown, malformed URL), so a foreign origin
   * learns nothing. Returns the refusal it sent, or undefined (CORS headers set) to go on.
   */
  const checkOrigin = (req: FastifyRequest, reply: FastifyReply): FastifyReply | undefined => {
    const origin = req.headers.origin;
    if (!originAllowed(origin, allowedOrigin)) {
      audit(req, actionOf(req), 'deny', CodecServerCodes.ORIGIN_FORBIDDEN);
      reply.header('vary', 'Origin');
      return refuse(
        reply,
        new CodecServerError(403, CodecServerCodes.ORIGIN_FORBIDDEN, 'origin not allowed'),
      );
    }
    setCorsHeaders(reply, origin, allowCredentials);
    return undefined;
  };

  /**
   * Answers a framework error (a malformed URL, bad JSON, a body too large): Fastify's own 4xx (400,
   * 413, 415 for a content type missing or not JSON/text) keep their status, anything else is a 500;
   * one record, with the error's code and `detail`.
   */
  const refuseFailure = (
    req: FastifyRequest,
    reply: FastifyReply,
    err: { statusCode?: number; code?: string },
    action: string,
    principal: CodecPrincipal | undefined,
    detail?: string,
  ): FastifyReply => {
    const status = clientStatus(err.statusCode) ?? 500;
    const code = status === 500 ? CodecServerCodes.INTERNAL : CodecServerCodes.BAD_REQUEST;
    if (status === 500) req.log.error({ err }, 'codec server error');
    const error = typeof err.code === 'string' ? `error=${quoted(err.code)}` : undefined;
    audit(req, action, 'deny', code, principal, [error, detail].filter(Boolean).join(' ') || undefined);
    return refuse(
      reply,
      new CodecServerError(status, code, status === 500 ? 'internal error' : 'bad request'),
    );
  };

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
    requestTimeout,
    connectionTimeout,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // A URL Fastify cannot decode (`/decode%zz`) never reaches a hook: without this it would be answered
    // in Fastify's own format, with no origin check and no record.
    frameworkErrors: (err, req, reply) => {
      lastReply.set(req.raw.socket, reply);
      if (checkOrigin(req, reply)) return;
      refuseFailure(req, reply, err, actionOf(req), undefined, `path=${quoted(req.url.slice(0, 100))}`);
    },
    // What Node's HTTP parser refuses before there is a request (a request past requestTimeoutMs,
    // headers too large, not HTTP): answered in the server's format and recorded, not in Fastify's.
    clientErrorHandler: (err, socket) => {
      // A reset connection was not refused: there is nobody to answer, and nothing to record.
      if (socket.destroyed || CONNECTION_LOST.has(String(err.code))) return;
      const error = `error=${typeof err.code === 'string' ? quoted(err.code) : 'none'}`;
      const current = lastReply.get(socket);
      let cors = '';
      if (current && !current.request.raw.complete) {
        if (current.raw.headersSent) {
          // Answered and recorded before its body was in; Node was discarding the rest of the body. A
          // second answer would corrupt the connection, a second record double a refusal.
          socket.destroy();
          return;
        }
        // Its route is still at work (authorising, or reading the body): the refusal is that request's,
        // recorded with its caller if known by now.
        const req = current.request;
        audit(req, 'codec.request', 'deny', CodecServerCodes.BAD_REQUEST, principals.get(req), error);
        parserRefused.add(req);
        // Only ever the configured origin (no request bytes in this hand-written answer).
        const allowed = req.headers.origin === allowedOrigin;
        cors = `Vary: Origin\r\n${allowed ? `Access-Control-Allow-Origin: ${allowedOrigin}\r\n` : ''}`;
      } else {
        // Before a request's headers were in: neither its origin nor its caller is known.
        auditor.emit({
          action: 'codec.request',
          decision: 'deny',
          source: 'none',
          reason: CodecServerCodes.BAD_REQUEST,
          namespace,
          detail: `origin=unknown ${error}`,
        });
      }
      if (socket.writable) {
        const status =
          err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
        const body = JSON.stringify({ code: CodecServerCodes.BAD_REQUEST, message: 'bad request' });
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n${cors}` +
            `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
      }
      socket.destroy();
    },
    ...(options.https ? { https: options.https } : {}),
  }) as unknown as FastifyInstance;
  // JSON bodies: nesting checked before Fastify's own parser (which keeps its prototype-poisoning
  // refusals) builds anything; a deep body is a 400 like any malformed one, recorded with its caller.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const maxContainers = maxJsonContainers(maxPayloads);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const problem = jsonShapeProblem(body as string, MAX_JSON_DEPTH, maxContainers);
    if (problem)
      return done(
        Object.assign(new Error(`JSON ${problem}`), {
          statusCode: 400,
          code: problem === 'too deep' ? 'CODEC_JSON_TOO_DEEP' : 'CODEC_JSON_TOO_MANY_VALUES',
        }),
        undefined,
      );
    parseJson(req, body as string, done);
  });
  // Node swaps the two deadlines when headersTimeout is the larger (createServer refuses that, but
  // Fastify sets requestTimeout after creating the server and leaves headersTimeout at 60 s): the
  // headers would get requestTimeoutMs and the whole request 60 s, a trickled body past the deadline.
  app.server.headersTimeout = Math.min(app.server.headersTimeout, requestTimeout);

  // Everything but an authorised /decode or /encode is answered here, in `onRequest`, before Fastify
  // reads and parses a body of up to `bodyLimit` (8 MB of nested JSON costs about a second): preflights,
  // unknown paths and methods, and (in its route's hook) a disabled /encode.
  app.addHook('onRequest', async (req, reply) => {
    lastReply.set(req.raw.socket, reply);
    const originRefusal = checkOrigin(req, reply);
    if (originRefusal) return originRefusal;
    if (req.method === 'OPTIONS') {
      if (req.headers.origin === undefined) {
        // No browser sends a preflight without an origin: answered like an unknown path, and audited so.
        audit(req, 'codec.preflight', 'deny', CodecServerCodes.NOT_FOUND);
        return refuse(reply, new CodecServerError(404, CodecServerCodes.NOT_FOUND, 'not found'));
      }
      setPreflightHeaders(reply, req.headers['access-control-request-private-network'] === 'true');
      return reply.code(204).send();
    }
    if (req.is404) {
      audit(
        req,
        'codec.request',
        'deny',
        CodecServerCodes.NOT_FOUND,
        undefined,
        `path=${quoted(req.url.slice(0, 100))}`,
      );
      return refuse(reply, new CodecServerError(404, CodecServerCodes.NOT_FOUND, 'not found'));
    }
    return undefined;
  });

  // Who may call, decided in `onRequest`: before Fastify reads and parses a body of up to `bodyLimit`,
  // so that an anonymous caller cannot make the server parse large bodies.
  const authorize = (operation: Operation) => async (req: FastifyRequest, reply: FastifyReply) => {
    if (refused.has(req)) return reply;
    let principal: CodecPrincipal | undefined;
    try {
      principal = await authenticate(verify, bearerToken(req.headers.authorization));
      const requested = req.headers['x-namespace'];
      if (requested !== namespace) {
        throw new CodecServerError(
          403,
          CodecServerCodes.NAMESPACE_FORBIDDEN,
          'namespace not served here',
          `requested=${quoted(typeof requested === 'string' ? requested : undefined)}`,
        );
      }
      if (!principal.scopes.includes(scopes[operation])) {
        throw new CodecServerError(
          403,
          CodecServerCodes.SCOPE_FORBIDDEN,
          `the token lacks scope ${scopes[operation]}`,
        );
      }
      principals.set(req, principal);
    } catch (err) {
      if (err instanceof CodecServerError || isUserContextError(err)) {
        const detail = err instanceof CodecServerError ? err.detail : undefined;
        audit(req, `codec.${operation}`, 'deny', err.code, principal, detail);
        return refuse(reply, err);
      }
      throw err;
    }
  };

  const handle = (operation: Operation) => async (req: FastifyRequest, reply: FastifyReply) => {
    if (refused.has(req)) return reply;
    const action = `codec.${operation}`;
    const principal = principals.get(req);
    if (!principal) throw new Error('codec server: a route ran without its authorization hook');
    try {
      const payloads = parsePayloadsBody(req.body, maxPayloads);
      // The workflows the encrypted payloads are bound to: counted before any decryption (one record
      // per workflow read, below, must not become a flood of the trail); a successful decode then
      // authenticated each (a plaintext payload passed through proves nothing, and is not counted).
      const bound = operation === 'decode' ? boundWorkflows(payloads) : [];
      if (bound.length > maxDecodeWorkflows)
        throw new CodecServerError(
          400,
          CodecServerCodes.BAD_REQUEST,
          'bad request',
          `error="CODEC_TOO_MANY_WORKFLOWS" limit=${maxDecodeWorkflows}`,
        );
      const result: Payload[] =
        operation === 'decode' ? await codec.decode(payloads) : await codec.encode(payloads);
      // Whose data was read: one workflow, as the Web UI asks, is the record's workflow id. Several are
      // counted, and each gets a record of its own: payloads of other workflows added to the batch hide
      // none of them.
      const many = bound.length > 1;
      audit(
        req,
        action,
        'allow',
        'ok',
        principal,
        `payloads=${payloads.length}${many ? ` workflows=${bound.length}` : ''}`,
        bound.length === 1 ? bound[0] : undefined,
      );
      if (many)
        for (const workflowId of bound)
          audit(req, action, 'allow', 'ok', principal, `batch of ${bound.length} workflows`, workflowId);
      return reply.code(200).send(payloadsToJson(result));
    } catch (err) {
      if (err instanceof CodecServerError || isUserContextError(err)) {
        // The codec's own reason (malformed, moved to another workflow, ...) tells refusals of one code
        // apart: this record is the only one (the codec's refusal hook is off here).
        audit(
          req,
          action,
          'deny',
          err.code,
          principal,
          err instanceof CodecServerError ? err.detail : `reason=${quoted(err.reason)}`,
        );
        return refuse(reply, err);
      }
      throw err;
    }
  };

  app.post(`${basePath}/decode`, { onRequest: authorize('decode') }, handle('decode'));
  if (encodeEnabled) {
    app.post(`${basePath}/encode`, { onRequest: authorize('encode') }, handle('encode'));
  } else {
    const encodeDisabled = async (req: FastifyRequest, reply: FastifyReply) => {
      if (refused.has(req)) return reply;
      audit(req, 'codec.encode', 'deny', CodecServerCodes.ENCODE_DISABLED);
      return refuse(
        reply,
        new CodecServerError(404, CodecServerCodes.ENCODE_DISABLED, 'encoding is disabled'),
      );
    };
    app.post(`${basePath}/encode`, { onRequest: encodeDisabled }, async (req, reply) => {
      if (refused.has(req)) return reply;
      throw new Error('codec server: /encode ran although disabled');
    });
  }

  // Answered in `onRequest` already; kept so that nothing reaches Fastify's own 404 answer.
  app.setNotFoundHandler(async (req, reply) => {
    if (refused.has(req)) return reply;
    throw new Error('codec server: an unknown route ran past its onRequest refusal');
  });

  app.setErrorHandler(async (err: { statusCode?: number; code?: string }, req, reply) => {
    // The refused request's own reply failed to finish (see `refused`): already answered and recorded.
    if (refused.has(req) || reply.sent) return reply;
    // After authorization (a body too large, bad JSON), the caller is known: the record names them.
    return refuseFailure(req, reply, err, 'codec.request', principals.get(req));
  });

  return app;
}

/**
 * A value from the request (or other free text) for an audit `detail`, in double quotes: a space or
 * `=` inside stays inside the quotes, so the value can never read as another `key=value` field
 * (`X-Namespace: evil origin=http://x`). Quotes, backslashes and anything but printable ASCII become
 * `?`, and a value over 64 characters is cut (ending `...`) inside its quotes. An absent value is the
 * bare word `none`, which no quoted value equals.
 */
function quoted(value: string | undefined): string {
  if (value === undefined) return 'none';
  // Printable ASCII but for the quote and the backslash, at most QUOTED_MAX of it: no escape inside, so
  // a value is exactly its quotes' content, and three of them fit the record's 256-character detail
  // whole (a longer detail is cut, and a cut before a closing quote would let the rest read as fields).
  const plain = value.replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '?');
  return `"${plain.length > QUOTED_MAX ? `${plain.slice(0, QUOTED_MAX - 3)}...` : plain}"`;
}

/** Longest quoted value in an audit detail, quotes aside. */
const QUOTED_MAX = 64;

/** Socket errors that end a connection without a refusal: nobody to answer, nothing to record. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED']);

/** The audit action of a request refused before its route's own checks. */
function actionOf(req: FastifyRequest): string {
  return req.method === 'OPTIONS' ? 'codec.preflight' : 'codec.request';
}

/** A client-error HTTP status (4xx) of a framework error, else undefined. */
function clientStatus(statusCode: unknown): number | undefined {
  return typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500 ? statusCode : undefined;
}

function resolveVerifier(options: CodecServerOptions): VerifyToken {
  if (options.verifyToken && options.jwt) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: give verifyToken or jwt, not both');
  }
  if (options.verifyToken) return options.verifyToken;
  if (options.jwt) return jwtVerifier(options.jwt);
  throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: token verification is required');
}

const ENCRYPTED = Buffer.from(ENCODING_ENCRYPTED);

/** The distinct workflow ids encrypted payloads are bound to (`encryption-workflow-id`), in order. */
function boundWorkflows(payloads: readonly Payload[]): string[] {
  const ids = new Set<string>();
  for (const p of payloads) {
    const encoding = p.metadata?.[META_ENCODING];
    if (!encoding || !ENCRYPTED.equals(encoding)) continue;
    const bytes = p.metadata?.[META_WORKFLOW_ID];
    if (bytes) ids.add(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  }
  return [...ids];
}
