import {
  coalescingAuditSink,
  isHistorylessCall,
  type AuditSink,
  type CoalescingAuditSink,
} from 'temporal-user-context';

/**
 * The worker's sink for the audit table. Workflow code records each query it judges, and each update
 * it refuses, filed under the run's workspace; whoever may query or update workflows in the namespace
 * can send those at any rate with no key, and they leave nothing in history (`isHistorylessCall`).
 * Found by review: a flood of queries wrote a row each into the workspace's trail and filled the
 * sink's backlog, whose records of real decisions were then dropped. Repeats of a call (same run,
 * action, decision, reason and detail: who, which handler) reach the table once per minute, the rest
 * of the minute as one row with their count; distinct calls keep their own rows up to 100 kinds a
 * minute, then share a window per workspace (up to 100 workspaces), then one window. Signals and
 * accepted updates, which are in history at their sender's cost, stay one row each. The log (the pino
 * sink beside this one) keeps every record. At shutdown, `close()` it: it writes what it holds, then
 * flushes `db`.
 */
export function workerDatabaseAudit(
  db: AuditSink & { flush?: (options?: { timeoutMs?: number }) => Promise<void> },
): CoalescingAuditSink {
  return coalescingAuditSink(db, {
    match: isHistorylessCall,
    keep: ['workspaceId', 'workflowId', 'runId', 'workflowType'],
    byDetail: true,
  });
}
