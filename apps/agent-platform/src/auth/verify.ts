import { BlockList, isIP } from 'node:net';
import { createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify, type JWK } from 'jose';
import { parseUserContext, type UserContext } from 'temporal-user-context';

export interface AuthOptions {
  issuer: string;
  audience: string;
  /** A JWKS URL (fetched and cached) or a JWKS document. */
  jwks: string | { keys: JWK[] };
  /** Allowed clock skew in seconds (default 30). */
  clockToleranceSeconds?: number;
  /**
   * Oldest token accepted, in seconds since its `iat` (default {@link DEFAULT_MAX_TOKEN_AGE_SECONDS}),
   * whatever its `exp` says.
   */
  maxTokenAgeSeconds?: number;
  /**
   * Required `typ` header (`at+jwt`, `JWT`; an `application/` prefix and case are ignored). Unset: any
   * or none, since identity providers differ in what they send.
   */
  tokenType?: string;
  /**
   * How long a fetched key set is used before it is fetched again, in seconds (default 600, jose's):
   * a signing key the identity provider withdraws keeps verifying tokens until then.
   */
  jwksCacheSeconds?: number;
}

/** jose's own default: a key set is fetched again after ten minutes. */
export const DEFAULT_JWKS_CACHE_SECONDS = 600;

/** Covers a day-long access token (Auth0's default) and the 8 h tokens `npm run token` mints. */
export const DEFAULT_MAX_TOKEN_AGE_SECONDS = 86_400;

/** Why a bearer token was refused (401 problems; `AUTH_UNAVAILABLE` is a 503: retry later). */
export class AuthError extends Error {
  constructor(
    readonly code: 'AUTH_MISSING' | 'AUTH_INVALID' | 'AUTH_EXPIRED' | 'AUTH_STALE' | 'AUTH_UNAVAILABLE',
    message: string,
  ) {
    super(message);
  }
}

/** Who a verified bearer token names, and when it was issued. */
export interface BearerIdentity {
  context: UserContext;
  /** The token's `iat`, epoch seconds: a role granted after it is not the token's (migration 0019). */
  issuedAt: number;
}

export type VerifyBearer = (token: string) => Promise<BearerIdentity>;

/**
 * Verifies a bearer JWT (ES256/RS256/EdDSA only, issuer and audience pinned, `exp`, `iat` and `sub`
 * required, `iat` neither in the future nor older than the maximum token age, `typ` when configured)
 * and maps its claims to a user context: `sub` → userId, `workspace_id` → workspaceId, `roles` → roles.
 * The roles are a ceiling: withUserScope intersects them with the stored membership on every database
 * access.
 */
export function createVerifier(options: AuthOptions): VerifyBearer {
  // jose skips the `iss` and `aud` checks for a falsy option: any token the key set verifies would pass.
  if (typeof options.issuer !== 'string' || !options.issuer)
    throw new Error('issuer must be a non-empty string');
  if (typeof options.audience !== 'string' || !options.audience)
    throw new Error('audience must be a non-empty string');
  const maxTokenAge = options.maxTokenAgeSeconds ?? DEFAULT_MAX_TOKEN_AGE_SECONDS;
  // jose skips the age check (and with it the future-`iat` check) for a falsy maximum.
  if (!Number.isSafeInteger(maxTokenAge) || maxTokenAge <= 0)
    throw new Error('maxTokenAgeSeconds must be a positive integer');
  const cacheSeconds = options.jwksCacheSeconds ?? DEFAULT_JWKS_CACHE_SECONDS;
  if (!Number.isSafeInteger(cacheSeconds) || cacheSeconds <= 0)
    throw new Error('jwksCacheSeconds must be a positive integer');
  const remote = typeof options.jwks === 'string';
  const keys =
    typeof options.jwks === 'string'
      ? createRemoteJWKSet(jwksUrl(options.jwks), {
          cacheMaxAge: cacheSeconds * 1000,
          // jose refetches at most this often for a key id it does not know: never less often than
          // the cache expires.
          cooldownDuration: Math.min(30_000, cacheSeconds * 1000),
        })
      : createLocalJWKSet(options.jwks);
  return async (token) => {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: options.issuer,
        audience: options.audience,
        algorithms: ['ES256', 'RS256', 'EdDSA'],
        requiredClaims: ['exp', 'iat', 'sub'],
        clockTolerance: options.clockToleranceSeconds ?? 30,
        // Bounds a token however far away its `exp`, and refuses an `iat` in the future.
        maxTokenAge,
        ...(options.tokenType ? { typ: options.tokenType } : {}),
      }));
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw new AuthError('AUTH_EXPIRED', 'token expired');
      if (remote && keySetUnavailable(err))
        throw new AuthError('AUTH_UNAVAILABLE', 'identity provider unavailable');
      throw new AuthError('AUTH_INVALID', 'token invalid');
    }
    try {
      const context = parseUserContext({
        userId: payload.sub,
        workspaceId: payload.workspace_id,
        roles: payload.roles,
      });
      // Required above, and a number: jose checked it against the maximum age.
      return { context, issuedAt: payload.iat! };
    } catch {
      throw new AuthError('AUTH_INVALID', 'token claims invalid');
    }
  };
}

/**
 * The remote key set could not be had (timeout, network error, a non-200 answer, a malformed set): the
 * token was not judged, so clients should retry rather than re-authenticate. Still a refusal.
 */
function keySetUnavailable(err: unknown): boolean {
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return true;
  // Network errors of the fetch are not jose's; jose's own fetch failures are its generic error.
  return !(err instanceof errors.JOSEError) || err.code === 'ERR_JOSE_GENERIC';
}

// Loopback: localhost, 127.0.0.0/8, ::1, and 127/8 written as IPv4-mapped IPv6.
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:7f00:0', 104, 'ipv6');

function isLoopback(hostname: string): boolean {
  if (hostname === 'localhost') return true;
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The JWKS URL, refused unless it is https (plain http only on loopback, for a local identity
 * provider): whoever can alter the key set in transit can sign any user's token.
 */
export function jwksUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error('AUTH_JWKS_URL is not a URL');
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopback(url.hostname))) return url;
  throw new Error('AUTH_JWKS_URL must be https (plain http only on loopback)');
}
