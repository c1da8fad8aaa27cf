/** Where a context came from when it was resolved. */
export type IdentitySource =
  | 'header' // propagated in the Temporal header, verified by the worker
  | 'explicit' // passed as an activity argument and checked against the header
  | 'system' // a declared, allow-listed system principal
  | 'edge' // issued by the edge (client side)
  | 'pseudonym' // pseudonyms read from a header in workflow code, not verified (the actor policy's admissions)
  | 'none';

/** The outcome an audit record reports: the context was accepted or refused. */
export type AuditDecision = 'allow' | 'deny';

/**
 * One audit record. Fields hold ids and codes only: never a token, key or raw header. Strings that
 * came from outside are sanitised by {@link sanitizeAuditEvent} before they reach a sink.
 */
export interface AuditEvent {
  /** ISO-8601 time of the decision. */
  time: string;
  /** What was decided: `activity.execute`, `client.start`, `workflow.signal`, `db.scope`, ... */
  action: string;
  decision: AuditDecision;
  source: IdentitySource;
  /** Error code on deny, `ok` on allow. */
  reason: string;
  userId?: string;
  workspaceId?: string;
  /** Name of a system principal, when one acted. */
  principal?: string;
  /** Token id (`jti`): links records of one issued context without revealing it. */
  tokenId?: string;
  namespace?: string;
  workflowId?: string;
  runId?: string;
  workflowType?: string;
  activityType?: string;
  activityId?: string;
  attempt?: number;
  /** Free detail, e.g. the signal or update name. Sanitised. */
  detail?: string;
}

/** Receives audit events. Must not throw; a sink that can fail should catch and report on its own. */
export interface AuditSink {
  /** Records one sanitised event. A returned promise is not awaited, only watched for failure. */
  emit(event: AuditEvent): void | Promise<void>;
}
