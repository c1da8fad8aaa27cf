/**
 * Ed25519 public keys of small order (the identity, the point of order 2, those of order 4 and 8, and
 * their non-canonical encodings), as libsodium's `ge25519_has_small_order` lists them. Under such a key
 * a signature with R = the identity and S = 0 verifies for every message whose hash is a multiple of
 * the point's order — under the identity, for every message — and node:crypto (OpenSSL) accepts these
 * keys. A key set holding one would let anyone who can seal tokens (every worker) forge contexts.
 */
const SMALL_ORDER: readonly string[] = [
  '0000000000000000000000000000000000000000000000000000000000000000', // 0 (order 4)
  '0100000000000000000000000000000000000000000000000000000000000000', // 1, the identity (order 1)
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p - 1 (order 2)
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p, i.e. 0 (order 4)
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p + 1, i.e. 1 (order 1)
];

/** True when the 32-byte encoded point is of small order, whatever the sign bit of its last byte. */
export function isSmallOrderPoint(encoded: Uint8Array): boolean {
  if (encoded.length !== 32) return false;
  const hex = Buffer.from(encoded).toString('hex');
  // The top bit of the last byte is the x sign bit: both signs of each point are listed by masking it.
  const masked = hex.slice(0, 62) + (encoded[31]! & 0x7f).toString(16).padStart(2, '0');
  return SMALL_ORDER.includes(masked);
}
