import type { Payload } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextError } from '../../src/context/errors.js';
import { AesGcmPayloadCodec } from '../../src/crypto/payload-codec.js';
import { K1, K2, NS, json, makeCodec, str, utf8, wf } from './codec-helpers.js';

async function expectCode(p: Promise<unknown>, code: string): Promise<UserContextError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserContextError);
  expect((err as UserContextError).code).toBe(code);
  return err as UserContextError;
}

describe('AesGcmPayloadCodec: round trips and wire format', () => {
  it('round-trips payloads with metadata, empty data and null data', async () => {
    const codec = makeCodec();
    const input: Payload[] = [
      json({ hello: 'wörld' }),
      { metadata: { encoding: utf8('binary/null') } },
      {
        metadata: { encoding: utf8('binary/plain'), 'x-extra': new Uint8Array([0, 255]) },
        data: new Uint8Array(),
      },
      { data: utf8('no metadata at all') },
    ];
    const encoded = await codec.encode(input, wf('wf-1'));
    expect(encoded).toHaveLength(4);
    for (const p of encoded) {
      expect(str(p.metadata?.encoding)).toBe('binary/encrypted');
      expect(str(p.metadata?.['encryption-key-id'])).toBe('k1');
      expect(str(p.metadata?.['encryption-format'])).toBe('tuc-aes256gcm-v1');
      expect(str(p.metadata?.['encryption-workflow-id'])).toBe('wf-1');
      expect(str(p.data)).not.toContain('wörld');
    }
    const decoded = await codec.decode(encoded, wf('wf-1'));
    expect(str(decoded[0]!.data)).toBe('{"hello":"wörld"}');
    expect(str(decoded[0]!.metadata?.encoding)).toBe('json/plain');
    expect(str(decoded[1]!.metadata?.encoding)).toBe('binary/null');
    expect(decoded[1]!.data?.byteLength).toBe(0);
    expect([...decoded[2]!.metadata!['x-extra']!]).toEqual([0, 255]);
    expect(Object.keys(decoded[3]!.metadata!)).toEqual([]);
    expect(str(decoded[3]!.data)).toBe('no metadata at all');
  });

  it('seals the bytes a view covers, whatever the view: a DataView or a wider typed array', async () => {
    const codec = makeCodec();
    const bytes = new Uint8Array([0x41, 0x42, 0x43, 0x44, 0x45, 0x46]);
    const under = new ArrayBuffer(16);
    new Uint8Array(under).set(bytes, 4);
    const input: Payload[] = [
      { metadata: { encoding: utf8('binary/plain') }, data: new DataView(under, 4, 6) as never },
      {
        metadata: { encoding: utf8('binary/plain'), 'x-wide': new Uint16Array(under, 4, 3) as never },
        data: new Uint16Array(under, 4, 3) as never,
      },
    ];
    const decoded = await codec.decode(await codec.encode(input, wf('wf-1')), wf('wf-1'));
    expect(Buffer.from(decoded[0]!.data!)).toEqual(Buffer.from(bytes));
    expect(Buffer.from(decoded[1]!.data!)).toEqual(Buffer.from(bytes));
    expect(Buffer.from(decoded[1]!.metadata!['x-wide']!)).toEqual(Buffer.from(bytes));
  });

  it('refuses to bind a payload to a workflow id it could not decode again (over 4096 bytes)', async () => {
    const codec = makeCodec();
    await expectCode(codec.encode([json('x')], wf('w'.repeat(4097))), ErrorCodes.TOO_LARGE);
    const longest = 'w'.repeat(4096);
    const decoded = await codec.decode(await codec.encode([json('x')], wf(longest)), wf(longest));
    expect(str(decoded[0]!.data)).toBe('"x"');
  });

  it('uses a fresh IV per payload (same plaintext, different ciphertext)', async () => {
    const codec = makeCodec();
    const [a, b] = await codec.encode([json('same'), json('same')], wf('w'));
    expect(Buffer.from(a!.data!).equals(Buffer.from(b!.data!))).toBe(false);
    expect(Buffer.from(a!.data!.subarray(0, 12)).equals(Buffer.from(b!.data!.subarray(0, 12)))).toBe(false);
  });

  it('encodes an empty batch', async () => {
    expect(await makeCodec().encode([], wf('w'))).toEqual([]);
    expect(await makeCodec().decode([], wf('w'))).toEqual([]);
  });

  it('without a context binds to the configured namespace only, and decodes without a context', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json(1)]);
    expect(p!.metadata?.['encryption-workflow-id']).toBeUndefined();
    expect(str((await codec.decode([p!]))[0]!.data)).toBe('1');
  });

  it('activity context binds to the scheduling workflow', async () => {
    const codec = makeCodec();
    const act = {
      type: 'activity' as const,
      namespace: NS,
      workflowId: 'wf-a',
      activityId: '1',
      isLocal: false,
    };
    const [p] = await codec.encode([json(1)], act);
    expect(str(p!.metadata?.['encryption-workflow-id'])).toBe('wf-a');
    // The activity worker decodes with its own activity context; the workflow with its workflow context.
    expect(str((await codec.decode([p!], { ...act, activityId: 'other' }))[0]!.data)).toBe('1');
    expect(str((await codec.decode([p!], wf('wf-a')))[0]!.data)).toBe('1');
  });
});

