// Header decoding (cases 3, 18, 19): every bad input is a named error; fast-check explores the rest.
import fc from 'fast-check';
import { defaultPayloadConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { isContextHeader, withHeader } from '../../src/header/wire.js';
import { headerSchema } from '../../src/header/schema.js';
import {
  ErrorCodes,
  MAX_HEADER_BYTES,
  ORIGINATOR_HEADER,
  UserContextError,
  decodeHeader,
  encodeHeader,
} from 'temporal-user-context';

const enc = new TextEncoder();
const tok = 'aaaa.bbbb.cccc.dddd.eeee';
const good = { v: 1 as const, tok, ws: 'w'.repeat(22), sub: 's'.repeat(22) };

function raw(data: string, encoding = 'json/plain') {
  return { [ORIGINATOR_HEADER]: { metadata: { encoding: enc.encode(encoding) }, data: enc.encode(data) } };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (!(err instanceof UserContextError)) throw err;
    return err.code;
  }
}

describe('decodeHeader', () => {
  it('round-trips a v1 header and returns undefined when absent', () => {
    expect(decodeHeader({ [ORIGINATOR_HEADER]: encodeHeader(good) }, ORIGINATOR_HEADER)).toEqual(good);
    expect(decodeHeader({}, ORIGINATOR_HEADER)).toBeUndefined();
  });

  it.each([
    ['trailing garbage', `${JSON.stringify(good)} garbage`],
    ['not JSON', 'hello'],
    // The SDK's converter keeps a leading BOM and so fails to parse it: so must we (same verdict on replay).
    ['leading byte-order mark', `\uFEFF${JSON.stringify(good)}`],
    ['unknown version', JSON.stringify({ ...good, v: 2 })],
    ['extra key', JSON.stringify({ ...good, admin: true })],
    [
      'prototype key',
      `{"v":1,"tok":"${tok}","ws":"${good.ws}","sub":"${good.sub}","__proto__":{"admin":true}}`,
    ],
    ['constructor key', JSON.stringify({ ...good, constructor: { prototype: { admin: true } } })],
    ['deeply nested', `${'['.repeat(3000)}${']'.repeat(3000)}`],
    ['JWS instead of JWE', JSON.stringify({ ...good, tok: 'aaa.bbb.ccc' })],
    ['hint with CR/LF', JSON.stringify({ ...good, ws: 'w'.repeat(20) + '\r\n' })],
    ['plain context', JSON.stringify({ userId: 'root', workspaceId: 'ws', roles: ['admin'] })],
  ])('case 18/19: refuses %s as HEADER_MALFORMED', (_name, data) => {
    expect(codeOf(() => decodeHeader(raw(data), ORIGINATOR_HEADER))).toBe(ErrorCodes.HEADER_MALFORMED);
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it.each([
    ['a repeated token', `{"v":1,"tok":"x","ws":"${good.ws}","sub":"${good.sub}","tok":"${tok}"}`],
    [
      'a key repeated under another spelling',
      `{"v":1,"tok":"x","ws":"${good.ws}","sub":"${good.sub}","t\\u006fk":"${tok}"}`,
    ],
    [
      'a repeated lineage key',
      `{"v":1,"tok":"${tok}","ws":"${good.ws}","sub":"${good.sub}","lin":{"root":"a","wf":"a","start":1,"root":"b"}}`,
    ],
  ])('case 18: refuses %s as HEADER_MALFORMED (parsers disagree on which one wins)', (_name, data) => {
    // What JSON.parse alone keeps of it is a valid header: only the repeated key is refused.
    expect(isContextHeader(JSON.parse(data))).toBe(true);
    expect(codeOf(() => decodeHeader(raw(data), ORIGINATOR_HEADER))).toBe(ErrorCodes.HEADER_MALFORMED);
  });

  it('refuses another encoding', () => {
    expect(codeOf(() => decodeHeader(raw(JSON.stringify(good), 'binary/plain'), ORIGINATOR_HEADER))).toBe(
      ErrorCodes.HEADER_MALFORMED,
    );
  });

  it('case 18: refuses an oversized header before parsing it', () => {
    const huge = JSON.stringify({ ...good, tok: 'a'.repeat(MAX_HEADER_BYTES * 100) });
    expect(codeOf(() => decodeHeader(raw(huge), ORIGINATOR_HEADER))).toBe(ErrorCodes.TOO_LARGE);
  });

  it('property: random bytes and mutated headers only ever produce a header or a named error', () => {
    const valid = JSON.stringify(good);
    const mutated = fc
      .tuple(fc.nat({ max: valid.length - 1 }), fc.string({ maxLength: 8 }), fc.nat({ max: 4 }))
      .map(([at, insert, drop]) => valid.slice(0, at) + insert + valid.slice(at + drop));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 400 }), fc.json({ maxDepth: 4 }), mutated), (data) => {
        let decoded: unknown;
        try {
          decoded = decodeHeader(raw(data), ORIGINATOR_HEADER);
        } catch (err) {
          expect(err).toBeInstanceOf(UserContextError);
          return;
        }
        // What is accepted is a valid v1 header, by the reference schema.
        expect(headerSchema.safeParse(decoded).success).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('encoding', () => {
  it("property: encodeHeader writes exactly the SDK JSON converter's payload, and decodes what it writes", () => {
    const header = fc.record({
      v: fc.constant(1 as const),
      tok: fc.stringMatching(/^[A-Za-z0-9_-]{1,40}(\.[A-Za-z0-9_-]{0,40}){4}$/),
      ws: fc.stringMatching(/^[A-Za-z0-9_-]{16,64}$/),
      sub: fc.stringMatching(/^[A-Za-z0-9_-]{16,64}$/),
      lin: fc.option(
        fc.record({
          // Any Unicode in workflow ids: the wire format must not depend on which UTF-8 encoder ran.
          root: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
          start: fc.nat(),
          wf: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
        }),
        { nil: undefined },
      ),
    });
    fc.assert(
      fc.property(header, (h) => {
        const value = h.lin === undefined ? { v: h.v, tok: h.tok, ws: h.ws, sub: h.sub } : h;
        const ours = encodeHeader(value);
        const sdk = defaultPayloadConverter.toPayload(value);
        expect(ours.metadata).toEqual(sdk.metadata);
        expect(Buffer.from(ours.data!).equals(Buffer.from(sdk.data!))).toBe(true);
        expect(decodeHeader({ [ORIGINATOR_HEADER]: sdk }, ORIGINATOR_HEADER)).toEqual(value);
      }),
    );
  });
});

describe('the sandbox check and the zod reference schema agree', () => {
  it('property: isContextHeader(x) === headerSchema accepts x', () => {
    const hint = fc.oneof(
      fc.constant('w'.repeat(22)),
      fc.stringMatching(/^[A-Za-z0-9_-]{14,66}$/),
      fc.string(),
    );
    const wfId = fc.oneof(
      fc.constant('wf-1'),
      fc.constant(''),
      fc.string({ maxLength: 1002 }),
      fc.constant('x'.repeat(1001)),
    );
    const lineage = fc.record(
      {
        root: wfId,
        wf: wfId,
        start: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constant(Number.MAX_SAFE_INTEGER + 2)),
        sched: wfId,
        wt: wfId,
        tq: wfId,
        cr: wfId,
        hn: wfId,
        ad: fc.oneof(
          fc.constant('a'.repeat(43)),
          fc.stringMatching(/^[A-Za-z0-9_+/=-]{42,44}$/),
          fc.string(),
          fc.nat(),
        ),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    );
    const header = fc.record(
      {
        v: fc.oneof(fc.constant(1), fc.constant(2), fc.constant('1')),
        tok: fc.oneof(fc.constant(tok), fc.constant('a.b.c'), fc.stringMatching(/^[A-Za-z0-9_.-]{1,40}$/)),
        ws: hint,
        sub: hint,
        b: fc.oneof(fc.constant(1), fc.constant(true), fc.constant('1'), fc.integer(), fc.anything()),
        lin: fc.oneof(lineage, fc.constant(null), fc.anything()),
        admin: fc.anything(),
      },
      { requiredKeys: [] },
    );
    // Valid v1 headers whose lineage varies: both sides must accept or refuse the same ones.
    const nearlyValid = fc.record(
      {
        v: fc.constant(1),
        tok: fc.constant(tok),
        ws: fc.constant(good.ws),
        sub: fc.constant(good.sub),
        b: fc.oneof(fc.constant(1), fc.constant(0), fc.constant(true)),
        lin: lineage,
      },
      { requiredKeys: ['v', 'tok', 'ws', 'sub'] },
    );
    fc.assert(
      fc.property(fc.oneof(header, nearlyValid, fc.anything()), (value) => {
        expect(isContextHeader(value)).toBe(headerSchema.safeParse(value).success);
      }),
      { numRuns: 5000 },
    );
  });
});

// Mutation testing found the property above never generates an accepted lineage (ad/extra are nearly
// always present), so nothing checked isLineage field by field, nor the tok cap at its boundary.
describe('isContextHeader, field by field', () => {
  const lin = { root: 'wf-1', start: 0, wf: 'wf-1' };
  const withLin = (l: unknown) => ({ ...good, lin: l });

  it('accepts a lineage with every field, at its limits', () => {
    expect(isContextHeader(withLin(lin))).toBe(true);
    const full = {
      root: 'r'.repeat(1000),
      start: Number.MAX_SAFE_INTEGER,
      wf: 'w',
      sched: 's',
      wt: 'T',
      tq: 'Q',
      cr: '@every 1h',
      rp: 1,
      hn: 'approve',
    };
    expect(isContextHeader(withLin(full))).toBe(true);
    expect(headerSchema.safeParse(withLin(full)).success).toBe(true);
  });

  it.each([
    ['an empty root', { ...lin, root: '' }],
    ['an empty wf', { ...lin, wf: '' }],
    ['a root over 1000 characters', { ...lin, root: 'r'.repeat(1001) }],
    ['no start', { root: 'wf-1', wf: 'wf-1' }],
    ['a start given as text', { ...lin, start: '0' }],
    ['a negative start', { ...lin, start: -1 }],
    ['a fractional start', { ...lin, start: 1.5 }],
    ['an unsafe start', { ...lin, start: Number.MAX_SAFE_INTEGER + 2 }],
    ['an empty sched', { ...lin, sched: '' }],
    ['a sched that is not a string', { ...lin, sched: 7 }],
    ['an empty wt', { ...lin, wt: '' }],
    ['an empty tq', { ...lin, tq: '' }],
    ['an empty cr', { ...lin, cr: '' }],
    ['an empty hn', { ...lin, hn: '' }],
    ['an hn over 1000 characters', { ...lin, hn: 'h'.repeat(1001) }],
    ['rp other than 1', { ...lin, rp: 2 }],
    ['rp true', { ...lin, rp: true }],
    ['an argument digest on the wire (ad)', { ...lin, ad: 'a'.repeat(43) }],
    ['a start delay on the wire (dl)', { ...lin, dl: 0 }],
    ['a lineage that is an array', [lin]],
  ])('refuses a lineage with %s: sandbox check, reference schema and decodeHeader alike', (_name, l) => {
    const header = withLin(l);
    expect(isContextHeader(header)).toBe(false);
    expect(headerSchema.safeParse(header).success).toBe(false);
    expect(codeOf(() => decodeHeader(raw(JSON.stringify(header)), ORIGINATOR_HEADER))).toBe(
      ErrorCodes.HEADER_MALFORMED,
    );
  });

  it('refuses hints that are not strings, and a token one character over the cap', () => {
    expect(isContextHeader({ ...good, ws: [good.ws] })).toBe(false);
    expect(isContextHeader({ ...good, sub: [good.sub] })).toBe(false);
    // 'a…a.b.c.d.e': a five-part token of exactly MAX_HEADER_BYTES characters, then one more.
    const tokOf = (length: number) => `${'a'.repeat(length - 8)}.b.c.d.e`;
    expect(isContextHeader({ ...good, tok: tokOf(MAX_HEADER_BYTES) })).toBe(true);
    expect(isContextHeader({ ...good, tok: tokOf(MAX_HEADER_BYTES + 1) })).toBe(false);
  });
});

describe('decodeHeader on incomplete payloads, withHeader', () => {
  it('reads absent headers as absent, and a payload without data or metadata as HEADER_MALFORMED', () => {
    expect(decodeHeader(undefined, ORIGINATOR_HEADER)).toBeUndefined();
    expect(decodeHeader({ [ORIGINATOR_HEADER]: null as never }, ORIGINATOR_HEADER)).toBeUndefined();
    const noData = { [ORIGINATOR_HEADER]: { metadata: { encoding: enc.encode('json/plain') } } };
    expect(codeOf(() => decodeHeader(noData, ORIGINATOR_HEADER))).toBe(ErrorCodes.HEADER_MALFORMED);
    const noMetadata = { [ORIGINATOR_HEADER]: { data: enc.encode(JSON.stringify(good)) } };
    expect(codeOf(() => decodeHeader(noMetadata, ORIGINATOR_HEADER))).toBe(ErrorCodes.HEADER_MALFORMED);
  });

  it('withHeader returns new headers with the header added, and leaves the given ones untouched', () => {
    const other = defaultPayloadConverter.toPayload('x');
    const given = { other };
    const out = withHeader(given, ORIGINATOR_HEADER, good);
    expect(out).not.toBe(given);
    expect(Object.keys(given)).toEqual(['other']);
    expect(out.other).toBe(other);
    expect(decodeHeader(out, ORIGINATOR_HEADER)).toEqual(good);
  });
});
