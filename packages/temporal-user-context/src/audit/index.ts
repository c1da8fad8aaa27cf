export type { AuditEvent, AuditSink, AuditDecision, IdentitySource } from './event.js';
export { sanitizeAuditEvent, sanitizeField } from './sanitize.js';
export {
  pinoAuditSink,
  stdoutLogger,
  memoryAuditSink,
  defaultAuditor,
  Auditor,
  EXIT_FLUSH_BUDGET_MS,
  STDOUT_MAX_BUFFERED_BYTES,
} from './sinks.js';
export { STDERR_MAX_BUFFERED_BYTES } from './stderr.js';
export { metricsAuditSink, type MetricsAuditSinkOptions } from './metrics.js';
export {
  coalescingAuditSink,
  isHistorylessCall,
  type CoalescingAuditSink,
  type CoalescingAuditSinkOptions,
  type KeptField,
} from './coalesce.js';
