import { safeReason } from './safe-reason.js';

/**
 * Every refusal in this library is a {@link UserContextError} with a stable {@link UserContextErrorCode}.
 * Codes are part of the public API: match on `code`, never on `message`.
 */
export const ErrorCodes = {
  /**
   * No context where one is required (no header, nothing in scope), or work an activity or Nexus handler
   * left running after it settled.
   */
  MISSING: 'USER_CONTEXT_MISSING',
  /**
   * The context claims break the schema (id format, roles, Unicode rules), or an input has the wrong shape:
   * a system principal not made by `systemPrincipal()`, payload metadata that is not bytes, a Nexus
   * operation binding over its caps.
   */
  INVALID: 'USER_CONTEXT_INVALID',
  /**
   * The serialised context or header is over the size cap; or a token over 8 192 characters, a schedule
   * whose runs' header would pass the cap, a payload the codec cannot frame, a sealed Nexus operation token
   * over the server's limit.
   */
  TOO_LARGE: 'USER_CONTEXT_TOO_LARGE',
  /** The header is not a well-formed v1 header (bad JSON, a repeated key, wrong shape, unknown version). */
  HEADER_MALFORMED: 'USER_CONTEXT_HEADER_MALFORMED',
  /**
   * The token failed decryption or signature verification, uses a forbidden algorithm, is not a string,
   * or its claims (or a sealed operation token's content) repeat a key.
   */
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
   * to be; at the edge, a schedule update that changes what its token binds.
   */
  LINEAGE_MISMATCH: 'USER_CONTEXT_LINEAGE_MISMATCH',
  /**
   * An explicit context argument disagrees with the verified, propagated one, or a database or edge scope
   * inside an activity or Nexus handler names someone other than its verified originator or actor.
   */
  EXPLICIT_MISMATCH: 'USER_CONTEXT_EXPLICIT_MISMATCH',
  /** A signal, update or query from an actor the workflow's policy refuses. */
  ACTOR_FORBIDDEN: 'USER_CONTEXT_ACTOR_FORBIDDEN',
  /**
   * The workflow's actor policy threw, or answered something other than `true` or `false` (a promise),
   * instead of deciding: the signal, update or query is refused.
   */
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
   * The library or the database is configured in a way that would not isolate users, or an API is used in a
   * way it cannot serve (bad input to a helper, a query after its transaction ended).
   */
  MISCONFIGURED: 'USER_CONTEXT_MISCONFIGURED',
} as const;

/** One of the stable {@link ErrorCodes}: match on it, never on a message. */
export type UserContextErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Codes a retry could cure (none today: every refusal is a verdict, and a failure that is no verdict is
 * not a UserContextError). Every other code fails the activity with a non-retryable ApplicationFailure.
 */
const RETRYABLE: ReadonlySet<UserContextErrorCode> = new Set<UserContextErrorCode>([]);

/** The one error type the library throws on refusal. */
export class UserContextError extends Error {
  override readonly name = 'UserContextError';
  readonly code: UserContextErrorCode;
  /**
   * Short reason for the audit record: never a secret; what it quotes of the input (an id) is cleaned of
   * control, formatting and line-break characters and capped, as is the message that repeats it.
   */
  readonly reason: string;

  constructor(code: UserContextErrorCode, reason: string, options?: { cause?: unknown }) {
    const safe = safeReason(reason);
    super(`${code}: ${safe}`, options);
    this.code = code;
    this.reason = safe;
  }

  /** Whether retrying the same operation could succeed. False for every refusal of this library. */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }
}

/** True when `err` is a {@link UserContextError}, optionally with the given code. */
export function isUserContextError(err: unknown, code?: UserContextErrorCode): err is UserContextError {
  return err instanceof UserContextError && (code === undefined || err.code === code);
}
