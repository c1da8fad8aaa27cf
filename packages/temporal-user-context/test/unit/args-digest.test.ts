// The digest of a schedule action's arguments (claim `ad`): the edge computes it over what the SDK's
// default payload converter delivers for the values given to `schedule.create`, a worker over the values
// its data converter decodes from the run's input. The two must agree on what a workflow receives and
// differ wherever a workflow could tell two inputs apart.
import { defaultPayloadConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, generateKeySet, issueContextToken, KeyRing } from 'temporal-user-context';
import { argsDigest, createArgsDigest, MAX_ARGS_DEPTH } from '../../src/crypto/args-digest.js';
import { claimsSchema } from '../../src/crypto/claims.js';

describe('schedule arguments digest', () => {
  it("the edge's digest of what it gives is the worker's of what the workflow receives", () => {
    const cases: [given: unknown[], received: unknown[]][] = [
      [[], []],
      [
        [undefined, null],
        [undefined, null],
      ],
      [[new Date('2026-01-01T00:00:00Z')], ['2026-01-01T00:00:00.000Z']],
      [[{ list: [1, undefined, 'z'], gone: undefined, n: -0 }], [{ list: [1, null, 'z'], n: 0 }]],
      [
        [NaN, [Infinity]],
        [null, [null]],
      ],
      [
        [Buffer.from([0, 1, 255]), new Uint8Array(new ArrayBuffer(8), 2, 3).fill(7)],
        [new Uint8Array([0, 1, 255]), new Uint8Array([7, 7, 7])],
      ],
      [[{ bytes: new Uint8Array([1, 2]) }], [{ bytes: { 0: 1, 1: 2 } }]],
      [
        [new Map([['k', 1]]), Object.assign(Object.create({ inherited: 1 }) as object, { own: 2 })],
        [{}, { own: 2 }],
      ],
    ];
    for (const [given, received] of cases)
      expect(createArgsDigest(given), JSON.stringify(received)).toBe(argsDigest(received));
  });

  it('keeps the encoding that tokens already issued were digested with', () => {
    // Schedule tokens carry `ad` for up to 366 days, and start tokens sit in histories that workers
    // replay: a change of encoding, however equivalent, would refuse every one of them. These digests
    // were computed by the first implementation (a text joined per nesting level).
    const pinned: [values: unknown[], digest: string][] = [
      [[], 'T1PNoYwrqgwDVLtfmj7L5e0Sq02OEbqHPC8RFhICuUU'],
      [[undefined], 'mX6E6I-fb6E2JAw34yZLxoENc6N6JRIAMSNZTF9DxJo'],
      [[null], '9IzGAHDwDCQoquawRJT_YYixUodFj4L-whznpkmfLU0'],
      [[1, -0, 0, Infinity, 1.5e300, -2], 'FRwjsNj6pCAAOmFnFOx5FvM8ubcuv_gkfpoH6VzlicY'],
      [['é', 'a"b\\c', '\u2028', ''], 'b6fJUtw0_o0cgTVO_4pCM07a1TvHqmyPiWAdEpLKvOU'],
      [
        [[1, [2, {}]], { a: { 'k"': [true, false] }, b: null, c: undefined }],
        'rs7dNHLzuFZgr_vIRzUUZBynCRDWWs_ER3VPBkpIeGk',
      ],
      [[new Uint8Array([1, 2, 255]), Buffer.from('hi')], 'Pv5gg0nk5GTQ7LW3R28yte4sbZ76uYifPeWgUtnVI64'],
      // eslint-disable-next-line no-sparse-arrays -- a hole, which a decoder never delivers
      [[new Map(), new Date(0), [, 1]], '-k-rEQcYZ4_lGu38w9Dg6WCZI8PkV2XWrCGJKCptYXk'],
      [
        [{ task: 'summarise', agentId: '0d4c2d9e-0000-4000-8000-000000000000' }],
        'vBkEa2IHVA29OaYyDMl6nC4d_vdo3SVa_4PBqgdAq9M',
      ],
    ];
    for (const [values, digest] of pinned) expect(argsDigest(values), String(values.length)).toBe(digest);
  });

  it('differs for every input a workflow can tell apart', () => {
    const decoded = (json: string) =>
      defaultPayloadConverter.fromPayload({
        metadata: { encoding: new TextEncoder().encode('json/plain') },
        data: new TextEncoder().encode(json),
      });
    const digests = [
      [],
      [undefined],
      [null],
      [[]],
      [{}],
      [''],
      ['x'],
      [['x']],
      ['a', 'b'],
      ['ab'],
      [1],
      ['1'],
      [0],
      [-0],
      [Infinity],
      [-Infinity],
      [{ a: null }],
      [{ a: Infinity }],
      [true],
      ['true'],
      [new Uint8Array([1, 2])],
      [new Uint8Array([1, 3])],
      [{ 0: 1, 1: 2 }],
      ['AQI='],
      [{ a: 1 }],
      [{ 'a":1,"b': 1 }],
      [{ a: 1, b: 1 }],
      [{ a: undefined }],
    ].map(argsDigest);
    expect(new Set(digests).size).toBe(digests.length);
    for (const digest of digests) expect(digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // JSON text the SDK never writes but an updater's raw payload may hold: it parses to values (Infinity,
    // -0) that stringify back to what the schedule was created with.
    const created = createArgsDigest([{ account: 'acme', maxAmount: null, offset: 0 }]);
    expect(argsDigest([decoded('{"account":"acme","maxAmount":null,"offset":0}')])).toBe(created);
    for (const crafted of [
      '{"account":"acme","maxAmount":1e999,"offset":0}',
      '{"account":"acme","maxAmount":null,"offset":-0}',
    ])
      expect(argsDigest([decoded(crafted)]), crafted).not.toBe(created);
  });

  it('an object with a length is digested as an object, never as an array (found by mutation testing)', () => {
    expect(argsDigest([{ length: 1 }])).not.toBe(argsDigest([[undefined]]));
    expect(argsDigest([{ length: 0 }])).not.toBe(argsDigest([[]]));
    expect(argsDigest([{ length: 1 }])).toBe(argsDigest([JSON.parse('{"length":1}')]));
  });

  it("refuses to vouch for what the default converter never delivers (another converter's values)", () => {
    // A custom converter may decode a Map, a Date or a class instance: by their own keys they would read
    // as plain objects the edge bound, while the workflow receives something else.
    class WithDefaults {
      own = 1;
    }
    Object.assign(WithDefaults.prototype, { role: 'admin' });
    const notPlain = [
      new Map([['role', 'admin']]),
      new Date(0),
      new WithDefaults(),
      Object.assign(Object.create(null) as object, { own: 1 }),
      // eslint-disable-next-line no-sparse-arrays
      [, 1],
      Object.assign([1], { extra: 2 }),
    ];
    const plain = [{}, { own: 1 }, [undefined, 1], [1], '1970-01-01T00:00:00.000Z'];
    const bound = new Set(plain.map((value) => createArgsDigest([value])));
    notPlain.forEach((value, i) => expect(bound.has(argsDigest([value])), `case ${i}`).toBe(false));
  });

  it('an argument nested too deep to digest is a named refusal at the edge', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 4000; i++) deep = [deep];
    expect(() => createArgsDigest([deep])).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('an argument the default converter refuses is a named refusal at the edge', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    for (const args of [[1n], [() => 1], [Symbol('s')], [cycle]]) {
      expect(() => createArgsDigest(args)).toThrow(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
    }
  });
});

describe('claim ad', () => {
  const ring = KeyRing.fromJSON(generateKeySet('args').edge);
  const schedule = {
    namespace: 'default',
    use: 'schedule' as const,
    scheduleId: 'sch',
    workflowId: 'sch-wf',
    scheduledAction: { workflowType: 'report', taskQueue: 'q' },
  };

  it('a schedule token binds the arguments when given, and only then', async () => {
    const bound = await issueContextToken(
      ring,
      { userId: 'u1', workspaceId: 'w1', roles: [] },
      {
        ...schedule,
        scheduledAction: { ...schedule.scheduledAction, args: ['x'] },
      },
    );
    expect(bound.claims.ad).toBe(argsDigest(['x']));
    const unbound = await issueContextToken(ring, { userId: 'u1', workspaceId: 'w1', roles: [] }, schedule);
    expect(unbound.claims.ad).toBeUndefined();
  });

  it('the schema takes a digest on schedule tokens with their action only', async () => {
    const { claims } = await issueContextToken(
      ring,
      { userId: 'u1', workspaceId: 'w1', roles: [] },
      {
        ...schedule,
        scheduledAction: { ...schedule.scheduledAction, args: [] },
      },
    );
    expect(claimsSchema.safeParse(claims).success).toBe(true);
    const { wt: _wt, tq: _tq, ...noAction } = claims;
    // As a start token (a start's window: a schedule's 366 days is longer than a start may have).
    const start = {
      ...claims,
      use: 'start',
      sch: undefined,
      wt: undefined,
      tq: undefined,
      exp: claims.iat + 60,
    };
    for (const bad of [
      { ...claims, ad: `${claims.ad!.slice(0, 42)}=` },
      { ...claims, ad: claims.ad!.slice(1) },
      { ...claims, ad: `${claims.ad!}A` },
      noAction,
      start,
    ]) {
      expect(claimsSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
    const { ad: _ad, ...startWithout } = start;
    expect(claimsSchema.safeParse(JSON.parse(JSON.stringify(startWithout))).success).toBe(true);
  });
});

describe('nesting', () => {
  it(`is digested up to ${MAX_ARGS_DEPTH} levels, and refused deeper alike at the edge and on workers`, () => {
    const nested = (depth: number, leaf: unknown = 1): unknown => {
      let value = leaf;
      for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { k: value };
      return value;
    };
    expect(() => argsDigest([nested(MAX_ARGS_DEPTH)])).not.toThrow();
    expect(() => createArgsDigest([nested(MAX_ARGS_DEPTH)], 'bindStartArguments')).not.toThrow();
    expect(() => argsDigest([nested(MAX_ARGS_DEPTH + 1)])).toThrow(RangeError);
    expect(() => createArgsDigest([nested(MAX_ARGS_DEPTH + 1)], 'bindStartArguments')).toThrow(
      expect.objectContaining({
        code: ErrorCodes.MISCONFIGURED,
        message: expect.stringContaining('bindStartArguments'),
      }),
    );
  });
});
