import { createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { inspect } from 'node:util';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { CodecKeyMaterial } from './codec/keys.js';
import { parseKeySet, type KeySet, type KeySetJson } from './key-set.js';
import { isSmallOrderPoint } from './small-order.js';

/** An Ed25519 key of a ring: its public half always, its private half only for an edge ring's active key. */
export interface SigningKey {
  readonly kid: string;
  /** `active` signs (edge) and verifies; `staged` verifies, signs once activated; `verify-only`: retired. */
  readonly status: 'active' | 'staged' | 'verify-only';
  /** A retired key's cut-off: tokens it signed with a later `iat` (epoch seconds) are refused. */
  readonly notAfter?: number;
  readonly publicKey: KeyObject;
  readonly privateKey?: KeyObject;
}
/** A symmetric key of a ring (token sealing or payload codec). */
export interface SecretKey {
  readonly kid: string;
  /** `active` seals; `staged` opens, seals once activated; `decrypt-only`: retired, opens. */
  readonly status: 'active' | 'staged' | 'decrypt-only';
  readonly key: KeyObject;
  /**
   * Raw bytes, for the payload codec (node:crypto ciphers take them directly): a copy on every read, so
   * that no caller can change the ring's. Not enumerable: a debug log of the ring (`util.inspect` at any
   * depth, `JSON.stringify`) never prints them.
   */
  readonly raw: Uint8Array;
}

/**
 * Keys for issuing, verifying and sealing contexts, loaded once. A ring without Ed25519 private keys
 * (every worker's) can verify and open tokens but never issue one.
 */
export class KeyRing {
  /** The key set's issuer name: every token's `iss`, checked on opening. */
  readonly issuer: string;
  /** Ed25519 keys by key id: one `active` (signs, when the ring holds its private half), the rest verify only. */
  readonly signing: ReadonlyMap<string, SigningKey>;
  /** Token sealing keys (JWE `dir`/A256GCM) by key id: one `active`, the rest decrypt only. */
  readonly sealing: ReadonlyMap<string, SecretKey>;
  /** Payload codec keys by key id (empty when the set has none: the plugin's codec is then off). */
  readonly codec: ReadonlyMap<string, SecretKey>;
  /** HMAC-SHA256 key of the pseudonyms in headers, memo and search attributes. */
  readonly pseudonymKey: KeyObject;
  /**
   * True when the key set held any Ed25519 private half, active or not (the ring keeps only the active
   * one's). A worker's set should hold none: whoever reads its file could sign with any of them.
   */
  readonly holdsPrivateKey: boolean;

  private constructor(set: KeySet) {
    this.issuer = set.issuer;
    // Keys are found by id: a second key under one id would silently replace the first, so that tokens
    // made with the first stop opening (or the active key goes missing).
    for (const [what, keys] of [
      ['signing', set.signing],
      ['sealing', set.sealing],
      ['codec', set.codec],
    ] as const) {
      const kids = keys.map((k) => k.kid);
      if (new Set(kids).size !== kids.length)
        throw new UserContextError(ErrorCodes.MISCONFIGURED, `key set: duplicate ${what} key id`);
    }
    // Nor one id for keys of two kinds (found by review): `retire --kid` removes every key under the id,
    // and would take a key still needed with the one meant (generated ids never share one).
    const all = [...set.signing, ...set.sealing, ...set.codec].map((k) => k.kid);
    if (new Set(all).size !== all.length)
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: one key id names keys of two kinds');
    // Nor one Ed25519 key under two ids (found by review): a retired key restored under a new id, without
    // its cut-off, would let a copy of its private half sign past `notAfter` under the new id.
    const publicKeys = set.signing.map((k) => k.jwk.x);
    if (new Set(publicKeys).size !== publicKeys.length)
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: one signing key under two key ids');
    this.signing = new Map(set.signing.map((s) => [s.kid, signingKey(s)]));
    this.holdsPrivateKey = set.signing.some((s) => s.jwk.d !== undefined);
    this.sealing = secretMap(set.sealing);
    this.codec = secretMap(set.codec);
    this.pseudonymKey = createSecretKey(Buffer.from(set.pseudonym.k, 'base64url'));
    // Exactly one active key of each kind: with two, which one signs or seals would depend on file order.
    requireOneActive(set.signing, 'signing');
    requireOneActive(set.sealing, 'sealing');
    if (set.codec.length > 0) requireOneActive(set.codec, 'codec');
    requireDistinctSecrets([...set.sealing, ...set.codec, set.pseudonym].map((k) => k.k));
  }

  /** Key ids and statuses only: a ring in a debug log shows no key material. */
  [inspect.custom](): string {
    const ids = (keys: ReadonlyMap<string, { status: string }>) =>
      [...keys].map(([kid, k]) => `${kid} (${k.status})`).join(', ');
    return `KeyRing { issuer: ${JSON.stringify(this.issuer)}, signing: [${ids(this.signing)}], sealing: [${ids(this.sealing)}], codec: [${ids(this.codec)}], canIssue: ${this.canIssue} }`;
  }

  /** Parses a key set document (object or JSON text). Throws `USER_CONTEXT_MISCONFIGURED` when invalid. */
  static fromJSON(input: KeySetJson | string): KeyRing {
    let raw: unknown = input;
    if (typeof input === 'string') {
      try {
        raw = JSON.parse(input);
      } catch {
        throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set is not JSON');
      }
    }
    return new KeyRing(parseKeySet(raw));
  }

  /** Reads a key set file. */
  static fromFile(path: string): KeyRing {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      // The path is the operator's own configuration: named, with the system's reason (ENOENT, EISDIR).
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `key set file ${JSON.stringify(path)} not readable (${(err as { code?: string }).code ?? 'error'})`,
      );
    }
    warnIfShared(path);
    return KeyRing.fromJSON(text);
  }

  /**
   * Reads `USER_CONTEXT_KEYS` (JSON, or base64 of JSON) or, failing that, the file named by
   * `USER_CONTEXT_KEYS_FILE`. Throws `USER_CONTEXT_MISCONFIGURED` when neither is set.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): KeyRing {
    const inline = env.USER_CONTEXT_KEYS;
    if (inline)
      return KeyRing.fromJSON(
        inline.trimStart().startsWith('{') ? inline : Buffer.from(inline, 'base64').toString('utf8'),
      );
    if (env.USER_CONTEXT_KEYS_FILE) return KeyRing.fromFile(env.USER_CONTEXT_KEYS_FILE);
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'set USER_CONTEXT_KEYS or USER_CONTEXT_KEYS_FILE');
  }

  /** True when this ring holds an active Ed25519 private key, i.e. it may issue contexts (edge only). */
  get canIssue(): boolean {
    return this.activeSigningKey() !== undefined;
  }

  /** The active signing key with its private half, if this ring may issue. */
  activeSigningKey(): (SigningKey & { privateKey: KeyObject }) | undefined {
    for (const key of this.signing.values()) {
      if (key.status === 'active' && key.privateKey) return key as SigningKey & { privateKey: KeyObject };
    }
    return undefined;
  }

  /**
   * The key new context tokens are sealed with (JWE `dir`/A256GCM). Throws `USER_CONTEXT_MISCONFIGURED`
   * when the ring has no active sealing key.
   */
  activeSealingKey(): SecretKey {
    return active(this.sealing);
  }

  /**
   * The key the payload codec encrypts new payloads with. Throws `USER_CONTEXT_MISCONFIGURED` when the
   * ring has no active codec key.
   */
  activeCodecKey(): SecretKey {
    return active(this.codec);
  }

  /** The payload codec's key material, in the shape {@link AesGcmPayloadCodec} takes. */
  codecKeyMaterial(): CodecKeyMaterial {
    if (this.codec.size === 0)
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set has no codec keys');
    // The codec knows two states: a staged key decrypts until it is activated.
    return {
      keys: [...this.codec.values()].map((k) => ({
        kid: k.kid,
        // A copy: a caller that wipes the material once its codec is built (the codec copies it too)
        // must not zero the ring's own, which later codecs would then encrypt under (found by review).
        key: Uint8Array.from(k.raw),
        status: k.status === 'active' ? ('active' as const) : ('decrypt-only' as const),
      })),
    };
  }
}

