import { BlockList, isIP } from 'node:net';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { CodecServerCodes, CodecServerError } from './errors.js';

/** Who called, as far as the codec server cares. */
export interface CodecPrincipal {
  /** Token subject, for the audit record. */
  subject: string;
  /** Granted scopes/roles, e.g. `codec:decode`, `codec:encode`. */
  scopes: readonly string[];
}

/**
 * Verifies a bearer token and returns its principal, or throws: the server answers 401
 * `CODEC_TOKEN_INVALID`, or 503 `CODEC_UNAVAILABLE` when what it throws says the key set was out of
 * reach: an error whose `code` is jose's `ERR_JWKS_TIMEOUT` or `ERR_JWKS_INVALID`, a network code
 * (`ECONNREFUSED`, `ECONNRESET`, `ECONNABORTED`, `ENOTFOUND`, `EAI_AGAIN`, `ETIMEDOUT`, `EHOSTUNREACH`,
 * `ENETUNREACH`, `EPIPE`) or a TLS certificate code (`CERT_HAS_EXPIRED`, `SELF_SIGNED_CERT_IN_CHAIN`,
 * `ERR_TLS_CERT_ALTNAME_INVALID`, ...). Use it for an identity provider that is not a plain JWKS issuer.
 */
export type VerifyToken = (token: string) => Promise<CodecPrincipal>;

/** JWT verification with jose against the identity provider that issues the Web UI's tokens. */
export interface JwtOptions {
  /**
   * The issuer's JWKS: a URL (fetched and cached by jose; `https:`, or `http:` on a loopback address
   * only), a JWK set, or a jose key resolver.
   */
  jwks: URL | JSONWebKeySet | JWTVerifyGetKey;
  /** Required `iss` (a non-empty string). */
  issuer: string;
  /** Required `aud`, one of (a non-empty string, or a non-empty list of them). */
  audience: string | string[];
  /**
   * Accepted algorithms. Default asymmetric only: `RS256`, `PS256`, `ES256`, `EdDSA`. `none` and HS*
   * are refused with `USER_CONTEXT_MISCONFIGURED` when the verifier is built.
   */
  algorithms?: string[];
  /** Allowed clock skew in seconds, 0 to 3600. Default 30. */
  clockToleranceSeconds?: number;
  /**
   * The oldest token accepted, in seconds since its `iat` (then required), 60 to 31 days. Default: no
   * bound but `exp`. A reader disabled at the identity provider keeps decoding every workspace's
   * payloads until the token expires; an identity provider that issues long-lived tokens should be
   * given a bound here.
   */
  maxTokenAgeSeconds?: number;
}

const DEFAULT_ALGORITHMS: string[] = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const MAX_TOKEN_CHARS = 8192;

/**
 * A {@link VerifyToken} backed by jose `jwtVerify`; requires `iss`, `aud`, `exp` and `sub` (and `iat` with
 * `maxTokenAgeSeconds`).
 *
 * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` for a symmetric or `none` algorithm, an
 *   empty issuer or audience, a key set URL that is not https (or http on loopback), a malformed key
 *   set, or a number out of range.
 */
