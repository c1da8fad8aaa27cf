// coalescingAuditSink: an anonymous flood costs the wrapped sink one record per kind and window.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCodes,
  coalescingAuditSink,
  memoryAuditSink,
  type AuditEvent,
  type AuditSink,
} from 'temporal-user-context';

const anonymous = (reason: string, detail: string): AuditEvent => ({
  time: new Date().toISOString(),
  action: 'api.request',
  decision: 'deny',
  source: 'edge',
  reason,
  detail,
  namespace: 'default',
});

describe('coalescingAuditSink', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('passes the first refusal of a kind at once, counts the rest, and writes one summary per window', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 10_000 });
    for (let i = 0; i < 5; i++) sink.emit(anonymous('AUTH_MISSING', `GET /agents #${i}`));
    sink.emit(anonymous('AUTH_INVALID', 'GET /runs'));
    expect(inner.events.map((e) => [e.reason, e.detail])).toEqual([
      ['AUTH_MISSING', 'GET /agents #0'],
      ['AUTH_INVALID', 'GET /runs'],
    ]);
    vi.advanceTimersByTime(10_000);
    expect(inner.events).toHaveLength(3);
    expect(inner.events[2]).toMatchObject({
      action: 'api.request',
      decision: 'deny',
      source: 'edge',
      reason: 'AUTH_MISSING',
      namespace: 'default',
      detail: '4 more like it in 10 s, coalesced; first: GET /agents #0',
    });
    expect(inner.events[2]!.userId).toBeUndefined();
    // A new window: the next one goes through at once again.
    sink.emit(anonymous('AUTH_MISSING', 'GET /agents #5'));
    expect(inner.events.at(-1)!.detail).toBe('GET /agents #5');
  });

  it('passes records that name a user or a workflow, and decisions that allowed, every time', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner);
    const user = { ...anonymous('WORKSPACE_MISMATCH', 'GET /workspaces/:ws'), userId: 'mallory' };
    const allowed: AuditEvent = { ...anonymous('ok', 'x'), decision: 'allow' };
    const workflow = (i: number): AuditEvent => ({
      ...anonymous(ErrorCodes.PAYLOAD_TAMPERED, 'x'),
      action: 'codec.decode',
      workflowId: `wf-${i}`,
    });
    for (let i = 0; i < 3; i++) {
      sink.emit(user);
      sink.emit(allowed);
      sink.emit(workflow(i));
    }
    expect(inner.events).toHaveLength(9);
    expect(inner.events.filter((e) => e.action === 'codec.decode').map((e) => e.workflowId)).toEqual([
      'wf-0',
      'wf-1',
      'wf-2',
    ]);
  });

  it('a summary the wrapped sink fails to write is reported, never thrown or left unhandled', async () => {
    vi.useRealTimers(); // the rejection must settle on the real event loop
    const written = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      const failing = (mode: 'throw' | 'reject') => {
        let calls = 0;
        return coalescingAuditSink(
          {
            emit() {
              if (calls++ % 2 === 0) return; // the first record of a window passes
              if (mode === 'throw') throw new Error('sink down');
              return Promise.reject(new Error('sink down'));
            },
          },
          { windowMs: 5 },
        );
      };
      for (const mode of ['throw', 'reject'] as const) {
        const sink = failing(mode);
        sink.emit(anonymous('AUTH_MISSING', 'a'));
        sink.emit(anonymous('AUTH_MISSING', 'b'));
      }
      await vi.waitFor(() =>
        expect(
          written.mock.calls.filter(([line]) => String(line).includes('audit summary not written')),
        ).toHaveLength(2),
      );
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
      written.mockRestore();
    }
  });

  it('counts kinds past maxKinds in one shared window, so that varying the reason does not evade it', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 1000, maxKinds: 1 });
    sink.emit(anonymous('A', 'first of A'));
    for (let i = 0; i < 50; i++) sink.emit(anonymous(`R${i}`, `kind ${i}`));
    expect(inner.events.map((e) => e.reason)).toEqual(['A', 'R0']);
    vi.advanceTimersByTime(1000);
    expect(inner.events.map((e) => e.detail)).toContain(
      '49 more like it in 1 s, coalesced (other kinds too); first: kind 0',
    );
  });

  it('flush() writes the open windows now and flushes the wrapped sink', async () => {
    const inner = memoryAuditSink();
    const flushed = vi.fn(async () => undefined);
    const sink = coalescingAuditSink(Object.assign(inner, { flush: flushed }));
    sink.emit(anonymous('AUTH_MISSING', 'a'));
    sink.emit(anonymous('AUTH_MISSING', 'b'));
    await sink.flush();
    expect(inner.events.map((e) => e.detail)).toEqual(['a', '1 more like it in 0 s, coalesced; first: a']);
    expect(flushed).toHaveBeenCalledOnce();
    // Nothing is left to write when the window's timer would have fired.
    vi.advanceTimersByTime(120_000);
    expect(inner.events).toHaveLength(2);
  });

  it('keeps the summary a safe log line, whatever the first record held', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 1000 });
    const long = 'x'.repeat(300);
    sink.emit(anonymous('AUTH_MISSING', long));
    sink.emit(anonymous('AUTH_MISSING', long));
    vi.advanceTimersByTime(1000);
    expect(inner.events[1]!.detail!.length).toBeLessThanOrEqual(257);
  });

  it('refuses options that would turn it off or make it unbounded', () => {
    const inner: AuditSink = memoryAuditSink();
    for (const options of [
      { windowMs: Number.NaN },
      { windowMs: 0 },
      { maxKinds: 0.5 },
      { maxKinds: Infinity },
    ])
      expect(() => coalescingAuditSink(inner, options)).toThrow(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
  });
});