/**
 * Warns (`USER_CONTEXT_KEY_FILE_MODE`, once per path) when a key set file is open to its group or to
 * others: every set holds secrets (sealing, codec, pseudonym keys), an edge's its signing key too. The
 * key tool writes 0600; a secret mounted by an orchestrator is often 0644 (found by review). A warning,
 * not a refusal: in a container the file's only reader may be the process itself.
 */
function warnIfShared(path: string): void {
  if (process.platform === 'win32' || warnedPaths.has(path)) return;
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  warnedPaths.add(path);
  process.emitWarning(
    `key set file ${JSON.stringify(path)} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}: readable or writable by its group or others; make it 0600`,
    { type: 'UserContextWarning', code: 'USER_CONTEXT_KEY_FILE_MODE' },
  );
}
const warnedPaths = new Set<string>();

function signingKey(s: KeySet['signing'][number]): SigningKey {
  const misconfigured = (why: string) =>
    new UserContextError(ErrorCodes.MISCONFIGURED, `key set: signing key ${s.kid}: ${why}`);
  if (isSmallOrderPoint(Buffer.from(s.jwk.x, 'base64url')))
    throw misconfigured('public key of small order (a forged signature would verify)');
  const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: s.jwk.x }, format: 'jwk' });
  const retired = s.notAfter === undefined ? {} : { notAfter: s.notAfter };
  if (!s.jwk.d) return { kid: s.kid, status: s.status, ...retired, publicKey };
  const privateKey = createPrivateKey({ key: { ...s.jwk }, format: 'jwk' });
  // A private half that is not the public half's would sign tokens that no worker verifies.
  const derived = createPublicKey(privateKey).export({ format: 'jwk' }) as { x?: string };
  if (derived.x !== s.jwk.x) throw misconfigured('d is not the private key of x');
  // Only the active key signs: a staged or retired key's private half is not kept in memory.
  return {
    kid: s.kid,
    status: s.status,
    ...retired,
    publicKey,
    ...(s.status === 'active' ? { privateKey } : {}),
  };
}

