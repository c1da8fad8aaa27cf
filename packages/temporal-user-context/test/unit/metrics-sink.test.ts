// metricsAuditSink's labels, against a meter that records what it is given (the mapping is pure; the
// runtime's own meter is exercised in integration/metrics.test.ts).
import type { MetricMeter, MetricTags } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { metricsAuditSink } from '../../src/audit/metrics.js';

function recordingMeter() {
  const added: MetricTags[] = [];
  const meter = {
    createCounter: () => ({ add: (_value: number, tags?: MetricTags) => void added.push(tags ?? {}) }),
  } as unknown as MetricMeter;
  return { meter, added };
}

const base = { time: new Date(0).toISOString(), decision: 'deny' as const, source: 'header' as const };

describe('metricsAuditSink', () => {
  it('labels by action, decision and reason; never by user, workspace or id', () => {
    const { meter, added } = recordingMeter();
    metricsAuditSink(meter).emit({
      ...base,
      action: 'activity.execute',
      reason: 'USER_CONTEXT_MISSING',
      userId: 'alice',
      workspaceId: 'ws-1',
      workflowId: 'wf-1',
    });
    expect(added).toEqual([{ action: 'activity.execute', decision: 'deny', reason: 'USER_CONTEXT_MISSING' }]);
  });

  // Found by review: an application's record with a reason that quotes an id made a series per id.
  it('counts an action or a reason that is not a code as `other`', () => {
    const { meter, added } = recordingMeter();
    const sink = metricsAuditSink(meter);
    sink.emit({ ...base, action: 'app.export', reason: 'missing user alice@example.com' });
    sink.emit({ ...base, action: `app ${'x'.repeat(100)}`, reason: 'ok' });
    expect(added).toEqual([
      { action: 'app.export', decision: 'deny', reason: 'other' },
      { action: 'other', decision: 'deny', reason: 'ok' },
    ]);
  });
});
