import { CompactEncrypt, compactDecrypt } from 'jose';
import { z } from 'zod';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { assertCanonicalDirJwe } from './canonical.js';
import type { KeyRing } from './keyring.js';
import { joseFailure, knownKid } from './open.js';
import { parseJsonUniqueKeys } from '../header/unique-keys.js';

/** Marks an operation token this plugin sealed; what follows is a compact JWE. */
const PREFIX = 'tuc1.';
/**
 * JWE `cty` of a sealed operation token. The protected header is authenticated, so a context token
 * (`cty: JWT`, same keys) never opens as an operation token, nor the other way round.
 */
export const OPERATION_TOKEN_TYPE = 'tuc-nexus-op+json';
/**
 * The server refuses operation tokens over 4 096 characters by default (a namespace may set
 * `component.nexusoperations.limit.operation.token.length` lower: docs/wire-format.md, _Limits_).
 */
const MAX_CHARS = 4096;

/** Who started a Nexus operation, and where, as the handler's guard established it at the start. */
export interface OperationBinding {
  /** The operation token the handler itself returned. */
  tok: string;
  /** The caller's namespace and workflow id, and its run id when the request named one. */
  ns: string;
  wf: string;
  run?: string;
  /** `jti` of the context token the operation was started with. */
  jti: string;
  /** The operation: the handler's namespace, the endpoint, service and operation names. */
  at: { ns: string; ep: string; svc: string; op: string };
}

const bindingSchema = z.strictObject({
  tok: z.string().min(1).max(MAX_CHARS),
  ns: z.string().min(1).max(1000),
  wf: z.string().min(1).max(1000),
  run: z.string().min(1).max(1000).optional(),
  jti: z.string().min(1).max(200),
  at: z.strictObject({
    ns: z.string().min(1).max(1000),
    ep: z.string().max(1000),
    svc: z.string().min(1).max(1000),
    op: z.string().min(1).max(1000),
  }),
});

/**
 * Seals the handler's operation token together with who started the operation (`dir`/A256GCM with the
 * ring's active sealing key), so that a cancel can later be held to the same caller and context token.
 * Throws `USER_CONTEXT_TOO_LARGE` when the sealed token would pass the server's length limit, and
 * `USER_CONTEXT_INVALID` for a binding {@link openOperationToken} would refuse (an id over its cap):
 * sealed anyway, it would only fail every cancel later.
 */
export async function sealOperationToken(ring: KeyRing, binding: OperationBinding): Promise<string> {
  if (!bindingSchema.safeParse(binding).success)
    throw new UserContextError(ErrorCodes.INVALID, 'operation binding out of the sealed token format');
  const seal = ring.activeSealingKey();
  const jwe = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(binding)))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: OPERATION_TOKEN_TYPE })
    .encrypt(seal.key);
  const token = PREFIX + jwe;
  if (token.length > MAX_CHARS)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'sealed operation token over the server limit');
  return token;
}

/**
 * Opens an operation token sealed by {@link sealOperationToken}. Anything else (a token this plugin
 * did not seal, one sealed with a key the ring no longer holds, one altered) is a refusal:
 * `USER_CONTEXT_LINEAGE_MISMATCH` for a token that is not sealed, otherwise the opening failure.
 */
export async function openOperationToken(ring: KeyRing, token: string): Promise<OperationBinding> {
  if (!token.startsWith(PREFIX))
    throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the operation token is not bound to a caller');
  if (token.length > MAX_CHARS)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'operation token over size cap');
  assertCanonicalDirJwe(token.slice(PREFIX.length), 'operation token');
  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(
      token.slice(PREFIX.length),
      (header) => {
        if (
          header.alg !== 'dir' ||
          header.enc !== 'A256GCM' ||
          header.zip !== undefined ||
          header.cty !== OPERATION_TOKEN_TYPE
        ) {
          throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'not a sealed operation token');
        }
        const sealKey = ring.sealing.get(knownKid(header.kid));
        if (!sealKey) throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown sealing key id');
        return sealKey.key;
      },
      { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] },
    ));
  } catch (err) {
    throw joseFailure(err, 'operation token does not decrypt');
  }
  let raw: unknown;
  try {
    raw = parseJsonUniqueKeys(new TextDecoder().decode(plaintext));
  } catch {
    throw new UserContextError(
      ErrorCodes.TOKEN_INVALID,
      'sealed operation token is not JSON (or repeats a key)',
    );
  }
  const binding = bindingSchema.safeParse(raw);
  if (!binding.success)
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'sealed operation token is malformed');
  return binding.data;
}
