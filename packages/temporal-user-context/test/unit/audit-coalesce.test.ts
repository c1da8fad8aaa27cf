// coalescingAuditSink: an anonymous flood costs the wrapped sink one record per kind and window.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCodes,
  isHistorylessCall,
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

  it('counts apart records of another namespace or source; the summary names its own', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 1000 });
    const kinds: Partial<AuditEvent>[] = [
      { namespace: 'ns-a', source: 'none' },
      { namespace: 'ns-b', source: 'none' },
      { namespace: 'ns-a', source: 'edge' },
      { namespace: undefined, source: 'none' },
    ];
    for (let round = 0; round < 3; round++)
      for (const kind of kinds)
        sink.emit({ ...anonymous('X', `round ${round}`), action: 'codec.decode', ...kind });
    expect(inner.events.map((e) => [e.namespace, e.source, e.detail])).toEqual([
      ['ns-a', 'none', 'round 0'],
      ['ns-b', 'none', 'round 0'],
      ['ns-a', 'edge', 'round 0'],
      [undefined, 'none', 'round 0'],
    ]);
    vi.advanceTimersByTime(1000);
    expect(inner.events.slice(4).map((e) => [e.namespace, e.source, e.detail])).toEqual(
      kinds.map((kind) => [kind.namespace, kind.source, '2 more like it in 1 s, coalesced; first: round 0']),
    );
    expect('namespace' in inner.events[7]!).toBe(false);
  });

  it('never coalesces a record that names someone or something, whatever match says', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { match: () => true });
    const naming: Partial<AuditEvent>[] = [
      { tokenId: 'jti-1' },
      { principal: 'nightly' },
      { runId: 'run-1' },
      { activityId: 'act-1' },
      { workflowId: 'wf-1' },
      { userId: 'mallory' },
      { workspaceId: 'ws-victim' },
      { workflowType: 'Agent' },
      { activityType: 'callModel' },
      { attempt: 3 },
    ];
    sink.emit(anonymous('X', 'anonymous'));
    for (let i = 0; i < 2; i++)
      for (const fields of naming) sink.emit({ ...anonymous('X', 'named'), ...fields });
    expect(inner.events).toHaveLength(1 + 2 * naming.length);
    expect(inner.events.slice(1)).toEqual(
      [...naming, ...naming].map((fields) => expect.objectContaining(fields)),
    );
  });

  it('with keep, coalesces records that name only those fields, per value, and the summary names them', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, {
      windowMs: 10_000,
      maxKinds: 2,
      keep: ['userId', 'workspaceId'],
      match: (e) => e.reason === ErrorCodes.MEMBERSHIP_REVOKED,
    });
    const revoked = (userId: string, workspaceId = 'ws-a'): AuditEvent => ({
      ...anonymous(ErrorCodes.MEMBERSHIP_REVOKED, ''),
      action: 'db.scope',
      userId,
      workspaceId,
    });
    for (let i = 0; i < 4; i++) sink.emit(revoked('mallory'));
    sink.emit(revoked('trudy'));
    // Past maxKinds, records share a window of their workspace, which the summary names (not who).
    sink.emit(revoked('eve'));
    sink.emit(revoked('eve'));
    sink.emit(revoked('oscar'));
    // Another refusal of the same user, or one that names a workflow, is not matched or not kept.
    sink.emit({ ...revoked('mallory'), reason: 'WORKSPACE_MISMATCH' });
    sink.emit({ ...revoked('mallory'), workflowId: 'wf-1' });
    sink.emit({ ...revoked('mallory'), workflowId: 'wf-1' });
    expect(inner.events.map((e) => [e.userId, e.reason, e.workflowId ?? null])).toEqual([
      ['mallory', ErrorCodes.MEMBERSHIP_REVOKED, null],
      ['trudy', ErrorCodes.MEMBERSHIP_REVOKED, null],
      ['eve', ErrorCodes.MEMBERSHIP_REVOKED, null],
      ['mallory', 'WORKSPACE_MISMATCH', null],
      ['mallory', ErrorCodes.MEMBERSHIP_REVOKED, 'wf-1'],
      ['mallory', ErrorCodes.MEMBERSHIP_REVOKED, 'wf-1'],
    ]);
    vi.advanceTimersByTime(10_000);
    // Mallory's three more, naming her and the workspace (trudy had none more); the workspace's
    // shared window: eve's second and oscar's, naming the workspace only.
    expect(inner.events.slice(6)).toEqual([
      expect.objectContaining({
        action: 'db.scope',
        reason: ErrorCodes.MEMBERSHIP_REVOKED,
        userId: 'mallory',
        workspaceId: 'ws-a',
        detail: expect.stringMatching(/^3 more like it in 10 s, coalesced/),
      }),
      expect.objectContaining({
        action: 'audit.coalesced',
        reason: 'COALESCED',
        workspaceId: 'ws-a',
        detail: expect.stringMatching(/^2 more of kinds past maxKinds in 10 s, coalesced; first: db.scope/),
      }),
    ]);
    expect(inner.events[7]!.userId).toBeUndefined();
  });

  it('takes queries and refused updates as historyless; signals and accepted updates are in history', () => {
    const record = (action: string, decision: 'allow' | 'deny'): AuditEvent => ({
      ...anonymous('x', 'x'),
      action,
      decision,
    });
    expect(isHistorylessCall(record('workflow.query', 'allow'))).toBe(true);
    expect(isHistorylessCall(record('workflow.query', 'deny'))).toBe(true);
    expect(isHistorylessCall(record('workflow.update', 'deny'))).toBe(true);
    expect(isHistorylessCall(record('workflow.update', 'allow'))).toBe(false);
    expect(
      isHistorylessCall({ ...record('workflow.update', 'allow'), reason: 'REJECTED_BY_VALIDATOR' }),
    ).toBe(true);
    expect(isHistorylessCall(record('workflow.signal', 'deny'))).toBe(false);
    expect(isHistorylessCall(record('workflow.execute', 'deny'))).toBe(false);
  });

  it('past maxKinds, records naming a run but no workspace, or a workspace past the cap, share one window', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, {
      windowMs: 10_000,
      maxKinds: 2,
      match: isHistorylessCall,
      keep: ['workspaceId', 'workflowId', 'runId', 'workflowType'],
      byDetail: true,
    });
    const query = (detail: string, workspaceId?: string): AuditEvent => ({
      ...anonymous(ErrorCodes.ACTOR_FORBIDDEN, detail),
      action: 'workflow.query',
      workflowId: 'scheduled-run',
      runId: 'run-1',
      ...(workspaceId === undefined ? {} : { workspaceId }),
    });
    sink.emit(query('q0'));
    sink.emit(query('q1'));
    // Found by review: a scheduled run's records name no workspace, and passed through past maxKinds.
    for (let i = 2; i < 1000; i++) sink.emit(query(`q${i}`));
    // Two workspaces' windows, then the one shared window for the third and after.
    for (const ws of ['ws-1', 'ws-2', 'ws-3', 'ws-4'])
      for (let i = 0; i < 10; i++) sink.emit(query(`w${i}`, ws));
    expect(inner.events.map((e) => e.detail)).toEqual(['q0', 'q1', 'q2', 'w0', 'w0']);
    vi.advanceTimersByTime(10_000);
    const summaries = inner.events.slice(5);
    expect(summaries.map((e) => [e.action, e.workspaceId ?? null, e.detail?.split(' in ')[0]])).toEqual(
      expect.arrayContaining([
        ['audit.coalesced', null, '1017 more of kinds past maxKinds'],
        ['audit.coalesced', 'ws-1', '9 more of kinds past maxKinds'],
        ['audit.coalesced', 'ws-2', '9 more of kinds past maxKinds'],
      ]),
    );
    expect(summaries).toHaveLength(3);
  });

  it('counts the queries workflow code judges per run and detail, then per workspace', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, {
      windowMs: 10_000,
      maxKinds: 3,
      match: isHistorylessCall,
      keep: ['workspaceId', 'workflowId', 'runId', 'workflowType'],
      byDetail: true,
    });
    const call = (detail: string, workspaceId = 'ws-victim', runId = 'run-1'): AuditEvent => ({
      ...anonymous(ErrorCodes.ACTOR_FORBIDDEN, detail),
      action: 'workflow.query',
      source: 'header',
      workspaceId,
      workflowId: 'agent-run-1',
      runId,
      workflowType: 'AgentExecutionWorkflow',
    });
    // A flood of one keyless query: one record, then a count.
    for (let i = 0; i < 50; i++) sink.emit(call('no actor; query "status"'));
    // Another sender's, and another run's, keep records of their own.
    sink.emit(call('actor sub=abc ws=def; query "status"'));
    sink.emit(call('no actor; query "status"', 'ws-victim', 'run-2'));
    // Names varied past maxKinds share the workspace's window; another workspace has its own.
    for (let i = 0; i < 20; i++) sink.emit(call(`no actor; query "q${i}"`));
    sink.emit(call('no actor; query "x"', 'ws-other'));
    sink.emit(call('no actor; query "y"', 'ws-other'));
    // A record of another action passes through every time.
    const executed = { ...call('started'), action: 'workflow.execute' };
    sink.emit(executed);
    sink.emit(executed);
    expect(inner.events.map((e) => [e.workspaceId, e.runId, e.detail])).toEqual([
      ['ws-victim', 'run-1', 'no actor; query "status"'],
      ['ws-victim', 'run-1', 'actor sub=abc ws=def; query "status"'],
      ['ws-victim', 'run-2', 'no actor; query "status"'],
      ['ws-victim', 'run-1', 'no actor; query "q0"'],
      ['ws-other', 'run-1', 'no actor; query "x"'],
      ['ws-victim', 'run-1', 'started'],
      ['ws-victim', 'run-1', 'started'],
    ]);
    vi.advanceTimersByTime(10_000);
    expect(inner.events.slice(7)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          action: 'workflow.query',
          workspaceId: 'ws-victim',
          workflowId: 'agent-run-1',
          runId: 'run-1',
          workflowType: 'AgentExecutionWorkflow',
          detail: '49 more like it in 10 s, coalesced; first: no actor; query "status"',
        }),
        expect.objectContaining({
          action: 'audit.coalesced',
          workspaceId: 'ws-victim',
          detail: expect.stringMatching(/^19 more of kinds past maxKinds/),
        }),
        expect.objectContaining({
          action: 'audit.coalesced',
          workspaceId: 'ws-other',
          detail: expect.stringMatching(/^1 more of kinds past maxKinds/),
        }),
      ]),
    );
    expect(inner.events).toHaveLength(10);
  });

  it('closing one coalescing sink over another closes both: nothing stays in a window at exit', async () => {
    const inner = memoryAuditSink();
    const anonymousOnes = coalescingAuditSink(inner);
    const members = coalescingAuditSink(anonymousOnes, { keep: ['userId'] });
    members.emit(anonymous('AUTH_MISSING', 'a'));
    members.emit(anonymous('AUTH_MISSING', 'b'));
    await members.close();
    // The inner one's window was written, and it holds no new record in a window.
    members.emit(anonymous('AUTH_MISSING', 'c'));
    members.emit(anonymous('AUTH_MISSING', 'd'));
    expect(inner.events.map((e) => e.detail)).toEqual([
      'a',
      expect.stringMatching(/^1 more like it in 0 s, coalesced; first: a/),
      'c',
      'd',
    ]);
  });

  it('close() writes every window and flushes the inner sink when it throws for one summary', async () => {
    // Found by review: the first throw ended close(), the other windows stayed on their timers.
    const written: string[] = [];
    const flushed = vi.fn(async () => undefined);
    const inner: AuditSink & { flush: () => Promise<void> } = {
      emit(event) {
        if (event.detail?.includes('first: boom')) throw new Error('boom');
        written.push(event.detail ?? '');
      },
      flush: flushed,
    };
    const sink = coalescingAuditSink(inner);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      for (const reason of ['A', 'B', 'C']) {
        sink.emit(anonymous(reason, reason === 'B' ? 'boom' : reason));
        sink.emit(anonymous(reason, 'again'));
      }
      await sink.close();
      expect(stderr).toHaveBeenCalledWith(expect.stringMatching(/audit summary not written: .*boom/));
    } finally {
      stderr.mockRestore();
    }
    expect(flushed).toHaveBeenCalledOnce();
    expect(written).toEqual([
      'A',
      'boom',
      'C',
      expect.stringMatching(/^1 more like it in 0 s, coalesced; first: A$/),
      expect.stringMatching(/^1 more like it in 0 s, coalesced; first: C$/),
    ]);
  });

  it('refuses a keep field a summary cannot carry', () => {
    expect(() => coalescingAuditSink(memoryAuditSink(), { keep: ['tokenId' as 'userId'] })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('close() writes the open windows, then lets every record through: none waits for a timer at exit', async () => {
    const inner = memoryAuditSink();
    const flushed = vi.fn(async () => undefined);
    const sink = coalescingAuditSink(Object.assign(inner, { flush: flushed }));
    sink.emit(anonymous('AUTH_MISSING', 'a'));
    sink.emit(anonymous('AUTH_MISSING', 'b'));
    await sink.close();
    expect(flushed).toHaveBeenCalledOnce();
    sink.emit(anonymous('AUTH_MISSING', 'c'));
    sink.emit(anonymous('AUTH_MISSING', 'd'));
    expect(inner.events.map((e) => e.detail)).toEqual([
      'a',
      '1 more like it in 0 s, coalesced; first: a',
      'c',
      'd',
    ]);
  });

  it('flush() leaves coalescing on: a window opened after it is written when its timer fires', async () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 1000 });
    await sink.flush();
    sink.emit(anonymous('AUTH_MISSING', 'a'));
    sink.emit(anonymous('AUTH_MISSING', 'b'));
    expect(inner.events).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(inner.events.map((e) => e.detail)).toEqual(['a', '1 more like it in 1 s, coalesced; first: a']);
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
      await vi.waitFor(
        () =>
          expect(
            written.mock.calls.filter(([line]) => String(line).includes('audit summary not written')),
          ).toHaveLength(2),
        { timeout: 10_000 },
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
    // The summary names none of the kinds it counts as its own: they differ in reason (and could in
    // action and namespace), which a query by reason or namespace must not be misled by.
    expect(inner.events.at(-1)).toEqual({
      time: expect.any(String),
      action: 'audit.coalesced',
      decision: 'deny',
      source: 'none',
      reason: 'COALESCED',
      detail: '49 more of kinds past maxKinds in 1 s, coalesced; first: api.request R0 in default: kind 0',
    });
  });

  it('keeps allows and denials past maxKinds in windows apart', () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, { windowMs: 1000, maxKinds: 1, match: () => true });
    sink.emit(anonymous('A', 'first of A'));
    for (let i = 0; i < 3; i++) sink.emit(anonymous(`R${i}`, `denied ${i}`));
    for (let i = 0; i < 4; i++) sink.emit({ ...anonymous('ok', `allowed ${i}`), decision: 'allow' });
    vi.advanceTimersByTime(1000);
    const summaries = inner.events.filter((e) => e.action === 'audit.coalesced');
    expect(summaries.map((e) => [e.decision, e.detail?.split(' in ')[0]]).sort()).toEqual([
      ['allow', '3 more of kinds past maxKinds'],
      ['deny', '2 more of kinds past maxKinds'],
    ]);
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

  // Found by mutation testing: the one shared window must name no workspace even when its first record
  // names one, and a closed workspace window must free its place under maxKinds.
  it('the shared window past the workspace cap names no workspace; closing windows frees their places', async () => {
    const inner = memoryAuditSink();
    const sink = coalescingAuditSink(inner, {
      windowMs: 10_000,
      maxKinds: 1,
      keep: ['workspaceId'],
      byDetail: true,
    });
    const named = (workspaceId: string, detail: string): AuditEvent => ({
      ...anonymous('MEMBERSHIP_REVOKED', detail),
      workspaceId,
    });
    sink.emit(named('ws-1', 'k0')); // its own kind's window
    sink.emit(named('ws-1', 'k1')); // past maxKinds: ws-1's shared window, the only one allowed
    sink.emit(named('ws-2', 'k2')); // past both caps: the one shared window, first named ws-2
    sink.emit(named('ws-3', 'k3'));
    sink.emit(named('ws-2', 'k4'));
    await sink.flush();
    const summaries = () => inner.events.filter((e) => e.action === 'audit.coalesced');
    expect(summaries().map((e) => [e.workspaceId ?? null, e.detail?.split(' in ')[0]])).toEqual([
      [null, '2 more of kinds past maxKinds'],
    ]);
    inner.clear();
    // Every window closed: ws-5 gets its own kind's window, then its own shared window.
    sink.emit(named('ws-5', 'a'));
    sink.emit(named('ws-5', 'b'));
    sink.emit(named('ws-5', 'c'));
    await sink.flush();
    expect(summaries().map((e) => [e.workspaceId ?? null, e.detail?.split(' in ')[0]])).toEqual([
      ['ws-5', '1 more of kinds past maxKinds'],
    ]);
  });

  it('refuses a maxKinds that is not a whole number', () => {
    expect(() => coalescingAuditSink(memoryAuditSink(), { maxKinds: 1.5 })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
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
