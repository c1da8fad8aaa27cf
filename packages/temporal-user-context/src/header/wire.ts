import type { Headers, Payload } from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { parseJsonUniqueKeys } from './unique-keys.js';

/**
 * Wire format v1 of the user-context header (see docs/wire-format.md). This module is what the
 * workflow sandbox loads, so it carries no validation library: the SDK evaluates workflow-side modules
 * once per workflow, and zod's module scope plus our schemas cost ~9 ms per workflow (measured with
 * `npm run bench` and a CPU profile: ~20% of throughput on a small worker). The checks below are the
 * documented v1 shape, nothing more. `schema.ts` holds the same definition as a zod schema, the
 * reference, and a property test (test/unit/header.test.ts) asserts that both accept exactly the same
 * values.
 *
 * The header value is a `json/plain` payload holding a small JSON object:
 * - `v`   format version, always 1;
 * - `tok` the sealed context token (compact JWE around a compact JWS), opaque outside workers;
 * - `ws`, `sub` keyed pseudonyms of workspace and user, so that workflow code can compare actor and
 *   originator without reading the claims; the token signs the same values;
 * - `b`   1 when the token binds how its lineage's root started (workflow type, task queue), or, on an
 *   actor header, the call it was issued for (signal, update or query name): workflow code then states
 *   that start (`wt`, `tq`) or the call it handles (`hn`) in `lin` for workers to compare;
 * - `lin` (only on headers written by workflow code) lineage facts the server vouched for.
 */
export const HEADER_VERSION = 1;
/** Header carrying the originator's context (start, child, continue-as-new, activities, Nexus). */
export const ORIGINATOR_HEADER = 'user-context';
/** Header carrying the context of whoever sends a signal, update or query. */
export const ACTOR_HEADER = 'user-context-actor';
/** Cap on the encoded header value. A sealed 16-role context is ~1.5 KiB; anything near the cap is hostile. */
export const MAX_HEADER_BYTES = 8192;
/** Longest workflow id (also workflow type and task queue name) accepted in lineage facts. */
export const MAX_WORKFLOW_ID_CHARS = 1000;

const HINT = /^[A-Za-z0-9_-]{16,64}$/;

/** Compact JWE: five base64url parts. */
const TOKEN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$/;
// Exported as copies for host-side use (the zod reference schema): this module may be preloaded into
// the workflow sandbox, where the SDK freezes a preloaded module's exports, and the checks below should
// not run on a frozen RegExp.
/** Pseudonym hint: base64url, 16–64 characters. */
export const HINT_PATTERN = new RegExp(HINT);
/** Compact JWE: five base64url parts. */
export const TOKEN_PATTERN = new RegExp(TOKEN);

/** Lineage facts: copied from `workflowInfo()`, which the Temporal server vouches for. */
export interface Lineage {
  /** Root workflow id of the lineage (server: `workflowInfo().root` or the workflow itself). */
  readonly root: string;
  /** Start of the root's execution chain, epoch ms (server: `workflowInfo().startTime`). */
  readonly start: number;
  /** Workflow id that wrote this header (the activity or child checks it against its own info). */
  readonly wf: string;
  /** Schedule id that started the root, when a schedule did (server: `TemporalScheduledById`). */
  readonly sched?: string;
  /**
   * How the root's execution chain started, when its header asks (`b`): the first run's workflow type
   * (server: `workflowInfo().workflowType`) and task queue (`workflowInfo().taskQueue`).
   */
  readonly wt?: string;
  readonly tq?: string;
  /** With `wt`: the root's cron schedule (`workflowInfo().cronSchedule`), when it has one. */
  readonly cr?: string;
  /** With `wt`: 1 when the root has a workflow retry policy (`workflowInfo().retryPolicy`). */
  readonly rp?: 1;
  /**
   * The digest of the arguments the root's chain started with: never on the wire (a digest in a header
   * would let anyone who reads history guess the encrypted input); set by a worker from the server's
   * record of the chain's first run (`withServerLineage`), for the verifier to compare.
   */
  readonly ad?: string;
  /**
   * The delay (ms) before the chain's first run started: never on the wire (workflow code does not know
   * it); set by a worker from the server's record of that run (`withServerLineage`).
   */
  readonly dl?: number;
  /** On an actor header only, when it asks (`b`): the signal or update whose handler sent it. */
  readonly hn?: string;
}

