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
 * Verifies a bearer token and returns its principal, or throws (any error: the server answers
 * `CODEC_TOKEN_INVALID`). Use it for an identity provider that is not a plain JWKS issuer.
 */
export type VerifyToken = (token: string) => Promise<CodecPrincipal>;

/** JWT verification with jose against the identity provider that issues the Web UI's tokens. */
export interface JwtOptions {
  /** The issuer's JWKS: a URL (fetched and cached by jose), a JWK set, or a jose key resolver. */
  jwks: URL | JSONWebKeySet | JWTVerifyGetKey;
  /** Required `iss`. */
  issuer: string;
  /** Required `aud` (one of). */
  audience: string | string[];
  /**
   * Accepted algorithms. Default asymmetric only: `RS256`, `PS256`, `ES256`, `EdDSA`. `none` and HS*
   * are refused with `USER_CONTEXT_MISCONFIGURED` when the verifier is built.
   */
  algorithms?: JWSAlgorithm[];
  /** Allowed clock skew in seconds, 0 to 3600. Default 30. */
  clockToleranceSeconds?: number;
}

/** JWS algorithm names accepted for bearer tokens. */
type JWSAlgorithm = string;

const DEFAULT_ALGORITHMS: JWSAlgorithm[] = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const MAX_TOKEN_CHARS = 8192;

/** A {@link VerifyToken} backed by jose `jwtVerify`; requires `exp` and `sub`. */
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
  const clockTolerance = numberOption(
    'codec server: jwt.clockToleranceSeconds',
    options.clockToleranceSeconds,
    30,
    {
      min: 0,
      max: 3600,
    },
  );
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
      requiredClaims: ['exp', 'sub'],
      clockTolerance,
    });
    return { subject: payload.sub!, scopes: scopesOf(payload) };
  };
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

/** Runs the verifier; every failure becomes `CODEC_TOKEN_INVALID` (the cause stays server-side). */
export async function authenticate(verify: VerifyToken, token: string): Promise<CodecPrincipal> {
  let principal: CodecPrincipal;
  try {
    principal = await verify(token);
  } catch {
    throw new CodecServerError(401, CodecServerCodes.TOKEN_INVALID, 'the bearer token is not valid');
  }
  if (typeof principal?.subject !== 'string' || !Array.isArray(principal.scopes)) {
    throw new CodecServerError(401, CodecServerCodes.TOKEN_INVALID, 'the bearer token is not valid');
  }
  return principal;
}
