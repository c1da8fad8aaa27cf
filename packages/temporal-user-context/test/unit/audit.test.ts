// Case 21 (log injection) and the audit fan-out.
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Auditor, memoryAuditSink, pinoAuditSink, sanitizeField } from 'temporal-user-context';
import { auditFailure } from '../../src/worker/decision.js';

describe('audit', () => {
  it('case 21: CR/LF, zero-width and bidi characters never reach a log line', () => {
    expect(sanitizeField('wf\r\n{"decision":"allow"}')).toBe('wf\uFFFD\uFFFD{"decision":"allow"}');
    expect(sanitizeField('a\u200bb\u202ec')).toBe('a\uFFFDb\uFFFDc');
    expect(sanitizeField('x'.repeat(1000)).length).toBeLessThanOrEqual(257);
  });

  it('case 21: U+2028 and U+2029 (line and paragraph separators) are neutralised like CR/LF', () => {
    expect(sanitizeField('wf\u2028{"decision":"allow"}\u2029x')).toBe('wf\uFFFD{"decision":"allow"}\uFFFDx');
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

  describe('sink failures that cannot be printed', () => {
    afterEach(() => {
      vi.restoreAllMocks();
    });

    const event = { action: 'x', decision: 'allow', source: 'edge', reason: 'ok' } as const;
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    const badMessage = new Error('x');
    Object.defineProperty(badMessage, 'message', {
      get() {
        throw new Error('getter');
      },
    });
    const hostile: [string, unknown][] = [
      ['a null-prototype object', Object.create(null)],
      [
        'an object whose toPrimitive throws',
        {
          [Symbol.toPrimitive]: () => {
            throw new Error('no');
          },
        },
      ],
      ['a revoked proxy', revoked.proxy],
      ['an Error whose message getter throws', badMessage],
      ['a symbol', Symbol('s')],
      ['a string with a forged line', 'down\n{"decision":"allow"}'],
    ];

    function captureStderr(): string[] {
      const lines: string[] = [];
      vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
        lines.push(String(chunk));
        return true;
      });
      return lines;
    }

    it.each(hostile)('thrown synchronously: %s', (_name, value) => {
      const lines = captureStderr();
      const memory = memoryAuditSink();
      const auditor = new Auditor([
        {
          emit: () => {
            throw value;
          },
        },
        memory,
      ]);
      expect(() => auditor.emit(event)).not.toThrow();
      expect(memory.events).toHaveLength(1);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^temporal-user-context: audit sink failed: [^\n]*\n$/);
    });

    it.each(hostile)('rejected: %s, with no unhandled rejection', async (_name, value) => {
      const lines = captureStderr();
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on('unhandledRejection', onUnhandled);
      try {
        const memory = memoryAuditSink();
        const auditor = new Auditor([
          { emit: () => Promise.reject(value) },
          // A thenable whose `then` throws, as a non-native promise library might.
          {
            emit: () =>
              ({
                then() {
                  throw value;
                },
              }) as unknown as Promise<void>,
          },
          memory,
        ]);
        expect(() => auditor.emit(event)).not.toThrow();
        expect(memory.events).toHaveLength(1);
        // Unhandled rejections are reported after the microtask queue drains; give it a few turns.
        for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
        expect(unhandled).toEqual([]);
        expect(lines).toHaveLength(2);
        for (const line of lines)
          expect(line).toMatch(/^temporal-user-context: audit sink failed: [^\n]*\n$/);
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
    });

    it('a hook failure that cannot be printed is audited as ERROR and rethrown as it was', () => {
      const memory = memoryAuditSink();
      const thrown: unknown = Object.create(null);
      let caught: unknown;
      try {
        auditFailure(new Auditor([memory]), { workflowId: 'wf' }, 'activity.execute', thrown);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBe(thrown);
      expect(memory.events).toEqual([
        expect.objectContaining({ decision: 'deny', reason: 'ERROR', detail: '[object Object]' }),
      ]);
    });

    it('a failing stderr does not make the report throw either', () => {
      vi.spyOn(process.stderr, 'write').mockImplementation(() => {
        throw new Error('EPIPE');
      });
      const auditor = new Auditor([
        {
          emit: () => {
            throw new Error('disk full');
          },
        },
      ]);
      expect(() => auditor.emit(event)).not.toThrow();
    });
  });
});