describe('AesGcmPayloadCodec: configuration', () => {
  it.each([
    ['no keys', { keys: [] }],
    ['two active keys', { keys: [K1, { ...K2 }] }],
    ['no active key', { keys: [{ ...K1, status: 'decrypt-only' as const }] }],
    ['duplicate kid', { keys: [K1, { ...K1, status: 'decrypt-only' as const }] }],
    ['short key', { keys: [{ ...K1, key: new Uint8Array(16) }] }],
    ['hostile kid', { keys: [{ ...K1, kid: '../etc/passwd' }] }],
    ['long kid', { keys: [{ ...K1, kid: 'a'.repeat(65) }] }],
    // As a key set refuses them: an unfilled template (or material wiped before it was loaded), and one
    // key under two ids.
    ['an all-zero key', { keys: [{ ...K1, key: new Uint8Array(32) }] }],
    ['a key of one repeated byte', { keys: [{ ...K1, key: new Uint8Array(32).fill(0xa5) }] }],
    [
      'one key under two ids',
      { keys: [K1, { ...K2, key: Uint8Array.from(K1.key), status: 'decrypt-only' as const }] },
    ],
  ])('refuses %s with MISCONFIGURED', (_name, keys) => {
    expect(() => new AesGcmPayloadCodec({ keys, namespace: NS })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('requires a namespace', () => {
    expect(() => new AesGcmPayloadCodec({ keys: { keys: [K1] }, namespace: '' })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('copies key bytes: mutating the caller array later has no effect', async () => {
    const bytes = new Uint8Array(K1.key);
    const codec = new AesGcmPayloadCodec({
      keys: { keys: [{ kid: 'k1', key: bytes, status: 'active' }] },
      namespace: NS,
    });
    const enc = await codec.encode([json(1)], wf('w'));
    bytes.fill(0);
    expect(str((await codec.decode(enc, wf('w')))[0]!.data)).toBe('1');
  });
});

describe('AesGcmPayloadCodec: key rotation (case 24)', () => {
  it('old ciphertext opens with a decrypt-only key; new payloads use the active key', async () => {
    const before = makeCodec();
    const old = await before.encode([json('old')], wf('w'));
    const after = new AesGcmPayloadCodec({
      keys: { keys: [{ ...K1, status: 'decrypt-only' }, K2] },
      namespace: NS,
    });
    expect(after.activeKeyId).toBe('k2');
    expect(str((await after.decode(old, wf('w')))[0]!.data)).toBe('"old"');
    const fresh = await after.encode([json('new')], wf('w'));
    expect(str(fresh[0]!.metadata?.['encryption-key-id'])).toBe('k2');
    await expectCode(before.decode(fresh, wf('w')), ErrorCodes.KEY_UNKNOWN);
  });

  it('rotate() swaps keys atomically and keeps the old ones on a bad update', async () => {
    const codec = makeCodec();
    const old = await codec.encode([json('old')], wf('w'));
    expect(() => codec.rotate({ keys: [] })).toThrow(UserContextError);
    expect(codec.activeKeyId).toBe('k1');
    codec.rotate({ keys: [{ ...K1, status: 'decrypt-only' }, K2] });
    expect(codec.activeKeyId).toBe('k2');
    expect(str((await codec.decode(old, wf('w')))[0]!.data)).toBe('"old"');
    const [fresh] = await codec.encode([json('new')], wf('w'));
    expect(str(fresh!.metadata?.['encryption-key-id'])).toBe('k2');
    codec.rotate({ keys: [K2] }); // k1 dropped: its ciphertext is now unknown
    await expectCode(codec.decode(old, wf('w')), ErrorCodes.KEY_UNKNOWN);
  });

  it('a key with the same id but different bytes fails as tampered, not as unknown', async () => {
    const enc = await makeCodec().encode([json(1)], wf('w'));
    const other = new AesGcmPayloadCodec({ keys: { keys: [{ ...K2, kid: 'k1' }] }, namespace: NS });
    await expectCode(other.decode(enc, wf('w')), ErrorCodes.PAYLOAD_TAMPERED);
  });
});

describe('AesGcmPayloadCodec: tampering and moved ciphertext (case 22)', () => {
  it('flipping any bit of the data fails with PAYLOAD_TAMPERED', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json({ a: 1 })], wf('w'));
    const data = p!.data!;
    for (let i = 0; i < data.byteLength; i++) {
      const copy = new Uint8Array(data);
      copy[i]! ^= 1;
      await expectCode(codec.decode([{ ...p!, data: copy }], wf('w')), ErrorCodes.PAYLOAD_TAMPERED);
    }
  });

  it('truncated or missing data fails with PAYLOAD_TAMPERED', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json(1)], wf('w'));
    await expectCode(
      codec.decode([{ ...p!, data: p!.data!.subarray(0, 27) }], wf('w')),
      ErrorCodes.PAYLOAD_TAMPERED,
    );
    await expectCode(codec.decode([{ ...p!, data: null }], wf('w')), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it('ciphertext moved into another workflow fails', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('secret of A')], wf('wf-A'));
    await expectCode(codec.decode([p!], wf('wf-B')), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it('moved ciphertext with its workflow-id metadata rewritten fails authentication', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('secret of A')], wf('wf-A'));
    const forged = { ...p!, metadata: { ...p!.metadata, 'encryption-workflow-id': utf8('wf-B') } };
    const err = await expectCode(codec.decode([forged], wf('wf-B')), ErrorCodes.PAYLOAD_TAMPERED);
    expect(err.reason).toBe('ciphertext failed authentication');
  });

  it('a workflow binding that is not UTF-8 is refused, not read as U+FFFD', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('secret')], wf('a\uFFFD'));
    // `61 ff` read leniently is `a\uFFFD`, whose AAD the payload was sealed with: it opened.
    const rewritten = {
      ...p!,
      metadata: { ...p!.metadata, 'encryption-workflow-id': new Uint8Array([0x61, 0xff]) },
    };
    const err = await expectCode(codec.decode([rewritten], wf('a\uFFFD')), ErrorCodes.PAYLOAD_TAMPERED);
    expect(err.reason).toBe('malformed workflow binding');
    // The control: the payload as written opens.
    expect(str((await codec.decode([p!], wf('a\uFFFD')))[0]!.data)).toBe('"secret"');
  });

  it('refuses to bind to an id with a lone surrogate, which UTF-8 would write as U+FFFD', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('secret')], wf('x\uFFFD'));
    // Bound to `x\uD800`, it would share the AAD of `x\uFFFD` and open there.
    await expectCode(codec.encode([json('secret')], wf('x\uD800')), ErrorCodes.MISCONFIGURED);
    await expectCode(codec.decode([p!], wf('x\uD800')), ErrorCodes.MISCONFIGURED);
    await expectCode(codec.encode([json('secret')], wf('w', 'ns\uDC00')), ErrorCodes.MISCONFIGURED);
    // A well-formed pair (an emoji) is text like any other.
    const [emoji] = await codec.encode([json('secret')], wf('x\u{1F600}'));
    expect(str((await codec.decode([emoji!], wf('x\u{1F600}')))[0]!.data)).toBe('"secret"');
  });

  it('stripping the workflow binding fails (in a workflow, and without context)', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('x')], wf('wf-A'));
    const meta = { ...p!.metadata };
    delete meta['encryption-workflow-id'];
    await expectCode(codec.decode([{ ...p!, metadata: meta }], wf('wf-A')), ErrorCodes.PAYLOAD_TAMPERED);
    await expectCode(codec.decode([{ ...p!, metadata: meta }]), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it('namespace-only ciphertext is refused inside a workflow', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('x')]);
    await expectCode(codec.decode([p!], wf('wf-A')), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it('ciphertext moved to another namespace fails', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('x')], wf('wf-A', 'ns-a'));
    await expectCode(codec.decode([p!], wf('wf-A', 'ns-b')), ErrorCodes.PAYLOAD_TAMPERED);
    // Context-free decode (codec server) uses the configured namespace, 'default': also refused.
    await expectCode(codec.decode([p!]), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it('the codec server path (no context) still decodes a workflow-bound payload', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('visible')], wf('wf-A'));
    expect(str((await codec.decode([p!]))[0]!.data)).toBe('"visible"');
  });

  it('schedule runs are accepted only when enabled, and only with the scheduler id suffix', async () => {
    const strict = makeCodec();
    const sched = makeCodec({ acceptScheduledRuns: true });
    const [p] = await strict.encode([json('x')], wf('nightly'));
    await expectCode(strict.decode([p!], wf('nightly-2025-01-01T00:00:00Z')), ErrorCodes.PAYLOAD_TAMPERED);
    expect(str((await sched.decode([p!], wf('nightly-2025-01-01T00:00:00Z')))[0]!.data)).toBe('"x"');
    await expectCode(sched.decode([p!], wf('nightly-evil')), ErrorCodes.PAYLOAD_TAMPERED);
    await expectCode(sched.decode([p!], wf('nightly2025-01-01T00:00:00Z')), ErrorCodes.PAYLOAD_TAMPERED);
  });

  it("a run's result opens in another run of the same schedule action (the scheduler hands it on), only there", async () => {
    const strict = makeCodec();
    const sched = makeCodec({ acceptScheduledRuns: true });
    const [last] = await sched.encode([json('last')], wf('nightly-2025-01-01T00:00:00Z'));
    for (const next of ['nightly-2025-01-02T00:00:00Z', 'nightly-2024-12-31T00:00:00Z']) {
      expect(str((await sched.decode([last!], wf(next)))[0]!.data)).toBe('"last"');
      await expectCode(strict.decode([last!], wf(next)), ErrorCodes.PAYLOAD_TAMPERED);
    }
    for (const elsewhere of [
      'nightly', // the action's own id
      'nightlx-2025-01-02T00:00:00Z', // another action of the same length
      'nightly-2025-01-02T00:00:00Z-2025-01-03T00:00:00Z',
      'nightly-2025-01-02T00:00:00+01:00',
      'other-nightly-2025-01-02T00:00:00Z',
    ]) {
      await expectCode(sched.decode([last!], wf(elsewhere)), ErrorCodes.PAYLOAD_TAMPERED);
    }
  });

  it('an unknown format version is refused', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json('x')], wf('w'));
    const meta = { ...p!.metadata, 'encryption-format': utf8('tuc-aes256gcm-v2') };
    await expectCode(codec.decode([{ ...p!, metadata: meta }], wf('w')), ErrorCodes.PAYLOAD_TAMPERED);
  });
});

