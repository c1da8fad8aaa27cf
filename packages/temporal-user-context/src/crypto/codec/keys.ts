import { createSecretKey, type KeyObject } from 'node:crypto';
import { ErrorCodes, UserContextError } from '../../context/errors.js';
import { KEY_BYTES, KID_PATTERN } from './format.js';

/** One AES-256 key of the payload codec, as the key ring hands it over. */
export interface CodecKey {
  /** Key id, stored in clear in every payload it encrypts. `[A-Za-z0-9._-]{1,64}`. */
  kid: string;
  /** 32 random bytes. Copied on load: later changes to the caller's array have no effect. */
  key: Uint8Array;
  /** `active`: encrypts and decrypts (exactly one). `decrypt-only`: retired, still opens old payloads. */
  status: 'active' | 'decrypt-only';
}

/** Key material accepted by the codec: the shape the key ring produces. */
export interface CodecKeyMaterial {
  keys: readonly CodecKey[];
}

/** A loaded key: id, its UTF-8 bytes (written into metadata as is), and the node:crypto key object. */
export interface LoadedKey {
  readonly kid: string;
  readonly kidBytes: Uint8Array;
  readonly key: KeyObject;
}

/** Validated, indexed key material. Immutable; rotation builds a new one. */
export interface CodecKeys {
  readonly active: LoadedKey;
  /** Every key (active and decrypt-only) by id. A Map, so ids like `__proto__` are plain strings. */
  readonly byKid: ReadonlyMap<string, LoadedKey>;
}

/**
 * Validates and indexes key material. Throws `USER_CONTEXT_MISCONFIGURED` on anything that would make
 * encryption ambiguous or weak: no or several active keys, duplicate ids, bad ids, wrong key length.
 */
export function loadCodecKeys(material: CodecKeyMaterial): CodecKeys {
  const list = material?.keys;
  if (!Array.isArray(list) || list.length === 0) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: no keys');
  }
  const byKid = new Map<string, LoadedKey>();
  let active: LoadedKey | undefined;
  for (const entry of list) {
    if (typeof entry?.kid !== 'string' || !KID_PATTERN.test(entry.kid)) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: key id must match [A-Za-z0-9._-]{1,64}');
    }
    if (byKid.has(entry.kid)) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, `codec: duplicate key id ${entry.kid}`);
    }
    if (!(entry.key instanceof Uint8Array) || entry.key.byteLength !== KEY_BYTES) {
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `codec: key ${entry.kid} must be ${KEY_BYTES} bytes`,
      );
    }
    // As a key set refuses them (keyring.ts): one repeated byte (all zeros: an unfilled template, or
    // material wiped before it was loaded) and the same bytes under two ids.
    if (entry.key.every((b: number) => b === entry.key[0])) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, `codec: key ${entry.kid} is one repeated byte`);
    }
    for (const other of list) {
      if (other === entry) break;
      if (other.key instanceof Uint8Array && Buffer.compare(other.key, entry.key) === 0)
        throw new UserContextError(ErrorCodes.MISCONFIGURED, `codec: key ${entry.kid} repeats another key`);
    }
    if (entry.status !== 'active' && entry.status !== 'decrypt-only') {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, `codec: key ${entry.kid} has an unknown status`);
    }
    const loaded: LoadedKey = {
      kid: entry.kid,
      kidBytes: Buffer.from(entry.kid, 'utf8'),
      // createSecretKey copies the bytes into a KeyObject, which node:crypto ciphers take directly.
      key: createSecretKey(entry.key),
    };
    byKid.set(entry.kid, loaded);
    if (entry.status === 'active') {
      if (active) throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: more than one active key');
      active = loaded;
    }
  }
  if (!active) throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: no active key');
  return { active, byKid };
}
