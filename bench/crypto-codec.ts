/**
 * Throughput of {@link AesGcmPayloadCodec} (encode + decode of one payload) against the leanest
 * correct use of node:crypto AES-256-GCM on the same buffers: random IV, encrypt, tag, self-contained
 * `iv | ciphertext | tag` blob, then decrypt and verify (no cipher options: like the codec, it relies on
 * GCM's default 16-byte tag and always passes exactly the last 16 bytes as the tag). Both run in the same process, interleaved
 * round by round so that CPU frequency and GC drift hit both alike. Throughputs are medians over the
 * rounds; the ratio is the median of the per-round ratios.
 *
 * `npm run bench:crypto` runs it in a process of its own; alone: `npx tsx bench/crypto-codec.ts`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, SerializationContext } from '@temporalio/common';
import { AesGcmPayloadCodec } from '../packages/temporal-user-context/src/crypto/payload-codec.js';

export type CodecBenchSize = '1KiB' | '64KiB' | '1MiB';
export interface CodecBenchResult {
  /** Codec encode + decode, MB (10^6 bytes) of payload data per second. */
  codecMBps: number;
  /** Raw AES-256-GCM encrypt + decrypt of the same data, MB/s. */
  rawMBps: number;
  /** codecMBps / rawMBps: 1 means the codec adds nothing over the cipher. */
  codecRatio: number;
}

const SIZES: Record<CodecBenchSize, number> = { '1KiB': 1024, '64KiB': 64 * 1024, '1MiB': 1024 * 1024 };
const ROUNDS = Number(process.env.BENCH_CODEC_ROUNDS ?? 41);
const TARGET_MS = 40;

export async function benchCodec(): Promise<Record<CodecBenchSize, CodecBenchResult>> {
  const keyBytes = randomBytes(32);
  const codec = new AesGcmPayloadCodec({
    keys: { keys: [{ kid: 'bench', key: keyBytes, status: 'active' }] },
    namespace: 'default',
  });
  const context: SerializationContext = {
    type: 'workflow',
    namespace: 'default',
    workflowId: 'bench-workflow-1',
  };
  const encoding = new TextEncoder().encode('json/plain');
  const out = {} as Record<CodecBenchSize, CodecBenchResult>;

  for (const [name, size] of Object.entries(SIZES) as [CodecBenchSize, number][]) {
    const data = randomBytes(size);
    const payload: Payload = { metadata: { encoding }, data };

    const codecOp = async (): Promise<void> => {
      const enc = await codec.encode([payload], context);
      const dec = await codec.decode(enc, context);
      if (dec[0]!.data!.byteLength !== size) throw new Error('codec round trip broken');
    };
    const rawOp = async (): Promise<void> => {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', keyBytes, iv);
      const ct = cipher.update(data);
      cipher.final();
      const blob = Buffer.concat([iv, ct, cipher.getAuthTag()]);
      const decipher = createDecipheriv('aes-256-gcm', keyBytes, blob.subarray(0, 12));
      decipher.setAuthTag(blob.subarray(blob.length - 16));
      const pt = decipher.update(blob.subarray(12, blob.length - 16));
      decipher.final();
      if (pt.byteLength !== size) throw new Error('raw round trip broken');
    };

    // Calibrate the iteration count on the raw op, then warm both up (JIT, buffer pools).
    const iterations = await calibrate(rawOp);
    await time(codecOp, iterations);
    await time(rawOp, iterations);

    const codecTimes: number[] = [];
    const rawTimes: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which goes first so neither always runs on a freshly collected heap.
      if (r % 2 === 0) {
        codecTimes.push(await time(codecOp, iterations));
        rawTimes.push(await time(rawOp, iterations));
      } else {
        rawTimes.push(await time(rawOp, iterations));
        codecTimes.push(await time(codecOp, iterations));
      }
    }
    const bytes = size * iterations;
    const codecMBps = bytes / 1e6 / (median(codecTimes) / 1000);
    const rawMBps = bytes / 1e6 / (median(rawTimes) / 1000);
    // Each round's pair ran back to back, so its ratio is what drift affects least.
    const ratios = codecTimes.map((codecMs, r) => rawTimes[r]! / codecMs);
    out[name] = {
      codecMBps: round(codecMBps),
      rawMBps: round(rawMBps),
      codecRatio: round(median(ratios), 3),
    };
  }
  return out;
}

async function time(op: () => Promise<void>, iterations: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) await op();
  return performance.now() - t0;
}

async function calibrate(op: () => Promise<void>): Promise<number> {
  let n = 1;
  for (;;) {
    const ms = await time(op, n);
    if (ms >= TARGET_MS / 4 || n >= 1 << 20)
      return Math.max(1, Math.round((n * TARGET_MS) / Math.max(ms, 0.001)));
    n *= 2;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchCodec();
  // bench/crypto.ts runs this file in a child process and reads the JSON.
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify(result));
  else console.table(result);
}