describe('AesGcmPayloadCodec: plaintext (fail closed)', () => {
  it('refuses plaintext payloads by default', async () => {
    const codec = makeCodec();
    await expectCode(codec.decode([json('plain')], wf('w')), ErrorCodes.PLAINTEXT_PAYLOAD);
    await expectCode(codec.decode([{ data: utf8('x') }], wf('w')), ErrorCodes.PLAINTEXT_PAYLOAD);
    await expectCode(
      codec.decode([{ metadata: { encoding: utf8('binary/null') } }], wf('w')),
      ErrorCodes.PLAINTEXT_PAYLOAD,
    );
  });

  it('passes through allow-listed encodings only', async () => {
    const codec = makeCodec({ allowPlaintextEncodings: ['binary/null'] });
    const nul = { metadata: { encoding: utf8('binary/null') } };
    expect((await codec.decode([nul], wf('w')))[0]).toBe(nul);
    await expectCode(codec.decode([json('plain')], wf('w')), ErrorCodes.PLAINTEXT_PAYLOAD);
  });

  it('one plaintext payload refuses the whole batch', async () => {
    const codec = makeCodec();
    const enc = await codec.encode([json(1)], wf('w'));
    await expectCode(codec.decode([...enc, json(2)], wf('w')), ErrorCodes.PLAINTEXT_PAYLOAD);
  });
});

