import type { Payload } from '@temporalio/common';
import { CodecServerCodes, CodecServerError } from './errors.js';

// Standard or URL-safe alphabet, optional padding: what proto3 JSON parsers accept for `bytes`.
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * Parses a remote-codec body, `{ payloads: [{ metadata: { key: base64 }, data: base64 }] }` (proto3
 * JSON of `temporal.api.common.v1.Payloads`). Anything else is refused with `CODEC_BAD_REQUEST`.
 */
export function parsePayloadsBody(body: unknown, maxPayloads: number): Payload[] {
  const bad = (message: string): never => {
    throw new CodecServerError(400, CodecServerCodes.BAD_REQUEST, message);
  };
  if (body === null || typeof body !== 'object' || Array.isArray(body)) bad('body must be a JSON object');
  const list = (body as { payloads?: unknown }).payloads;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) return bad('payloads must be an array');
  if (list.length > maxPayloads) bad(`at most ${maxPayloads} payloads per request`);
  return list.map((entry: unknown): Payload => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      return bad('payload must be an object');
    const { metadata, data } = entry as { metadata?: unknown; data?: unknown };
    const out: Payload = {};
    if (metadata !== undefined && metadata !== null) {
      if (typeof metadata !== 'object' || Array.isArray(metadata)) bad('metadata must be an object');
      const decoded = Object.create(null) as Record<string, Uint8Array>;
      for (const [key, value] of Object.entries(metadata as Record<string, unknown>)) {
        decoded[key] = bytes(value, bad);
      }
      out.metadata = decoded;
    }
    if (data !== undefined && data !== null) out.data = bytes(data, bad);
    return out;
  });
}

function bytes(value: unknown, bad: (message: string) => never): Uint8Array {
  if (typeof value !== 'string' || !BASE64.test(value)) return bad('bytes fields must be base64 strings');
  return Buffer.from(value, 'base64');
}

/** Serialises payloads back to proto3 JSON, standard base64. */
export function payloadsToJson(payloads: readonly Payload[]): {
  payloads: { metadata: Record<string, string>; data?: string }[];
} {
  return {
    payloads: payloads.map((p) => {
      // Null prototype: a metadata key named `__proto__` stays a key.
      const metadata = Object.create(null) as Record<string, string>;
      for (const [key, value] of Object.entries(p.metadata ?? {})) metadata[key] = base64(value);
      return p.data ? { metadata, data: base64(p.data) } : { metadata };
    }),
  };
}

function base64(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
}

/**
 * Deepest nesting a codec request body may have. A remote-codec body nests four levels
 * (`{ payloads: [{ metadata: {…} }] }`); JSON.parse of 8 MB of nested brackets takes about a second.
 */
export const MAX_JSON_DEPTH = 32;

/**
 * Arrays and objects a body of `maxPayloads` payloads may hold: the envelope (2), and per payload its
 * object and its metadata object (2), with room to spare (4).
 */
export function maxJsonContainers(maxPayloads: number): number {
  return 4 * maxPayloads + 16;
}

/**
 * What makes `text` too costly to parse, if anything: arrays and objects nested deeper than
 * `maxDepth` (8 MB of nested brackets took JSON.parse about a second) or more of them than
 * `maxContainers` (8 MB of `[],` about half a second). Brackets inside strings do not count. Checked
 * before parsing, in one pass without allocation; malformed text is left to the parser.
 */
export function jsonShapeProblem(
  text: string,
  maxDepth: number,
  maxContainers: number,
): 'too deep' | 'too many values' | undefined {
  let depth = 0;
  let containers = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return 'too deep';
      if (++containers > maxContainers) return 'too many values';
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return undefined;
}
