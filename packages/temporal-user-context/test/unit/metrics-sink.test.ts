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

  // Found by review: ids shaped like words passed the first pattern (`alice`, `ws-acme`, an action
  // naming a tool's account).
  it('counts reasons and actions shaped like ids as `other`, codes and actions as themselves', () => {
    const { meter, added } = recordingMeter();
    const sink = metricsAuditSink(meter);
    const labels = (action: string, reason: string) => {
      sink.emit({ ...base, action, reason });
      const { action: a, reason: r } = added.pop()!;
      return [a, r];
    };
    expect(labels('app.export', 'alice')).toEqual(['app.export', 'other']);
    expect(labels('app.export', 'ws-acme')).toEqual(['app.export', 'other']);
    expect(labels('app.export', 'Alice')).toEqual(['app.export', 'other']);
    expect(labels('agent.tool:auth0:5f7c9a', 'ERROR')).toEqual(['other', 'ERROR']);
    expect(labels('run.5f7c9a', 'ok')).toEqual(['other', 'ok']);
    expect(labels('alice', 'ok')).toEqual(['other', 'ok']);
    expect(labels('ws-acme.read', 'ok')).toEqual(['other', 'ok']);
    // What the library and applications record.
    expect(labels('client.signalWithStart', 'USER_CONTEXT_MISSING')).toEqual([
      'client.signalWithStart',
      'USER_CONTEXT_MISSING',
    ]);
    expect(labels('run.claim', 'RUN_NOT_FOUND')).toEqual(['run.claim', 'RUN_NOT_FOUND']);
    expect(labels('workflow.verifyActor', 'ok')).toEqual(['workflow.verifyActor', 'ok']);
    expect(labels('api.request', 'COALESCED')).toEqual(['api.request', 'COALESCED']);
  });
});
