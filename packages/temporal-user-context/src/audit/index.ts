export type { AuditEvent, AuditSink, AuditDecision, IdentitySource } from './event.js';
export { sanitizeAuditEvent, sanitizeField } from './sanitize.js';
export { pinoAuditSink, memoryAuditSink, defaultAuditor, Auditor } from './sinks.js';
export {
  coalescingAuditSink,
  isHistorylessCall,
  type CoalescingAuditSink,
  type CoalescingAuditSinkOptions,
  type KeptField,
} from './coalesce.js';
