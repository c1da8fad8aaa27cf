import {
  ErrorCodes,
  coalescingAuditSink,
  type AuditSink,
  type CoalescingAuditSink,
} from 'temporal-user-context';

/**
 * The API's sink for the audit table. Two kinds of refusal anyone holding little can cause at any
 * rate reach the table once per kind and minute, the rest of the minute as one row with their count:
 * refusals that name nobody (a request without a valid token) and, per user and workspace, the
 * refused scopes of someone who is no member (a removed member's token stays usable until it expires,
 * `AUTH_MAX_TOKEN_AGE_SECONDS`) and the requests refused before any membership check (malformed, or
 * naming another workspace than the token's). One row each would let a flood fill the table, and the sink's backlog
 * where the records of real decisions wait. Every other record is written as it is; the log (the pino
 * sink beside this one) keeps every record. At shutdown, `close()` it: both layers write what they hold.
 */
export function edgeDatabaseAudit(
  db: AuditSink & { flush?: (options?: { timeoutMs?: number }) => Promise<void> },
): CoalescingAuditSink {
  return coalescingAuditSink(coalescingAuditSink(db), {
    keep: ['userId', 'workspaceId'],
    match: (event) =>
      event.decision === 'deny' &&
      (event.reason === ErrorCodes.MEMBERSHIP_REVOKED ||
        (event.action === 'api.request' && REFUSED_BEFORE_MEMBERSHIP.has(event.reason ?? ''))),
  });
}

/**
 * Requests refused before the route checks the membership (only the token is checked then): by the
 * route's schema or body parser, or for a path naming another workspace than the token's
 * (`WORKSPACE_MISMATCH`). A token of the identity provider naming a workspace its holder is no member
 * of, or a removed member's, reaches them, at any rate: found by review, a removed member sending
 * requests to made-up workspaces wrote a row each into the trail of the workspace their token names.
 * The first of a minute keeps its detail (which workspace, which path); the log keeps every one.
 */
const REFUSED_BEFORE_MEMBERSHIP: ReadonlySet<string> = new Set([
  'VALIDATION_FAILED',
  'BAD_REQUEST',
  'WORKSPACE_MISMATCH',
]);