function secretMap(keys: KeySet['sealing']): Map<string, SecretKey> {
  return new Map(
    keys.map((k) => {
      const raw = new Uint8Array(Buffer.from(k.k, 'base64url'));
      const key: SecretKey = { kid: k.kid, status: k.status, key: createSecretKey(raw) } as SecretKey;
      Object.defineProperty(key, 'raw', { get: () => Uint8Array.from(raw), enumerable: false });
      return [k.kid, key];
    }),
  );
}

/**
 * Refuses a secret made of one repeated byte (all zeros: an unfilled template) and a secret used twice,
 * under two key ids or for two purposes (sealing, codec, pseudonyms): each purpose's keys must be
 * independent, or opening one kind of ciphertext would open another.
 */
function requireDistinctSecrets(secrets: readonly string[]): void {
  for (const k of secrets) {
    const bytes = Buffer.from(k, 'base64url');
    if (bytes.every((b) => b === bytes[0]))
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: a secret key is one repeated byte');
  }
  if (new Set(secrets).size !== secrets.length)
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: a secret key is used twice');
}

function requireOneActive(keys: ReadonlyArray<{ status: string }>, what: string): void {
  if (keys.filter((k) => k.status === 'active').length !== 1) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `key set: exactly one active ${what} key required`);
  }
}

function active(keys: ReadonlyMap<string, SecretKey>): SecretKey {
  for (const key of keys.values()) if (key.status === 'active') return key;
  throw new UserContextError(ErrorCodes.MISCONFIGURED, 'no active key');
}
