import type { Payload, PayloadCodec } from '@temporalio/common';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Auditor } from '../audit/sinks.js';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import {
  authenticate,
  bearerToken,
  jwtVerifier,
  type CodecPrincipal,
  type JwtOptions,
  type VerifyToken,
} from './auth.js';
import { parsePayloadsBody, payloadsToJson } from './body.js';
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
  /** Serve `/encode`. Default false: the UI cannot make ciphertext. */
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
  /** TLS key and certificate. The Web UI only sends the access token to an `https://` endpoint. */
  https?: { key: string | Buffer; cert: string | Buffer };
  /** Fastify logger option. Default false. */
  logger?: boolean;
}

type Operation = 'decode' | 'encode';

/**
 * A remote codec server (Temporal's codec server protocol) for the Web UI and CLI: `POST /decode`,
 * and `POST /encode` only when enabled. Each call must come from the configured UI origin (or from no
 * browser at all), carry a valid bearer token with the operation's scope and name the configured
 * namespace. Refusals are `{ code, message }`; every decision is audited. Not listening yet: call
 * `listen()` on the returned instance.
 */
export function createCodecServer(options: CodecServerOptions): FastifyInstance {
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
  const bodyLimit = numberOption('codec server: bodyLimit', options.bodyLimit, 8 * 1024 * 1024, {
    min: 1024,
    max: 1024 * 1024 * 1024,
    integer: true,
  });
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    ...(options.https ? { https: options.https } : {}),
  }) as unknown as FastifyInstance;

  const audit = (
    req: FastifyRequest,
    action: string,
    decision: 'allow' | 'deny',
    reason: string,
    principal?: CodecPrincipal,
    detail?: string,
  ): void => {
    const origin = req.headers.origin;
    auditor.emit({
      action,
      decision,
      source: principal ? 'edge' : 'none',
      reason,
      namespace,
      ...(principal ? { userId: principal.subject } : {}),
      detail: [origin ? `origin=${origin}` : 'origin=none', detail].filter(Boolean).join(' '),
    });
  };

  const refuse = (reply: FastifyReply, err: CodecServerError | UserContextError): FastifyReply => {
    const status = err instanceof CodecServerError ? err.status : 422;
    const message = err instanceof CodecServerError ? err.message : err.reason;
    if (status === 401) reply.header('www-authenticate', 'Bearer');
    return reply.code(status).type('application/json').send({ code: err.code, message });
  };

  // CORS first, for every route (including 404s and errors), so a foreign origin learns nothing.
  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (!originAllowed(origin, allowedOrigin)) {
      audit(
        req,
        `codec.${req.method === 'OPTIONS' ? 'preflight' : 'request'}`,
        'deny',
        CodecServerCodes.ORIGIN_FORBIDDEN,
      );
      reply.header('vary', 'Origin');
      return refuse(
        reply,
        new CodecServerError(403, CodecServerCodes.ORIGIN_FORBIDDEN, 'origin not allowed'),
      );
    }
    setCorsHeaders(reply, origin);
  });

  app.options('/*', async (req, reply) => {
    if (req.headers.origin === undefined) {
      // No browser sends a preflight without an origin: answered like an unknown path, and audited so.
      audit(req, 'codec.preflight', 'deny', CodecServerCodes.NOT_FOUND);
      return refuse(reply, new CodecServerError(404, CodecServerCodes.NOT_FOUND, 'not found'));
    }
    setPreflightHeaders(reply, req.headers['access-control-request-private-network'] === 'true');
    return reply.code(204).send();
  });

  // Who may call, decided in `onRequest`: before Fastify reads and parses a body of up to `bodyLimit`,
  // so that an anonymous caller cannot make the server parse large bodies.
  const principals = new WeakMap<FastifyRequest, CodecPrincipal>();
  const authorize = (operation: Operation) => async (req: FastifyRequest, reply: FastifyReply) => {
    let principal: CodecPrincipal | undefined;
    try {
      principal = await authenticate(verify, bearerToken(req.headers.authorization));
      const requested = req.headers['x-namespace'];
      if (requested !== namespace) {
        const named = typeof requested === 'string' ? `requested=${requested}` : 'requested=none';
        throw new CodecServerError(
          403,
          CodecServerCodes.NAMESPACE_FORBIDDEN,
          'namespace not served here',
          named,
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
    const action = `codec.${operation}`;
    const principal = principals.get(req);
    if (!principal) throw new Error('codec server: a route ran without its authorization hook');
    try {
      const payloads = parsePayloadsBody(req.body, maxPayloads);
      const result: Payload[] =
        operation === 'decode' ? await codec.decode(payloads) : await codec.encode(payloads);
      audit(req, action, 'allow', 'ok', principal, `payloads=${payloads.length}`);
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
          err instanceof CodecServerError ? err.detail : `reason=${err.reason}`,
        );
        return refuse(reply, err);
      }
      throw err;
    }
  };

  app.post('/decode', { onRequest: authorize('decode') }, handle('decode'));
  if (options.encode) {
    app.post('/encode', { onRequest: authorize('encode') }, handle('encode'));
  } else {
    app.post('/encode', async (req, reply) => {
      audit(req, 'codec.encode', 'deny', CodecServerCodes.ENCODE_DISABLED);
      return refuse(
        reply,
        new CodecServerError(404, CodecServerCodes.ENCODE_DISABLED, 'encoding is disabled'),
      );
    });
  }

  app.setNotFoundHandler(async (req, reply) => {
    audit(
      req,
      'codec.request',
      'deny',
      CodecServerCodes.NOT_FOUND,
      undefined,
      `path=${req.url.slice(0, 100)}`,
    );
    return refuse(reply, new CodecServerError(404, CodecServerCodes.NOT_FOUND, 'not found'));
  });

  app.setErrorHandler(async (err: { statusCode?: number; code?: string }, req, reply) => {
    // Fastify's own 4xx (bad JSON, wrong content type, body too large) keep their status.
    const status =
      typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500
        ? err.statusCode
        : 500;
    const code = status === 500 ? CodecServerCodes.INTERNAL : CodecServerCodes.BAD_REQUEST;
    if (status === 500) req.log.error({ err }, 'codec server error');
    // After authorization (a body too large, bad JSON), the caller is known: the record names them.
    audit(
      req,
      'codec.request',
      'deny',
      code,
      principals.get(req),
      err.code ? `error=${err.code}` : undefined,
    );
    return refuse(
      reply,
      new CodecServerError(status, code, status === 500 ? 'internal error' : 'bad request'),
    );
  });

  return app;
}

function resolveVerifier(options: CodecServerOptions): VerifyToken {
  if (options.verifyToken && options.jwt) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: give verifyToken or jwt, not both');
  }
  if (options.verifyToken) return options.verifyToken;
  if (options.jwt) return jwtVerifier(options.jwt);
  throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: token verification is required');
}
