import type { Payload, PayloadCodec, SerializationContext } from '@temporalio/common';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { buildAad } from './codec/aad.js';
import { equalBytes } from './codec/bytes.js';
import { bindingOf, checkBinding } from './codec/binding.js';
import {
  ENCODING_ENCRYPTED_BYTES,
  FORMAT_V1_BYTES,
  MAX_KID_BYTES,
  MAX_WORKFLOW_ID_BYTES,
  META_ENCODING,
  META_FORMAT,
  META_KEY_ID,
  META_WORKFLOW_ID,
} from './codec/format.js';
import { loadCodecKeys, type CodecKeyMaterial, type CodecKeys, type LoadedKey } from './codec/keys.js';
import { openPayload } from './codec/open.js';
import { sealPayload } from './codec/seal.js';

export type { CodecKey, CodecKeyMaterial } from './codec/keys.js';
export { ENCODING_ENCRYPTED, FORMAT_V1, META_FORMAT, META_KEY_ID, META_WORKFLOW_ID } from './codec/format.js';

/** Options of {@link AesGcmPayloadCodec}. */
export interface AesGcmPayloadCodecOptions {
  /** AES-256 keys: exactly one `active` (encrypts), any number `decrypt-only` (retired). */
  keys: CodecKeyMaterial;
  /**
   * Namespace bound into the AAD when the SDK passes no serialization context (the codec server, the
   * CLI, direct calls). With a context, the context's namespace is used.
   */
  namespace: string;
  /**
   * `metadata.encoding` values that decode may pass through unencrypted, e.g. `['binary/null']`.
   * Default: none — every unencrypted payload is refused with `USER_CONTEXT_PLAINTEXT_PAYLOAD`.
   */
  allowPlaintextEncodings?: readonly string[];
  /**
   * Accept a payload bound to workflow `X` inside workflow `X-<RFC 3339 time>`: the id the Temporal
   * scheduler gives each run of a schedule whose action was encoded for `X`; and one bound to a run
   * `X-<time>` inside another run `X-<other time>`: the previous run's result or failure, which the
   * scheduler hands the next run. Needed for schedules; it lets such ciphertext also be replayed into a
   * workflow an attacker names `X-<time>`. Default false.
   */
  acceptScheduledRuns?: boolean;
  /**
   * Accept namespace-only ciphertext inside a workflow. Off by default. Needed for Nexus: the SDK gives
   * Nexus handlers no workflow context, so operation results come back bound to the namespace only.
   * Turning it on lets namespace-only ciphertext (Nexus results, `/encode` output) be moved between
   * workflows of one namespace; workflow-bound ciphertext stays bound.
   */
  acceptNamespaceBound?: boolean;
  /**
   * Called with every decode refusal (the plugin audits them), with what the SDK said the payload is
   * for: its namespace, workflow and, in an activity context, the activity. Must not throw.
   */
  onRefusal?: (
    err: UserContextError,
    binding: { namespace: string; workflowId: string | undefined; activityId?: string },
  ) => void;
}

/**
 * Temporal payload codec: AES-256-GCM with `node:crypto`, one random 96-bit IV per payload, key id and
 * format version in metadata, AAD binding each ciphertext to its namespace and workflow id (from the
 * SDK's serialization context). Fails closed: plaintext, unknown keys, tampered or moved ciphertext are
 * refused with a {@link UserContextError}; decode never throws anything else.
 */
export class AesGcmPayloadCodec implements PayloadCodec {
  /** Namespace used when the SDK gives no serialization context (see {@link forNamespace}). */
  readonly namespace: string;
  private keys: CodecKeys;
  private readonly plaintextEncodings: ReadonlySet<string>;
  private readonly acceptScheduledRuns: boolean;
  private readonly acceptNamespaceBound: boolean;
  private readonly onRefusal: AesGcmPayloadCodecOptions['onRefusal'];
  // One-entry cache: a batch (and usually a whole activation) shares one namespace/workflow/key.
  private cacheNs = '';
  private cacheWf: string | undefined;
  private cacheKey: LoadedKey | undefined;
  private cacheAad: Buffer | undefined;
  private cacheWfBytes: Uint8Array | undefined;

