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
 * The reason of the `allow` record of an update the actor policy admitted and the workflow's own
 * validator rejected: written by the plugin's workflow sink, read by the coalescing sink (such records
 * leave nothing in history, and are coalesced like refusals).
 */
export const REJECTED_BY_VALIDATOR = 'REJECTED_BY_VALIDATOR';

/**
 * One audit record. Fields hold ids and codes only: never a token, key or raw header. Strings that
 * came from outside are sanitised by {@link sanitizeAuditEvent} before they reach a sink.
 */
export interface AuditEvent {
  /** ISO-8601 time of the decision. */
  time: string;
  /** What was decided: `activity.execute`, `client.start`, `workflow.signal`, `db.scope`, ... */
  action: string;
  /** `allow` or `deny`. */
  decision: AuditDecision;
  /** Where the identity the decision is about came from (see {@link IdentitySource}). */
  source: IdentitySource;
  /** Error code on deny, `ok` on allow (`ERROR` for a failure that is no verdict). */
  reason: string;
  /** The user the decision is about, when known and verified (or issued, at the edge). */
  userId?: string;
  /** That user's workspace. */
  workspaceId?: string;
  /** Name of a system principal, when one acted. */
  principal?: string;
  /** Token id (`jti`): links records of one issued context without revealing it. */
  tokenId?: string;
  /** Temporal namespace of the call, workflow or activity. */
  namespace?: string;
  /** Workflow id the decision concerns (the started, signalled or running workflow). */
  workflowId?: string;
  /** Run id, when the decision concerns one run. */
  runId?: string;
  /** Workflow type, inside a workflow or activity. */
  workflowType?: string;
  /** Activity type, in an activity's decisions. */
  activityType?: string;
  /** Activity id, in an activity's decisions. */
  activityId?: string;
  /** Activity attempt (1 for the first), in an activity's decisions. */
  attempt?: number;
  /** Free detail, e.g. the signal or update name. Sanitised. */
  detail?: string;
}

/** Receives audit events. Must not throw; a sink that can fail should catch and report on its own. */
export interface AuditSink {
  /** Records one sanitised event. A returned promise is not awaited, only watched for failure. */
  emit(event: AuditEvent): void | Promise<void>;
}
