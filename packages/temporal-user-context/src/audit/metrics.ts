import type { MetricMeter } from '@temporalio/common';
import type { AuditSink } from './event.js';

/** Options of {@link metricsAuditSink}. */
export interface MetricsAuditSinkOptions {
  /** The counter's name (default `temporal_user_context_decisions`). */
  name?: string;
}

/**
 * A sink that counts decisions on a Temporal metric meter, by `action`, `decision` and `reason` (never
 * by user, workspace or id: those are the audit trail's, and would make a series per user). Give it
 * the runtime's meter (`Runtime.instance().metricMeter` in a worker process), and the counter goes out
 * wherever the runtime's telemetry sends metrics (Prometheus, OpenTelemetry), beside the SDK's own:
 * an alert on `decision="deny"` by `reason` sees refusals as they happen. List it beside the trail's
 * sinks, not behind a `coalescingAuditSink`, whose summaries stand for many records.
 *
 * @example
 * new UserContextPlugin({ keys, audit: [pinoAuditSink(), metricsAuditSink(Runtime.instance().metricMeter)] })
 */
export function metricsAuditSink(meter: MetricMeter, options: MetricsAuditSinkOptions = {}): AuditSink {
  const counter = meter.createCounter(
    options.name ?? 'temporal_user_context_decisions',
    '1',
    'Decisions of temporal-user-context: each allowed or refused call, scope and verification',
  );
  return {
    emit(event) {
      counter.add(1, { action: event.action, decision: event.decision, reason: event.reason });
    },
  };
}
