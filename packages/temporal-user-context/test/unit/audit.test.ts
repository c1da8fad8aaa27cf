// Case 21 (log injection) and the audit fan-out.
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  Auditor,
  memoryAuditSink,
  pinoAuditSink,
  sanitizeAuditEvent,
  sanitizeField,
  type AuditEvent,
} from 'temporal-user-context';
import { auditFailure } from '../../src/worker/decision.js';
import { describeErrorKind, describeThrown } from '../../src/audit/sanitize.js';

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
    // Not an ISO-8601 time: replaced by now, and the record says so.
    expect(second!.time).not.toContain('\uFFFD');
    expect(Date.parse(second!.time)).not.toBeNaN();
    expect(second!.detail).toBe('invalid fields: time');
  });

  it('an own __proto__ key (JSON.parse, then a spread) neither sets the prototype nor supplies fields', () => {
    const memory = memoryAuditSink();
    const fields = JSON.parse(
      '{"namespace":"default","__proto__":{"userId":"evil\\nFAKE","workspaceId":"ws-globex","detail":"x\\u2028y"}}',
    ) as Record<string, unknown>;
    new Auditor([memory]).emit({
      action: 'db.scope',
      decision: 'deny',
      source: 'header',
      reason: 'R',
      ...fields,
    });
    const [event] = memory.events;
    expect(Object.getPrototypeOf(event)).toBe(Object.prototype);
    const record = event as unknown as Record<string, unknown>;
    for (const key of ['userId', 'workspaceId', 'detail']) expect(record[key], key).toBeUndefined();
    expect(event).toEqual({
      time: expect.any(String),
      action: 'db.scope',
      decision: 'deny',
      source: 'header',
      reason: 'R',
      namespace: 'default',
    });
  });

  it('copies only the own fields of AuditEvent: nothing inherited, no other key', () => {
    const inherited = Object.assign(Object.create({ userId: 'bob\r\nx', workspaceId: 'ws-b' }) as object, {
      action: 'x',
      decision: 'allow',
      source: 'edge',
      reason: 'ok',
      password: 'hunter2',
    });
    const clean = sanitizeAuditEvent(inherited as unknown as AuditEvent);
    expect(Object.keys(clean).sort()).toEqual(['action', 'decision', 'reason', 'source', 'time']);
  });

  it('checks every field by its type; an invalid one is left out or replaced, and named in the detail', () => {
    const event = {
      time: 'yesterday',
      action: 42,
      decision: 'maybe',
      source: 'header\n',
      reason: { toString: () => 'x\r\n' },
      userId: ['alice'],
      workspaceId: null,
      tokenId: 7,
      attempt: 1.5,
      detail: ['a\r\nb'],
    } as unknown as AuditEvent;
    const clean = sanitizeAuditEvent(event, '2026-11-28T00:00:00.000Z');
    expect(clean).toEqual({
      time: '2026-11-28T00:00:00.000Z',
      action: 'invalid',
      decision: 'deny',
      source: 'none',
      reason: 'invalid',
      detail: 'invalid fields: time, action, decision, source, reason, userId, tokenId, attempt, detail',
    });
    const base = { action: 'a', decision: 'allow', source: 'edge', reason: 'ok' } as const;
    for (const attempt of ['2', -1, 2 ** 31, Number.NaN, Infinity])
      expect(sanitizeAuditEvent({ ...base, attempt } as AuditEvent), String(attempt)).toMatchObject({
        detail: 'invalid fields: attempt',
      });
    expect(sanitizeAuditEvent({ ...base, attempt: 0 }).attempt).toBe(0);
    expect(sanitizeAuditEvent({ ...base, attempt: 2 ** 31 - 1 }).attempt).toBe(2 ** 31 - 1);
    // The marker goes first: a long detail cannot push it past the cap.
    const long = sanitizeAuditEvent({ ...base, attempt: 'x' as unknown as number, detail: 'd'.repeat(400) });
    expect(long.detail).toMatch(/^invalid fields: attempt; d+…$/);
    // A getter that throws is an invalid field, not a throw.
    const hostile = { ...base };
    Object.defineProperty(hostile, 'userId', {
      enumerable: true,
      get() {
        throw new Error('getter');
      },
    });
    expect(sanitizeAuditEvent(hostile).detail).toBe('invalid fields: userId');
  });

  it.each([
    ['2026-11-28T00:00:00.000Z', true],
    ['2026-11-28T00:00:00Z', true],
    ['2026-11-28T01:00:00.123456+01:00', true],
    ['2024-02-29T00:00:00Z', true],
    ['2023-02-29T00:00:00Z', false],
    ['2026-04-31T00:00:00Z', false],
    ['0000-01-01T00:00:00Z', false],
    ['2026-11-28T24:00:00Z', false],
    ['2026-11-28T00:00:60Z', false],
    ['2026-11-28T00:00:00+16:00', false],
    ['2026-11-28T00:00:00', false],
    ['2026-11-28', false],
    ['2026-11-28 00:00:00Z', false],
    ['Sat, 28 Nov 2026 00:00:00 GMT', false],
  ])('time %s is kept: %s', (time, kept) => {
    const clean = sanitizeAuditEvent(
      { time, action: 'a', decision: 'allow', source: 'edge', reason: 'ok' },
      '2000-01-01T00:00:00.000Z',
    );
    expect(clean.time).toBe(kept ? time : '2000-01-01T00:00:00.000Z');
    expect(clean.detail).toBe(kept ? undefined : 'invalid fields: time');
  });

  it('replaces lone surrogates and never cuts a surrogate pair', () => {
    const hasLoneSurrogate = (s: string) => /\p{Cs}/u.test(s);
    expect(sanitizeField('x\ud800y\udc00z')).toBe('x\uFFFDy\uFFFDz');
    expect(sanitizeField('a\u{1F600}b')).toBe('a\u{1F600}b');
    // The pair would straddle the cap (code units 255 and 256): cut before it.
    const straddling = sanitizeField(`${'a'.repeat(255)}\u{1F600}b`);
    expect(straddling).toBe(`${'a'.repeat(255)}…`);
    expect(hasLoneSurrogate(straddling)).toBe(false);
    // The pair ends at the cap: kept whole.
    expect(sanitizeField(`${'a'.repeat(254)}\u{1F600}bbb`)).toBe(`${'a'.repeat(254)}\u{1F600}…`);
    for (let n = 240; n < 260; n++) {
      const value = sanitizeField(`${'a'.repeat(n)}${'\u{1F600}'.repeat(20)}`);
      expect(hasLoneSurrogate(value), String(n)).toBe(false);
      expect(value.length).toBeLessThanOrEqual(257);
    }
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
        expect.objectContaining({ decision: 'deny', reason: 'ERROR', detail: 'error: object' }),
      ]);
    });

    it('a hook failure is recorded by its kind and code, never its message (hosts, URLs, SQL)', () => {
      const memory = memoryAuditSink();
      const auditor = new Auditor([memory]);
      const grpc = Object.assign(new Error('14 UNAVAILABLE: connect ECONNREFUSED 10.9.8.7:7233'), {
        name: 'ServiceError',
        cause: Object.assign(new Error('No connection established'), { code: 14 }),
      });
      const pg = Object.assign(new Error('password authentication failed for user "app"'), { code: '28P01' });
      class HookError extends Error {
        override name = 'HookError';
      }
      const thrown: unknown[] = [
        grpc,
        pg,
        new HookError('https://user:secret@idp.example/revoked failed'),
        Object.assign(new Error('x'), { name: 'bad\nname', code: 'a b' }),
        'postgres://app:secret@db:5432',
        42,
      ];
      for (const err of thrown) expect(() => auditFailure(auditor, {}, 'activity.execute', err)).toThrow();
      expect(memory.events.map((e) => e.detail)).toEqual([
        'error: ServiceError code=14',
        'error: Error code=28P01',
        'error: HookError',
        'error: Error',
        'error: string',
        'error: number',
      ]);
      expect(JSON.stringify(memory.events)).not.toMatch(/10\.9\.8\.7|secret|password|idp\.example/);
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

// Found by mutation testing: what the tests above leave open in the pure sanitiser.
describe('sanitize, at its edges', () => {
  it('a field made only of unsafe characters is cleaned too (the printable-ASCII fast path is no bypass)', () => {
    expect(sanitizeField('\n')).toBe('\uFFFD');
    expect(sanitizeField('\r\n\u202e\u2066\u2028')).toBe('\uFFFD'.repeat(5));
    expect(sanitizeField('é\n')).toBe('é\uFFFD');
  });

  it('caps at exactly 256 code units, cutting before a pair whose high half is U+D800 or U+DBFF', () => {
    expect(sanitizeField('x'.repeat(1000))).toBe(`${'x'.repeat(256)}…`);
    expect(sanitizeField('é'.repeat(256))).toBe('é'.repeat(256));
    expect(sanitizeField('é'.repeat(257))).toBe(`${'é'.repeat(256)}…`);
    expect(sanitizeField(`${'a'.repeat(255)}\u{10000}b`)).toBe(`${'a'.repeat(255)}…`);
    expect(sanitizeField(`${'a'.repeat(255)}\u{10FFFF}b`)).toBe(`${'a'.repeat(255)}…`);
  });

  it('describeThrown reads a message from an Error only, and prints primitives as String() does', () => {
    expect(describeThrown({ message: 'postgres://user:secret@db' })).toBe('[object Object]');
    expect(describeThrown(42)).toBe('42');
    expect(describeThrown(null)).toBe('null');
    expect(describeThrown(undefined)).toBe('undefined');
    expect(describeThrown(Symbol('s'))).toBe('Symbol(s)');
    expect(describeThrown(new Error('boom\n'))).toBe('boom\uFFFD');
  });

  it('describeErrorKind names primitives by type, and reads codes at most four causes deep, never looping', () => {
    expect(describeErrorKind('boom')).toBe('string');
    expect(describeErrorKind(undefined)).toBe('undefined');
    expect(describeErrorKind(new TypeError('x'))).toBe('TypeError');
    // An endless chain of causes (each read makes a new one): the walk stops after four; a runaway walk
    // would get 'unprintable value' from the guard below instead of hanging.
    let reads = 0;
    const endless = (depth: number): object => ({
      get cause() {
        if (++reads > 50) throw new Error('walked too far');
        return endless(depth + 1);
      },
      // The fifth error of the chain (depth 4) has a code: past the walk.
      ...(depth === 4 ? { code: 'E_TOO_DEEP' } : {}),
    });
    const err = Object.assign(new Error('top'), { cause: endless(1) });
    expect(describeErrorKind(err)).toBe('Error');
    const shallow = Object.assign(new Error('top'), {
      cause: { cause: { cause: { code: 'ECONNREFUSED' } } },
    });
    expect(describeErrorKind(shallow)).toBe('Error code=ECONNREFUSED');
    const cyclic = new Error('cyclic') as Error & { cause?: unknown };
    cyclic.cause = cyclic;
    expect(describeErrorKind(cyclic)).toBe('Error');
  });

  it('keeps a time that names a real instant, at every limit, and refuses one that does not', () => {
    const base = { action: 'a', decision: 'deny', source: 'none', reason: 'r' } as const;
    for (const time of [
      '2000-02-29T23:59:59Z',
      '2024-02-29T00:00:00Z',
      '0001-12-31T23:59:59.123456789Z',
      '2026-12-01T00:00:00+14:59',
      '2026-06-30T12:00:00-00:00',
    ]) {
      const out = sanitizeAuditEvent({ ...base, time });
      expect(out.time, time).toBe(time);
      expect(out.detail, time).toBeUndefined();
    }
    for (const time of [
      'x2026-01-01T00:00:00Z',
      '1900-02-29T00:00:00Z',
      '2023-02-29T00:00:00Z',
      '2026-04-31T00:00:00Z',
      '0000-01-01T00:00:00Z',
      '2026-00-01T00:00:00Z',
      '2026-13-01T00:00:00Z',
      '2026-01-00T00:00:00Z',
      '2026-01-01T24:00:00Z',
      '2026-01-01T00:60:00Z',
      '2026-01-01T00:00:60Z',
      '2026-01-01T00:00:00+15:00',
      '2026-01-01T00:00:00+14:60',
    ]) {
      const out = sanitizeAuditEvent({ ...base, time });
      expect(out.time, time).not.toBe(time);
      expect(out.detail, time).toBe('invalid fields: time');
    }
  });
});
