export type { AuditEvent, AuditSink, AuditDecision, IdentitySource } from './event.js';
export { sanitizeAuditEvent, sanitizeField } from './sanitize.js';
export { pinoAuditSink, memoryAuditSink, defaultAuditor, Auditor } from './sinks.js';
export {
  coalescingAuditSink,
  HANDLER_CALL_ACTIONS,
  type CoalescingAuditSink,
  type CoalescingAuditSinkOptions,
  type KeptField,
} from './coalesce.js';