export function jwtVerifier(options: JwtOptions): VerifyToken {
  const algorithms = options.algorithms ?? DEFAULT_ALGORITHMS;
  // Configuration, not a request: refused like the server's other start-up checks (server.ts), before
  // any request is served. Non-string entries are refused too rather than crashing the check.
  if (
    !Array.isArray(algorithms) ||
    algorithms.some((alg) => typeof alg !== 'string' || alg.toLowerCase() === 'none' || /^hs/i.test(alg))
  ) {
    // A symmetric secret shared with every UI user's browser would let any of them mint tokens.
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: only asymmetric JWT algorithms are accepted',
    );
  }
  // jose skips the `iss` and `aud` checks for a falsy option: an unset variable behind either would
  // admit any token the key set verifies, another application's or an ID token.
  const nonEmpty = (value: unknown): boolean => typeof value === 'string' && value.length > 0;
  if (!nonEmpty(options.issuer))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: jwt.issuer must be a non-empty string',
    );
  const { audience } = options;
  if (!(nonEmpty(audience) || (Array.isArray(audience) && audience.length > 0 && audience.every(nonEmpty))))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: jwt.audience must be a non-empty string or list of them',
    );
  if (options.jwks instanceof URL && !secureKeySetUrl(options.jwks))
    // Whoever can alter the key set in transit can sign any reader's token.
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec server: jwt.jwks must be an https URL (plain http only on a loopback address)',
    );
  const clockTolerance = numberOption(
    'codec server: jwt.clockToleranceSeconds',
    options.clockToleranceSeconds,
    30,
    {
      min: 0,
      max: 3600,
    },
  );
  const maxTokenAge =
    options.maxTokenAgeSeconds === undefined
      ? undefined
      : numberOption('codec server: jwt.maxTokenAgeSeconds', options.maxTokenAgeSeconds, 0, {
          min: 60,
          max: 31 * 24 * 3600,
        });
  let getKey: JWTVerifyGetKey;
  try {
    getKey =
      typeof options.jwks === 'function'
        ? options.jwks
        : options.jwks instanceof URL
          ? createRemoteJWKSet(options.jwks)
          : createLocalJWKSet(options.jwks);
  } catch (err) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec server: jwt.jwks is not a key set', {
      cause: err,
    });
  }
  return async (token) => {
    const { payload } = await jwtVerify(token, getKey, {
      issuer: options.issuer,
      audience: options.audience,
      algorithms,
      requiredClaims:
        maxTokenAge === undefined ? ['iss', 'aud', 'exp', 'sub'] : ['iss', 'aud', 'exp', 'sub', 'iat'],
      clockTolerance,
      ...(maxTokenAge === undefined ? {} : { maxTokenAge }),
    });
    return { subject: payload.sub!, scopes: scopesOf(payload) };
  };
}

// Loopback: localhost, 127.0.0.0/8, ::1, and 127/8 written as IPv4-mapped IPv6.
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:7f00:0', 104, 'ipv6');

function secureKeySetUrl(url: URL): boolean {
  if (url.protocol === 'https:') return true;
  if (url.protocol !== 'http:') return false;
  if (url.hostname === 'localhost') return true;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

/** Scopes from the usual claims: OAuth `scope` (space-separated), `scp`, `roles`, `permissions`. */
export function scopesOf(payload: JWTPayload): string[] {
  const out = new Set<string>();
  const add = (value: unknown): void => {
    if (typeof value === 'string') for (const s of value.split(' ')) if (s) out.add(s);
    if (Array.isArray(value)) for (const s of value) if (typeof s === 'string' && s) out.add(s);
  };
  add(payload.scope);
  add(payload.scp);
  add(payload.roles);
  add(payload.permissions);
  return [...out];
}

/** The bearer token of an `Authorization` header, or a `CODEC_UNAUTHENTICATED` refusal. */
export function bearerToken(header: string | undefined): string {
  const match = header === undefined ? null : /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header);
  if (!match || match[1]!.length > MAX_TOKEN_CHARS) {
    throw new CodecServerError(401, CodecServerCodes.UNAUTHENTICATED, 'a bearer token is required');
  }
  return match[1]!;
}

/**
 * Runs the verifier; every failure becomes `CODEC_TOKEN_INVALID` (401), except a key set that could not
 * be fetched or read: `CODEC_UNAVAILABLE` (503), so that an identity provider's outage does not read as
 * a bad token. The caller learns nothing more; the audit record gets the kind of failure
 * (`token=expired`, ...; see {@link tokenFailure}) in its detail, so that operators can tell an expired
 * token from a forged one. Never the token or the error message.
 */
