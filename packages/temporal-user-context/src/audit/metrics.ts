import type { MetricMeter } from '@temporalio/common';
import type { AuditSink } from './event.js';

/**
 * What a label may carry: a code (`USER_CONTEXT_MISSING`, `ok`) or an action's name (`activity.execute`).
 * An application's own record whose `action` or `reason` is anything else (a reason that quotes an id)
 * is counted as `other`: one series per id would grow without bound.
 */
const CODE = /^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/;

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
 * sinks, not behind a `coalescingAuditSink`, whose summaries stand for many records. The runtime's meter
 * counts nothing unless its telemetry exports metrics (`Runtime.install({ telemetryOptions: { metrics } })`,
 * called before anything else uses the runtime).
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
      counter.add(1, {
        action: CODE.test(event.action) ? event.action : 'other',
        decision: event.decision,
        reason: CODE.test(event.reason) ? event.reason : 'other',
      });
    },
  };
}
