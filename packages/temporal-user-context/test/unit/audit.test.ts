// Case 21 (log injection) and the audit fan-out.
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Auditor, memoryAuditSink, pinoAuditSink, sanitizeField } from 'temporal-user-context';

describe('audit', () => {
  it('case 21: CR/LF, zero-width and bidi characters never reach a log line', () => {
    expect(sanitizeField('wf\r\n{"decision":"allow"}')).toBe('wf\uFFFD\uFFFD{"decision":"allow"}');
    expect(sanitizeField('a\u200bb\u202ec')).toBe('a\uFFFDb\uFFFDc');
    expect(sanitizeField('x'.repeat(1000)).length).toBeLessThanOrEqual(257);
  });

  it('stamps the time, keeps a given one, drops undefined fields and sanitises every string', () => {
    const memory = memoryAuditSink();
    const auditor = new Auditor([memory]);
    auditor.emit({
      action: 'activity.execute',
      decision: 'allow',
      source: 'header',
      reason: 'ok',
      userId: undefined,
      detail: 'a\r\nb',
      attempt: 2,
    });
    auditor.emit({
      time: '2026-11-28T00:00:00.000Z\n',
      action: 'x',
      decision: 'deny',
      source: 'none',
      reason: 'r',
    });
    const [first, second] = memory.events;
    expect(Date.parse(first!.time)).not.toBeNaN();
    expect('userId' in first!).toBe(false);
    expect(first!.detail).toBe('a\uFFFD\uFFFDb');
    expect(first!.attempt).toBe(2);
    expect(second!.time).toBe('2026-11-28T00:00:00.000Z\uFFFD');
  });

  it('writes one JSON line per event through pino, with injected text kept inside its field', () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    const auditor = new Auditor([pinoAuditSink(pino({}, stream))]);
    auditor.emit({
      action: 'activity.execute',
      decision: 'deny',
      source: 'header',
      reason: 'USER_CONTEXT_MISSING',
      workflowId: 'wf\n{"level":30,"forged":true}',
    });
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!);
    expect(record.audit.workflowId).toContain('forged');
    expect(record.forged).toBeUndefined();
    expect(record.level).toBe(40); // warn for a deny
  });

  it('a failing sink neither throws to the caller nor starves the other sinks', () => {
    const memory = memoryAuditSink();
    const auditor = new Auditor([
      {
        emit: () => {
          throw new Error('disk full');
        },
      },
      { emit: () => Promise.reject(new Error('db down')) },
      memory,
    ]);
    expect(() =>
      auditor.emit({ action: 'x', decision: 'allow', source: 'edge', reason: 'ok' }),
    ).not.toThrow();
    expect(memory.events).toHaveLength(1);
    expect(memory.events[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT/);
  });
});
