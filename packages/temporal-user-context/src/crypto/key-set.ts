import { z } from 'zod';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * The JSON key set format (see docs/keys.md). The edge's set holds Ed25519 private keys; a worker's set
 * is the same document without them (`npm run keys -- generate` writes both).
 */
const KID = /^[A-Za-z0-9._-]{1,64}$/;
// 32 bytes, canonical base64url without padding: the last character carries 4 bits and 2 zero bits, so
// only 16 of the 64 letters may end it (a file must have one spelling per key, as readers compare them).
const B64URL_32 = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

const okpJwk = z
  .object({
    kty: z.literal('OKP'),
    crv: z.literal('Ed25519'),
    x: z.string().regex(B64URL_32),
    d: z.string().regex(B64URL_32).optional(),
  })
  .strict();

/**
 * An AES-256 key. `active`: seals (exactly one); `staged`: added by `keys stage`, opens what the active
 * key of an already-activated holder seals, seals nothing yet; `decrypt-only`: retired, still opens what
 * it sealed.
 */
const secretKey = z
  .object({
    kid: z.string().regex(KID),
    status: z.enum(['active', 'staged', 'decrypt-only']),
    k: z.string().regex(B64URL_32),
  })
  .strict();

export const keySetSchema = z
  .object({
    version: z.literal(1),
    /** Issuer name written into and required from every token. */
    issuer: z.string().min(1).max(128),
    /**
     * Ed25519 signing keys. `active` (exactly one): signs (if it has `d`) and verifies; `staged`:
     * verifies, signs once activated; `verify-only`: retired, verifies tokens issued (`iat`) up to its
     * `notAfter` (epoch seconds, when set: `keys activate` sets it), so that a copy of its private half
     * taken before the rotation mints nothing new.
     */
    signing: z
      .array(
        z
          .object({
            kid: z.string().regex(KID),
            status: z.enum(['active', 'staged', 'verify-only']),
            jwk: okpJwk,
            notAfter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
          })
          .strict()
          .refine((k) => k.notAfter === undefined || k.status === 'verify-only', {
            message: 'notAfter is for retired (verify-only) keys only',
          }),
      )
      .min(1),
    /** AES-256 keys sealing tokens (JWE `dir` + A256GCM). */
    sealing: z.array(secretKey).min(1),
    /** HMAC key for pseudonyms (header hints, pseudonymised search attributes). Rotate with care. */
    pseudonym: z.object({ k: z.string().regex(B64URL_32) }).strict(),
    /** AES-256 keys of the payload codec. */
    codec: z.array(secretKey).default([]),
  })
  .strict();

/**
 * A lookup file: the pseudonym key alone (`keys export-pseudonym`), for operators who search history by
 * user. It opens no token and no payload, and signs nothing.
 */
export const pseudonymKeyFileSchema = keySetSchema
  .pick({ version: true, issuer: true, pseudonym: true })
  .strict();

/**
 * A key set as stored in `USER_CONTEXT_KEYS` or a key file (docs/operations.md "Keys"): what
 * `KeyRing.fromJSON` reads.
 */
export type KeySetJson = z.input<typeof keySetSchema>;
export type KeySet = z.output<typeof keySetSchema>;
export { KID as KID_PATTERN };

/** `raw` as a key set, or `USER_CONTEXT_MISCONFIGURED` naming the first field that is not one. */
export function parseKeySet(raw: unknown): KeySet {
  const parsed = keySetSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `key set: ${issue?.path.join('.')}: ${issue?.message}`,
    );
  }
  return parsed.data;
}
