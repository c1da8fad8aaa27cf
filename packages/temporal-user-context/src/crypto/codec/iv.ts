import { randomFillSync } from 'node:crypto';
import { IV_BYTES } from './format.js';

// One CSPRNG call per 512 IVs instead of one per payload: for 1 KiB payloads the per-call overhead of
// randomBytes() is a measurable share of the whole encryption.
const POOL_IVS = 512;
let pool = Buffer.allocUnsafe(0);
let offset = 0;

/**
 * A fresh random 96-bit IV. Never reused: a consumed slice is never handed out again, and a refill
 * allocates a new pool, so a caller that kept an old IV sees it unchanged. Random IVs are safe up to
 * about 2^32 encryptions per key (NIST SP 800-38D); rotate keys long before that.
 */
export function nextIv(): Buffer {
  if (offset + IV_BYTES > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_IVS * IV_BYTES));
    offset = 0;
  }
  const iv = pool.subarray(offset, offset + IV_BYTES);
  offset += IV_BYTES;
  return iv;
}