export async function authenticate(verify: VerifyToken, token: string): Promise<CodecPrincipal> {
  const invalid = (kind: TokenFailure): CodecServerError =>
    new CodecServerError(
      401,
      CodecServerCodes.TOKEN_INVALID,
      'the bearer token is not valid',
      `token=${kind}`,
    );
  let principal: CodecPrincipal;
  try {
    principal = await verify(token);
  } catch (err) {
    const kind = tokenFailure(err);
    if (kind === 'key-set-unavailable')
      throw new CodecServerError(
        503,
        CodecServerCodes.UNAVAILABLE,
        'the token cannot be checked now: try again later',
        `token=${kind}`,
      );
    throw invalid(kind);
  }
  if (typeof principal?.subject !== 'string' || !Array.isArray(principal.scopes)) {
    throw invalid('bad-principal');
  }
  return principal;
}

/**
 * Why a token was refused, coarsely, as a fixed word for the audit record:
 *
 * - `expired`: `exp` passed (or `iat` older than a verifier's maximum age);
 * - `not-yet-valid`: `nbf` or `iat` in the future;
 * - `bad-signature`: the signature does not verify (forged, tampered, signed by another key);
 * - `unknown-key`: no key of the key set matches the token's `kid`/`alg` (a forgery, or the issuer
 *   rotated keys);
 * - `algorithm-not-allowed`: `alg` is `none`, HS* or another algorithm not accepted;
 * - `wrong-issuer-or-audience`: `iss` or `aud` is not the configured one;
 * - `claim-missing`: `exp` or `sub` (or another required claim) is missing;
 * - `malformed`: not a JWS/JWT, or a claim of the wrong type;
 * - `claims-rejected`: another claim check failed;
 * - `key-set-unavailable`: the issuer's JWKS could not be fetched or read (a timeout, one of the network
 *   and TLS error codes listed below, an answer other than 200 or not a key set): answered 503, not 401;
 * - `bad-principal`: a custom `verifyToken` returned something that is not a principal;
 * - `rejected`: anything else (most of what a custom `verifyToken` throws).
 *
 * Read from jose's stable error `code`s (not `instanceof`, which fails across two copies of jose): only
 * these fixed words reach the record, never the error's message, which may quote the token's claims.
 */
export type TokenFailure =
  | 'expired'
  | 'not-yet-valid'
  | 'bad-signature'
  | 'unknown-key'
  | 'algorithm-not-allowed'
  | 'wrong-issuer-or-audience'
  | 'claim-missing'
  | 'malformed'
  | 'claims-rejected'
  | 'key-set-unavailable'
  | 'bad-principal'
  | 'rejected';

const KEY_SET_FETCH_FAILURES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** The {@link TokenFailure} of an error thrown by a verifier. */
export function tokenFailure(err: unknown): TokenFailure {
  if (err === null || typeof err !== 'object') return 'rejected';
  let code: unknown, claim: unknown, reason: unknown;
  try {
    ({ code, claim, reason } = err as { code?: unknown; claim?: unknown; reason?: unknown });
  } catch {
    // A custom verifier's error with a throwing getter (or a revoked Proxy): still a refusal, not a 500.
    return 'rejected';
  }
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (reason === 'missing') return 'claim-missing';
      if (reason === 'invalid') return 'malformed';
      if (claim === 'nbf' || claim === 'iat') return 'not-yet-valid';
      if (claim === 'iss' || claim === 'aud') return 'wrong-issuer-or-audience';
      return 'claims-rejected';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad-signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'unknown-key';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'algorithm-not-allowed';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'malformed';
    // jose's own failures of the key set's fetch (ERR_JOSE_GENERIC: not 200, not JSON) too.
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC':
      return 'key-set-unavailable';
    default:
      // The key set's fetch failing in the network or TLS (Node's codes): the identity provider is out
      // of reach, not the token bad. Only these: a custom verifier's own codes stay refusals.
      return typeof code === 'string' && KEY_SET_FETCH_FAILURES.has(code)
        ? 'key-set-unavailable'
        : 'rejected';
  }
}
