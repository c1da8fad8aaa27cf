import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { type KeySetJson } from './key-set.js';
import { KeyRing } from './keyring.js';

function secret(): string {
  return randomBytes(32).toString('base64url');
}

function kid(prefix: string): string {
  return `${prefix}-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Generates a fresh key set. Returns the edge's set (with the Ed25519 private key) and the worker's
 * set (the same without it): give workers only the second.
 */
export function generateKeySet(issuer: string): { edge: KeySetJson; worker: KeySetJson } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' }) as { x: string; d: string };
  const edge: KeySetJson = {
    version: 1,
    issuer,
    signing: [{ kid: kid('sig'), status: 'active', jwk: { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d } }],
    sealing: [{ kid: kid('seal'), status: 'active', k: secret() }],
    pseudonym: { k: secret() },
    codec: [{ kid: kid('codec'), status: 'active', k: secret() }],
  };
  return { edge: checkedKeySet(edge), worker: workerKeySet(edge) };
}

/**
 * `set` when it is a key set `KeyRing.fromJSON` would take, else `USER_CONTEXT_MISCONFIGURED` (found by
 * review: `stageKeySet({})` failed with a TypeError, and `generateKeySet('')` made a set no ring takes).
 */
function checkedKeySet(set: KeySetJson): KeySetJson {
  // The ring's own checks too (one active key of each kind, distinct secrets and public keys), not only
  // the schema: found by review, the comment promised what only the schema checked.
  KeyRing.fromJSON(set);
  return set;
}

/** The worker's view of a key set: every private signing key removed. */
export function workerKeySet(set: KeySetJson): KeySetJson {
  checkedKeySet(set);
  return { ...set, signing: set.signing.map((s) => ({ ...s, jwk: publicHalf(s.jwk) })) };
}

type SigningEntry = KeySetJson['signing'][number];
type SecretEntry = KeySetJson['sealing'][number];

/**
 * First step of a rotation: adds a fresh key of each kind as `staged` (a codec key only if the set
 * already has codec keys), changing nothing else. Holders of a staged set open and verify what the new
 * keys make but still seal, sign and encrypt with the current ones, so the staged set can be rolled out
 * to every edge, worker and codec server in any order. Then {@link activateKeySet}. Throws
 * `USER_CONTEXT_MISCONFIGURED` when keys are already staged.
 */
export function stageKeySet(set: KeySetJson): KeySetJson {
  checkedKeySet(set);
  const staged = [...set.signing, ...set.sealing, ...(set.codec ?? [])].some((k) => k.status === 'staged');
  if (staged)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'key set: keys are already staged; activate them first',
    );
  requireEdgeSet(set);
  const next = generateKeySet(set.issuer).edge;
  const stage = <T extends { status: string }>(k: T): T => ({ ...k, status: 'staged' });
  return {
    ...set,
    signing: [...set.signing, ...next.signing.map(stage)],
    sealing: [...set.sealing, ...next.sealing.map(stage)],
    // A set without codec keys has payload encryption off: a rotation must not switch it on.
    ...(set.codec && set.codec.length > 0 ? { codec: [...set.codec, ...(next.codec ?? []).map(stage)] } : {}),
  };
}

/** Options of {@link activateKeySet} and {@link rotateKeySet}. */
export interface ActivateOptions {
  /**
   * How long (seconds, default 86 400) edges still holding the set before this one may go on signing
   * with the retired key: tokens it signed with a later `iat` are refused (its `notAfter`). Size it for
   * the rollout of the activated set to every edge.
   */
  graceSeconds?: number;
  /** The activation time (epoch ms, default now); for tests. */
  now?: number;
}

/**
 * Second step of a rotation, once every holder has the staged set: each staged key becomes `active` and
 * the key it replaces is retired (`verify-only` without its private half: nobody signs with a retired key;
 * `decrypt-only`). The retired signing key verifies only tokens issued up to the activation plus
 * `graceSeconds` (`notAfter`): a copy of its private half (an old backup of the edge set) mints nothing
 * that workers take afterwards. Kinds with nothing staged are left as they are. Throws
 * `USER_CONTEXT_MISCONFIGURED` when nothing is staged.
 */
export function activateKeySet(set: KeySetJson, options: ActivateOptions = {}): KeySetJson {
  checkedKeySet(set);
  requireEdgeSet(set);
  const codec = set.codec ?? [];
  if (![...set.signing, ...set.sealing, ...codec].some((k) => k.status === 'staged'))
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: no staged keys to activate; stage first');
  const decryptOnly = (k: SecretEntry): SecretEntry => ({ ...k, status: 'decrypt-only' });
  const grace = numberOption('graceSeconds', options.graceSeconds, 86_400, {
    min: 0,
    max: 366 * 86_400,
    integer: true,
  });
  const notAfter = Math.floor((options.now ?? Date.now()) / 1000) + grace;
  return {
    ...set,
    signing: promote(set.signing, (k) => ({
      ...k,
      status: 'verify-only',
      jwk: publicHalf(k.jwk),
      notAfter,
    })),
    sealing: promote(set.sealing, decryptOnly),
    ...(set.codec ? { codec: promote(set.codec, decryptOnly) } : {}),
  };
}

/**
 * Removes a retired key (or a staged one, to abandon a rotation) by key id. What it sealed or signed no
 * longer opens: do it once no history that may be replayed or read, no running lineage and no schedule
 * uses it (docs/operations.md, _Rotation_), or at once when the key leaked. The active key cannot be
 * removed (`USER_CONTEXT_MISCONFIGURED`), nor an id the set does not hold.
 */
export function retireKey(set: KeySetJson, kid: string): KeySetJson {
  checkedKeySet(set);
  requireEdgeSet(set);
  const all = [...set.signing, ...set.sealing, ...(set.codec ?? [])];
  const found = all.filter((k) => k.kid === kid);
  if (found.length === 0)
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'key set: no key with that id');
  if (found.some((k) => k.status === 'active'))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'key set: an active key cannot be removed; rotate first',
    );
  return {
    ...set,
    signing: set.signing.filter((k) => k.kid !== kid),
    sealing: set.sealing.filter((k) => k.kid !== kid),
    ...(set.codec ? { codec: set.codec.filter((k) => k.kid !== kid) } : {}),
  };
}

/**
 * Both steps at once: {@link stageKeySet} then {@link activateKeySet}. Safe only when every holder
 * receives the new set at the same moment (or after a leak, when breaking what the old keys made is the
 * point): a holder still on the old set cannot open what the new keys make.
 */
export function rotateKeySet(set: KeySetJson, options: ActivateOptions = {}): KeySetJson {
  return activateKeySet(stageKeySet(set), options);
}

/**
 * Rotations work on the edge set and workers get `workerKeySet` of the result: a worker's set (no
 * private halves) staged would put a private key into a worker's file, and activated or trimmed it would
 * be written back as an edge set that cannot issue.
 */
function requireEdgeSet(set: KeySetJson): void {
  if (!set.signing.some((k) => k.status === 'active' && k.jwk.d))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'key set: rotate the edge set (it holds the private signing key), then give workers workerKeySet of it',
    );
}

/** One kind's keys after activation: its staged key active, the active one `retire`d; untouched if none is staged. */
function promote<K extends SigningEntry | SecretEntry>(keys: readonly K[], retire: (k: K) => K): K[] {
  if (!keys.some((k) => k.status === 'staged')) return [...keys];
  return keys.map((k) => {
    if (k.status === 'staged') return { ...k, status: 'active' };
    if (k.status === 'active') return retire(k);
    return k;
  });
}

function publicHalf(jwk: SigningEntry['jwk']): SigningEntry['jwk'] {
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x };
}