describe('AesGcmPayloadCodec: hostile key ids (case 4)', () => {
  const hostile = [
    '../k1',
    '../../etc/passwd',
    'k1\u0000',
    'https://evil.example/jwks',
    '__proto__',
    'constructor',
    'x'.repeat(10_000),
    '',
    'k1\r\nINJECT',
  ];
  it.each(hostile.map((k) => [k.length > 40 ? `${k.slice(0, 20)}…(${k.length})` : JSON.stringify(k), k]))(
    'kid %s → KEY_UNKNOWN, no echo of the id',
    async (_label, kid) => {
      const codec = makeCodec();
      const [p] = await codec.encode([json(1)], wf('w'));
      const meta = { ...p!.metadata, 'encryption-key-id': utf8(kid) };
      const err = await expectCode(
        codec.decode([{ ...p!, metadata: meta }], wf('w')),
        ErrorCodes.KEY_UNKNOWN,
      );
      if (kid.length > 3) expect(err.message).not.toContain(kid);
    },
  );

  // No timed assertion (tests never time; speed belongs to benchmarks): this holds the refusal and its code.
  it('a 10 MB key id is refused as an unknown key', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json(1)], wf('w'));
    const meta = { ...p!.metadata, 'encryption-key-id': new Uint8Array(10 * 1024 * 1024).fill(65) };
    await expectCode(codec.decode([{ ...p!, metadata: meta }], wf('w')), ErrorCodes.KEY_UNKNOWN);
  });

  it('a missing or non-bytes key id is KEY_UNKNOWN', async () => {
    const codec = makeCodec();
    const [p] = await codec.encode([json(1)], wf('w'));
    const meta: Record<string, unknown> = { ...p!.metadata };
    delete meta['encryption-key-id'];
    await expectCode(
      codec.decode([{ ...p!, metadata: meta as Payload['metadata'] }], wf('w')),
      ErrorCodes.KEY_UNKNOWN,
    );
    meta['encryption-key-id'] = 'k1' as unknown;
    await expectCode(
      codec.decode([{ ...p!, metadata: meta as Payload['metadata'] }], wf('w')),
      ErrorCodes.KEY_UNKNOWN,
    );
  });

  it('inner metadata keys like __proto__ survive as plain keys', async () => {
    const codec = makeCodec();
    const meta = JSON.parse('{"__proto__": 1}') as Record<string, unknown>;
    meta['__proto__'] = utf8('p');
    Object.defineProperty(meta, '__proto__', { value: utf8('p'), enumerable: true });
    meta.encoding = utf8('json/plain');
    const [p] = await codec.encode(
      [{ metadata: meta as Record<string, Uint8Array>, data: utf8('1') }],
      wf('w'),
    );
    const [d] = await codec.decode([p!], wf('w'));
    expect(Object.getPrototypeOf(d!.metadata)).toBe(Object.prototype);
    expect(Object.keys(d!.metadata!)).toContain('__proto__');
    expect(str(d!.metadata!['__proto__'])).toBe('p');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('metadata keys round-trip beyond the bounded key cache, with same-length keys kept apart', async () => {
    // The framing remembers up to 64 key names; 200 distinct keys of equal length (and a long and a
    // non-ASCII one) must all decode to their own names whether or not they were remembered.
    const codec = makeCodec();
    for (let round = 0; round < 2; round++) {
      const metadata: Record<string, Uint8Array> = { encoding: utf8('json/plain') };
      for (let i = 0; i < 200; i++) metadata[`key-${String(i).padStart(4, '0')}`] = utf8(`v${i}`);
      metadata['k'.repeat(300)] = utf8('long');
      metadata['clé-ü'] = utf8('accents');
      const [p] = await codec.encode([{ metadata, data: utf8('1') }], wf('w'));
      const [d] = await codec.decode([p!], wf('w'));
      expect(Object.keys(d!.metadata!)).toEqual(Object.keys(metadata));
      for (const [key, value] of Object.entries(metadata)) expect(str(d!.metadata![key])).toBe(str(value));
    }
  });
});
