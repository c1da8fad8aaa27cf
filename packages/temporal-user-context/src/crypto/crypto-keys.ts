import { webcrypto, type KeyObject } from 'node:crypto';

// jose 6 runs on WebCrypto. Handing it a KeyObject makes it convert the key on every call, which
// costs more than the cryptography itself (measured: AES-GCM decrypt 580 µs with a KeyObject vs
// 110 µs with a CryptoKey). Keys are converted once and memoised here.
const cache = new WeakMap<KeyObject, Promise<webcrypto.CryptoKey>>();

function memo(key: KeyObject, make: () => Promise<webcrypto.CryptoKey>): Promise<webcrypto.CryptoKey> {
  let found = cache.get(key);
  if (!found) {
    found = make();
    cache.set(key, found);
  }
  return found;
}

/** AES-256-GCM key for JWE `dir` / A256GCM. */
export function aesKey(key: KeyObject): Promise<webcrypto.CryptoKey> {
  return memo(key, () =>
    webcrypto.subtle.importKey('raw', key.export(), 'AES-GCM', false, ['encrypt', 'decrypt']),
  );
}

/** Ed25519 public key for `EdDSA` verification. */
export function ed25519PublicKey(key: KeyObject): Promise<webcrypto.CryptoKey> {
  return memo(key, () =>
    webcrypto.subtle.importKey(
      'spki',
      key.export({ format: 'der', type: 'spki' }),
      { name: 'Ed25519' },
      false,
      ['verify'],
    ),
  );
}

/** Ed25519 private key for `EdDSA` signing (edge only). */
export function ed25519PrivateKey(key: KeyObject): Promise<webcrypto.CryptoKey> {
  return memo(key, () =>
    webcrypto.subtle.importKey(
      'pkcs8',
      key.export({ format: 'der', type: 'pkcs8' }),
      { name: 'Ed25519' },
      false,
      ['sign'],
    ),
  );
}
