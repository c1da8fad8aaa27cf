import type { Payload } from '@temporalio/common';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UserContextError } from '../../src/context/errors.js';
import { makeCodec, wf } from './codec-helpers.js';

const codec = makeCodec({ allowPlaintextEncodings: ['binary/null'] });

/** Decoding must either succeed or throw a UserContextError — never another type, never hang. */
async function onlyUserContextErrors(payloads: Payload[], ctx = wf('w')): Promise<void> {
  try {
    await codec.decode(payloads, ctx);
  } catch (err) {
    if (!(err instanceof UserContextError)) throw new Error(`unexpected ${String(err)}`, { cause: err });
  }
}

const bytes = fc.uint8Array({ maxLength: 300 });
const metadataValue = fc.oneof(
  bytes,
  fc.constantFrom(
    new TextEncoder().encode('binary/encrypted'),
    new TextEncoder().encode('tuc-aes256gcm-v1'),
    new TextEncoder().encode('k1'),
    new TextEncoder().encode('w'),
  ),
  // Not bytes at all: what a hostile or buggy caller might put in.
  fc.anything() as fc.Arbitrary<Uint8Array>,
);
const metadataKey = fc.oneof(
  fc.constantFrom(
    'encoding',
    'encryption-key-id',
    'encryption-format',
    'encryption-workflow-id',
    '__proto__',
  ),
  fc.string({ maxLength: 20 }),
);
const randomPayload: fc.Arbitrary<Payload> = fc.record(
  {
    metadata: fc.oneof(fc.constant(null), fc.dictionary(metadataKey, metadataValue, { maxKeys: 5 })),
    data: fc.oneof(fc.constant(null), bytes, fc.anything() as fc.Arbitrary<Uint8Array>),
  },
  { requiredKeys: [] },
);

describe('AesGcmPayloadCodec: property tests', () => {
  it('random payloads (and non-payloads) produce only UserContextError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(randomPayload, fc.anything() as fc.Arbitrary<Payload>), { maxLength: 4 }),
        async (payloads) => onlyUserContextErrors(payloads),
      ),
      { numRuns: 2000 },
    );
  });

  it('mutations of real ciphertext never decode to something else and throw only UserContextError', async () => {
    const original = new TextEncoder().encode(JSON.stringify({ secret: 'x'.repeat(100) }));
    const [good] = await codec.encode(
      [{ metadata: { encoding: new TextEncoder().encode('json/plain') }, data: original }],
      wf('w'),
    );
    const mutation = fc.record({
      // Distinct positions: two flips of one byte with the same value would cancel out.
      flips: fc.uniqueArray(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
        minLength: 1,
        maxLength: 4,
        selector: ([at]) => at % good!.data!.length,
      }),
      cut: fc.option(fc.nat()),
      metaKey: fc.option(
        fc.constantFrom('encoding', 'encryption-key-id', 'encryption-format', 'encryption-workflow-id'),
      ),
      metaValue: bytes,
    });
    await fc.assert(
      fc.asyncProperty(mutation, async ({ flips, cut, metaKey, metaValue }) => {
        const data = new Uint8Array(good!.data!);
        for (const [at, x] of flips) data[at % data.length]! ^= x;
        const cutData = cut === null ? data : data.subarray(0, cut % (data.length + 1));
        const metadata = { ...good!.metadata };
        if (metaKey !== null) metadata[metaKey] = metaValue;
        try {
          await codec.decode([{ metadata, data: cutData }], wf('w'));
          expect.unreachable('mutated ciphertext decoded');
        } catch (err) {
          expect(err).toBeInstanceOf(UserContextError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips arbitrary payloads under arbitrary workflow ids', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.string({ maxLength: 30 }), fc.uint8Array({ maxLength: 50 }), { maxKeys: 4 }),
        fc.uint8Array({ maxLength: 2000 }),
        fc.string({ minLength: 1, maxLength: 200, unit: 'grapheme' }),
        async (metadata, data, workflowId) => {
          const [enc] = await codec.encode([{ metadata, data }], wf(workflowId));
          const [dec] = await codec.decode([enc!], wf(workflowId));
          expect({ ...dec!.metadata }).toEqual(
            Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, Buffer.from(v)])),
          );
          expect(Buffer.from(dec!.data!).equals(Buffer.from(data))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