  constructor(options: AesGcmPayloadCodecOptions) {
    if (typeof options?.namespace !== 'string' || options.namespace.length === 0) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: namespace is required');
    }
    this.namespace = options.namespace;
    this.keys = loadCodecKeys(options.keys);
    this.plaintextEncodings = new Set(options.allowPlaintextEncodings ?? []);
    this.acceptScheduledRuns = options.acceptScheduledRuns ?? false;
    this.acceptNamespaceBound = options.acceptNamespaceBound ?? false;
    this.onRefusal = options.onRefusal;
  }

  /** Id of the key new payloads are encrypted with. */
  get activeKeyId(): string {
    return this.keys.active.kid;
  }

  /**
   * Replaces the key material atomically (validated first; on error the old keys stay). Keep retired
   * keys as `decrypt-only` for as long as histories encrypted with them may be replayed or read.
   */
  rotate(material: CodecKeyMaterial): void {
    this.keys = loadCodecKeys(material);
    this.cacheAad = undefined;
  }

  /**
   * This codec with `namespace` as the fallback for calls without a serialization context: what a codec
   * server for that namespace needs (`createCodecServer` calls it). It shares everything else with this
   * codec, key rotation and the refusal hook included (`options.onRefusal` replaces the hook; `null`
   * drops it, for a caller that records refusals itself); calls with a context are unchanged.
   */
  forNamespace(
    namespace: string,
    options?: { onRefusal?: AesGcmPayloadCodecOptions['onRefusal'] | null },
  ): PayloadCodec & { readonly namespace: string } {
    if (typeof namespace !== 'string' || namespace.length === 0) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: namespace is required');
    }
    // Only null drops the hook: a wrapper forwarding an unset option keeps this codec's.
    const onRefusal = options?.onRefusal === undefined ? this.onRefusal : options.onRefusal;
    return {
      namespace,
      encode: (payloads, context) => this.encodeFor(payloads, context, namespace),
      decode: (payloads, context) => this.decodeFor(payloads, context, namespace, onRefusal),
    };
  }

  /** Encrypts every payload with the active key, bound to the context's namespace and workflow. */
  encode(payloads: Payload[], context?: SerializationContext): Promise<Payload[]> {
    return this.encodeFor(payloads, context, this.namespace);
  }

  /**
   * Decrypts every payload. Throws `USER_CONTEXT_PLAINTEXT_PAYLOAD` (unencrypted and not allow-listed),
   * `USER_CONTEXT_KEY_UNKNOWN` (key id not in the ring, including hostile ids) or
   * `USER_CONTEXT_PAYLOAD_TAMPERED` (malformed, failed authentication, or bound to another workflow).
   */
  decode(payloads: Payload[], context?: SerializationContext): Promise<Payload[]> {
    return this.decodeFor(payloads, context, this.namespace, this.onRefusal);
  }

  private async encodeFor(
    payloads: Payload[],
    context: SerializationContext | undefined,
    fallbackNamespace: string,
  ): Promise<Payload[]> {
    const { namespace, workflowId } = bindingOf(context, fallbackNamespace);
    const key = this.keys.active;
    const aad = this.aadFor(namespace, workflowId, key);
    const wfBytes = this.cacheWfBytes;
    const out = new Array<Payload>(payloads.length);
    for (let i = 0; i < payloads.length; i++) out[i] = sealPayload(payloads[i]!, key, aad, wfBytes);
    return out;
  }

  private async decodeFor(
    payloads: Payload[],
    context: SerializationContext | undefined,
    fallbackNamespace: string,
    onRefusal: AesGcmPayloadCodecOptions['onRefusal'] | null,
  ): Promise<Payload[]> {
    const { namespace, workflowId } = bindingOf(context, fallbackNamespace);
    const refused = (refusal: UserContextError) =>
      onRefusal?.(refusal, {
        namespace,
        workflowId,
        ...(context?.type === 'activity' && context.activityId ? { activityId: context.activityId } : {}),
      });
    if (!Array.isArray(payloads)) {
      const refusal = new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'payloads must be an array');
      refused(refusal);
      throw refusal;
    }
    const keys = this.keys; // one snapshot per batch, even if rotate() runs concurrently
    const out = new Array<Payload>(payloads.length);
    for (let i = 0; i < payloads.length; i++) {
      try {
        out[i] = this.decodeOne(payloads[i], namespace, workflowId, keys);
      } catch (err) {
        // Defence in depth: hostile input must never surface as a TypeError or a crypto error.
        const refusal = isUserContextError(err)
          ? err
          : new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed payload', { cause: err });
        refused(refusal);
        throw refusal;
      }
    }
    return out;
  }

  private decodeOne(
    payload: unknown,
    namespace: string,
    current: string | undefined,
    keys: CodecKeys,
  ): Payload {
    if (payload === null || typeof payload !== 'object') {
      throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed payload');
    }
    const { metadata, data } = payload as Payload;
    const encoding = metadata?.[META_ENCODING];
    if (!isBytes(encoding) || !equalBytes(encoding, ENCODING_ENCRYPTED_BYTES)) {
      const name = isBytes(encoding) && encoding.byteLength <= 256 ? text(encoding) : undefined;
      if (name !== undefined && this.plaintextEncodings.has(name)) return payload as Payload;
      throw new UserContextError(ErrorCodes.PLAINTEXT_PAYLOAD, 'payload is not encrypted');
    }
    const format = metadata![META_FORMAT];
    if (!isBytes(format) || !equalBytes(format, FORMAT_V1_BYTES)) {
      throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'unsupported encryption format');
    }
    const kidBytes = metadata![META_KEY_ID];
    // Length first: a 10 MB key id is refused without being decoded. The id is only ever compared,
    // byte for byte, with the ring's ids: never a path, URL or object property, never echoed.
    if (!isBytes(kidBytes) || kidBytes.byteLength === 0 || kidBytes.byteLength > MAX_KID_BYTES) {
      throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown encryption key id');
    }
    const key = findKey(keys, kidBytes);
    if (!key) throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown encryption key id');
    const wfBytes = metadata![META_WORKFLOW_ID];
    if (wfBytes !== undefined && (!isBytes(wfBytes) || wfBytes.byteLength > MAX_WORKFLOW_ID_BYTES)) {
      throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed workflow binding');
    }
    // Fast path: the bytes of the current workflow id are usually cached from the previous payload.
    const bound =
      wfBytes === undefined
        ? undefined
        : current !== undefined &&
            this.cacheWf === current &&
            this.cacheWfBytes &&
            equalBytes(wfBytes, this.cacheWfBytes)
          ? current
          : boundText(wfBytes);
    checkBinding(bound, current, this.acceptScheduledRuns, this.acceptNamespaceBound);
    if (!isBytes(data)) throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'ciphertext missing');
    // The AAD uses the key's own id bytes, not the payload's: findKey proved them equal.
    return openPayload(data, key, this.aadFor(namespace, bound, key));
  }

  /** The AAD for a binding and key; the last one is cached (`cacheWfBytes` is its workflow id bytes). */
  private aadFor(namespace: string, workflowId: string | undefined, key: LoadedKey): Buffer {
    if (
      this.cacheAad === undefined ||
      this.cacheNs !== namespace ||
      this.cacheWf !== workflowId ||
      this.cacheKey !== key
    ) {
      const wfBytes = workflowId === undefined ? undefined : Buffer.from(workflowId, 'utf8');
      // Decoding refuses a binding this long: sealed, the payload could never be read again.
      if (wfBytes !== undefined && wfBytes.byteLength > MAX_WORKFLOW_ID_BYTES)
        throw new UserContextError(
          ErrorCodes.TOO_LARGE,
          `workflow id longer than ${MAX_WORKFLOW_ID_BYTES} bytes: payloads cannot be bound to it`,
        );
      this.cacheAad = buildAad(namespace, wfBytes, key.kidBytes);
      this.cacheWfBytes = wfBytes;
      this.cacheNs = namespace;
      this.cacheWf = workflowId;
      this.cacheKey = key;
    }
    return this.cacheAad;
  }
}

/** The loaded key whose id has exactly these bytes. Rings hold a handful of keys: a scan beats decoding. */
function findKey(keys: CodecKeys, kidBytes: Uint8Array): LoadedKey | undefined {
  if (equalBytes(kidBytes, keys.active.kidBytes)) return keys.active;
  for (const key of keys.byKid.values()) if (equalBytes(kidBytes, key.kidBytes)) return key;
  return undefined;
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

/**
 * A payload's workflow binding as text. Bytes that are not UTF-8 are refused: read leniently they became
 * U+FFFD, and a payload whose metadata was rewritten so (`61 ff` for `a\uFFFD`) still opened, since the
 * AAD is built from the decoded text (found by review).
 */
function boundText(bytes: Uint8Array): string {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed workflow binding');
  }
}
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function text(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}
