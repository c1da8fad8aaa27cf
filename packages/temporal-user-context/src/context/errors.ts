/**
 * Every refusal in this library is a {@link UserContextError} with a stable {@link UserContextErrorCode}.
 * Codes are part of the public API: match on `code`, never on `message`.
 */
export const ErrorCodes = {
  /** No context where one is required (no header, nothing in scope). */
  MISSING: 'USER_CONTEXT_MISSING',
  /** The context claims break the schema (id format, roles, Unicode rules). */
  INVALID: 'USER_CONTEXT_INVALID',
  /** The serialised context or header is over the size cap. */
  TOO_LARGE: 'USER_CONTEXT_TOO_LARGE',
  /** The header is not a well-formed v1 header (bad JSON, wrong shape, unknown version). */
  HEADER_MALFORMED: 'USER_CONTEXT_HEADER_MALFORMED',
  /** The token failed decryption or signature verification, or uses a forbidden algorithm. */
  TOKEN_INVALID: 'USER_CONTEXT_TOKEN_INVALID',
  /** The token names a key id that the key ring does not hold (or a hostile one). */
  KEY_UNKNOWN: 'USER_CONTEXT_KEY_UNKNOWN',
  /** An actor token's window has passed, or the token was issued in the future. */
  TOKEN_EXPIRED: 'USER_CONTEXT_TOKEN_EXPIRED',
  /** The token was issued for another namespace. */
  AUDIENCE_MISMATCH: 'USER_CONTEXT_AUDIENCE_MISMATCH',
  /**
   * The token was issued for another workflow lineage or an earlier closed run, the lineage started
   * outside the token's start window, or the server does not confirm the run or Nexus caller it claims
   * to be.
   */
  LINEAGE_MISMATCH: 'USER_CONTEXT_LINEAGE_MISMATCH',
  /** An explicit context argument disagrees with the verified, propagated one. */
  EXPLICIT_MISMATCH: 'USER_CONTEXT_EXPLICIT_MISMATCH',
  /** A signal, update or query from an actor the workflow's policy refuses. */
  ACTOR_FORBIDDEN: 'USER_CONTEXT_ACTOR_FORBIDDEN',
  /** The workflow's actor policy threw instead of deciding: the signal, update or query is refused. */
  POLICY_FAILED: 'USER_CONTEXT_POLICY_FAILED',
  /** A system principal where the activity did not declare it or the worker did not allow-list it. */
  SYSTEM_PRINCIPAL_FORBIDDEN: 'USER_CONTEXT_SYSTEM_PRINCIPAL_FORBIDDEN',
  /** The stored membership no longer grants access (removed, or no role left after intersection). */
  MEMBERSHIP_REVOKED: 'USER_CONTEXT_MEMBERSHIP_REVOKED',
  /** The live (effective) roles lack the role the operation requires, e.g. `admin` for the audit trail. */
  ROLE_MISSING: 'USER_CONTEXT_ROLE_MISSING',
  /** The token was revoked by the application's revocation hook. */
  REVOKED: 'USER_CONTEXT_REVOKED',
  /** A payload arrived unencrypted where the codec requires encryption. */
  PLAINTEXT_PAYLOAD: 'USER_CONTEXT_PLAINTEXT_PAYLOAD',
  /** Ciphertext failed authentication (tampered, or moved from another workflow or namespace). */
  PAYLOAD_TAMPERED: 'USER_CONTEXT_PAYLOAD_TAMPERED',
  /**
   * The library or the database is configured in a way that would not isolate users, or the server
   * refused the worker a lookup it needs (retryable: see {@link UserContextError.retryable}).
   */
  MISCONFIGURED: 'USER_CONTEXT_MISCONFIGURED',
} as const;

/** One of the stable {@link ErrorCodes}: match on it, never on a message. */
export type UserContextErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Codes a retry could cure (none: every refusal is a verdict, and a failure that is no verdict is not a
 * UserContextError). Every other code fails the activity with a non-retryable ApplicationFailure, unless
 * the error itself says it is retryable (a worker refused a lookup for want of permission: granting it
 * cures the next attempt).
 */
const RETRYABLE: ReadonlySet<UserContextErrorCode> = new Set<UserContextErrorCode>([]);

/** The one error type the library throws on refusal. */
export class UserContextError extends Error {
  override readonly name = 'UserContextError';
  readonly code: UserContextErrorCode;
  /** Short machine-readable reason for the audit record (never contains secrets or raw input). */
  readonly reason: string;

  private readonly retry: boolean;

  /**
   * @param options.retryable the refusal is the worker's configuration, not a verdict on the context,
   *   and an operator can mend it while the operation waits (default: whatever the code says).
   */
  constructor(
    code: UserContextErrorCode,
    reason: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(`${code}: ${reason}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = reason;
    this.retry = options?.retryable ?? RETRYABLE.has(code);
  }

  /**
   * Whether retrying the same operation could succeed. False for every verdict of this library; true
   * only for a worker's lookup the server refused for want of permission (`USER_CONTEXT_MISCONFIGURED`).
   */
  get retryable(): boolean {
    return this.retry;
  }
}

/** True when `err` is a {@link UserContextError}, optionally with the given code. */
export function isUserContextError(err: unknown, code?: UserContextErrorCode): err is UserContextError {
  return err instanceof UserContextError && (code === undefined || err.code === code);
}