export interface ContextHeader {
  readonly v: 1;
  readonly tok: string;
  readonly ws: string;
  readonly sub: string;
  /** 1: the token binds the root's start, which workflow code states in `lin` (see above). */
  readonly b?: 1;
  readonly lin?: Lineage;
}

const HEADER_KEYS = new Set(['v', 'tok', 'ws', 'sub', 'b', 'lin']);
const LINEAGE_KEYS = new Set(['root', 'start', 'wf', 'sched', 'wt', 'tq', 'cr', 'rp', 'hn']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function onlyKeys(value: Record<string, unknown>, allowed: ReadonlySet<string>): boolean {
  return Object.keys(value).every((k) => allowed.has(k));
}

function isWorkflowId(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 1 && value.length <= MAX_WORKFLOW_ID_CHARS;
}

function isLineage(value: unknown): value is Lineage {
  return (
    isRecord(value) &&
    onlyKeys(value, LINEAGE_KEYS) &&
    isWorkflowId(value.root) &&
    isWorkflowId(value.wf) &&
    typeof value.start === 'number' &&
    Number.isSafeInteger(value.start) &&
    value.start >= 0 &&
    (value.sched === undefined || isWorkflowId(value.sched)) &&
    (value.wt === undefined || isWorkflowId(value.wt)) &&
    (value.tq === undefined || isWorkflowId(value.tq)) &&
    (value.cr === undefined || isWorkflowId(value.cr)) &&
    (value.rp === undefined || value.rp === 1) &&
    (value.hn === undefined || isWorkflowId(value.hn))
  );
}

/** True when `value` is exactly a v1 header: no unknown keys, every field of the documented form. */
export function isContextHeader(value: unknown): value is ContextHeader {
  return (
    isRecord(value) &&
    onlyKeys(value, HEADER_KEYS) &&
    value.v === HEADER_VERSION &&
    typeof value.tok === 'string' &&
    value.tok.length <= MAX_HEADER_BYTES &&
    TOKEN.test(value.tok) &&
    typeof value.ws === 'string' &&
    HINT.test(value.ws) &&
    typeof value.sub === 'string' &&
    HINT.test(value.sub) &&
    (value.b === undefined || value.b === 1) &&
    (value.lin === undefined || isLineage(value.lin))
  );
}

/** Parses a header value already decoded from JSON; throws `USER_CONTEXT_HEADER_MALFORMED`. */
export function parseHeaderValue(raw: unknown, name: string): ContextHeader {
  if (isContextHeader(raw)) return raw;
  const version = isRecord(raw) ? raw.v : undefined;
  const why = version !== undefined && version !== HEADER_VERSION ? 'unsupported version' : 'bad shape';
  throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name}: ${why}`);
}

// The header is an ordinary `json/plain` payload, exactly what the SDK's JSON converter writes. It is
// built with the host's TextEncoder/TextDecoder (the workflow sandbox is given Node's) rather than
// through `defaultPayloadConverter`, whose portable pure-JavaScript UTF-8 codec costs several times more
// on a 1 KiB header, and a header is encoded or decoded on every boundary it crosses.
const textEncoder = new TextEncoder();
// ignoreBOM: a leading byte-order mark stays in the text (and fails JSON.parse), as it does with the
// SDK's converter; stripping it would accept headers that older versions of this library refused.
const textDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
const JSON_PLAIN = 'json/plain';

/** Encodes a header value as a `json/plain` payload. Pure and sandbox-safe. */
export function encodeHeader(header: ContextHeader): Payload {
  return {
    metadata: { encoding: textEncoder.encode(JSON_PLAIN) },
    data: textEncoder.encode(JSON.stringify(header)),
  };
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
  if (!encoding || textDecoder.decode(encoding) !== JSON_PLAIN) {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name} is not json/plain`);
  }
  let raw: unknown;
  try {
    // Not `fatal`: invalid UTF-8 decodes to U+FFFD (as with the SDK's converter, though not always to
    // the same number of them); only lineage strings could hold it, and they are compared, never trusted.
    raw = parseJsonUniqueKeys(textDecoder.decode(payload.data ?? new Uint8Array(0)));
  } catch {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, `header ${name} is not JSON (or repeats a key)`);
  }
  return parseHeaderValue(raw, name);
}

/** Returns `headers` plus `name` (a new object: SDK headers objects are treated as immutable). */
export function withHeader(headers: Headers, name: string, header: ContextHeader): Headers {
  // Object.assign: see workflow/interceptors.ts (spread is compiled to a slow helper in the sandbox).
  return Object.assign({}, headers, { [name]: encodeHeader(header) });
}
