import type { MetricMeter } from '@temporalio/common';
import type { AuditSink } from './event.js';

/**
 * What the labels may carry. A reason is `ok` or an upper-case code (`USER_CONTEXT_MISSING`, `ERROR`,
 * an application's `RUN_NOT_FOUND`); an action is two to four dot-joined words of letters
 * (`activity.execute`, `client.signalWithStart`, an application's `run.claim`). Anything else (an
 * application's reason or action that quotes a user, a workspace or an id) is counted as `other`: ids
 * must not reach metrics (a series per id grows without bound, and it would publish them wherever the
 * metrics go). Found by review: the first pattern let `alice`, `ws-acme` and `agent.tool:auth0:5f7c9a`
 * through as labels.
 */
const REASON = /^(?:ok|[A-Z][A-Z0-9_]{0,63})$/;
const ACTION = /^[a-z][A-Za-z_]{0,31}(?:\.[a-z][A-Za-z_]{0,31}){1,3}$/;

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
        action: ACTION.test(event.action) ? event.action : 'other',
        decision: event.decision,
        reason: REASON.test(event.reason) ? event.reason : 'other',
      });
    },
  };
}
