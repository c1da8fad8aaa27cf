import { defaultPayloadConverter, type Headers, type Payload } from '@temporalio/common';
import { z } from 'zod';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { utf8Length } from '../context/schema.js';

/**
 * Wire format v1 of the user-context header (see docs/wire-format.md).
 *
 * The header value is a `json/plain` payload holding a small JSON object:
 * - `v`   format version, always 1;
 * - `tok` the sealed context token (compact JWE around a compact JWS), opaque outside workers;
 * - `ws`, `sub` keyed pseudonyms of workspace and user, so that workflow code can compare actor and
 *   originator without reading the claims; the token signs the same values;
 * - `lin` (only on headers written by workflow code) lineage facts the server vouched for.
 */
export const HEADER_VERSION = 1;
/** Header carrying the originator's context (start, child, continue-as-new, activities, Nexus). */
export const ORIGINATOR_HEADER = 'user-context';
/** Header carrying the context of whoever sends a signal, update or query. */
export const ACTOR_HEADER = 'user-context-actor';
/** Cap on the encoded header value. A sealed 16-role context is ~1.5 KiB; anything near the cap is hostile. */
export const MAX_HEADER_BYTES = 8192;

const HINT = /^[A-Za-z0-9_-]{16,64}$/;
const TOKEN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$/; // compact JWE: five base64url parts
const WF_ID = z.string().min(1).max(1000);

/** Lineage facts: copied from `workflowInfo()`, which the Temporal server vouches for. */
export const lineageSchema = z
  .object({
    /** Root workflow id of the lineage (server: `workflowInfo().root` or the workflow itself). */
    root: WF_ID,
    /** Start of the root's execution chain, epoch ms (server: `workflowInfo().startTime`). */
    start: z.number().int().nonnegative(),
    /** Workflow id that wrote this header (the activity or child checks it against its own info). */
    wf: WF_ID,
    /** Schedule id that started the root, when a schedule did (server: `TemporalScheduledById`). */
    sched: WF_ID.optional(),
  })
  .strict();
export type Lineage = z.infer<typeof lineageSchema>;

export const headerSchema = z
  .object({
    v: z.literal(HEADER_VERSION),
    tok: z.string().max(MAX_HEADER_BYTES).regex(TOKEN),
    ws: z.string().regex(HINT),
    sub: z.string().regex(HINT),
    lin: lineageSchema.optional(),
  })
  .strict();
export type ContextHeader = z.infer<typeof headerSchema>;

/** Encodes a header value. Pure and sandbox-safe. */
export function encodeHeader(header: ContextHeader): Payload {
  return defaultPayloadConverter.toPayload(header);
}

/**
 * Decodes and validates a header value. Returns `undefined` when absent; throws
 * `USER_CONTEXT_HEADER_MALFORMED` or `USER_CONTEXT_TOO_LARGE` on anything else than a valid v1 header.
 * Pure and sandbox-safe: it never verifies the token (workers do).
 */
export function decodeHeader(headers: Headers | undefined, name: string): ContextHeader | undefined {
  const payload = headers?.[name];
  if (payload === undefined || payload === null) return undefined;
  const size = payload.data?.length ?? 0;
  if (size > MAX_HEADER_BYTES)
    throw new UserContextError(ErrorCodes.TOO_LARGE, `header ${name} over ${MAX_HEADER_BYTES} bytes`);
  const encoding = payload.metadata?.encoding;
  if (!encoding || new TextDecoder().decode(encoding) !== 'json/plain') {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name} is not json/plain`);
  }
  let raw: unknown;
  try {
    raw = defaultPayloadConverter.fromPayload(payload);
  } catch {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name} is not JSON`);
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) {
    const version = (raw as { v?: unknown } | null)?.v;
    const why = version !== undefined && version !== HEADER_VERSION ? 'unsupported version' : 'bad shape';
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name}: ${why}`);
  }
  return parsed.data;
}

/** Returns `headers` plus `name` (a new object: SDK headers objects are treated as immutable). */
export function withHeader(headers: Headers, name: string, header: ContextHeader): Headers {
  return { ...headers, [name]: encodeHeader(header) };
}

export { utf8Length };
