/**
 * The text an arguments digest (claim `ad`, docs/wire-format.md) is taken over, shared by the host
 * (`args-digest.ts`, SHA-256 from `node:crypto`) and the workflow sandbox (`workflow/args-digest.ts`),
 * which has neither `Buffer` nor `node:crypto`: this module imports nothing.
 *
 * The encoding is injective on what a payload converter can deliver, so that two inputs a workflow can
 * tell apart never share a digest: `-0` and `0`, `Infinity` and `null` (JSON text may hold `1e999`,
 * which parses to `Infinity` and stringifies back to `null`), bytes and an object of indices,
 * `undefined` and `null`. Every item is self-delimiting: a one-letter tag, then a number up to `;`, a
 * JSON string literal up to its closing quote, bytes in base64 up to `;`, or a bracketed list: the text
 * decodes back to one value.
 */
export function encodeArgs(values: readonly unknown[]): string {
  // Array.from, not map(): a hole would leave an empty item. Nested arrays are dense (checked below);
  // the top-level list is one value per payload.
  return `[${Array.from(values, encode).join(',')}]`;
}

function encode(value: unknown): string {
  if (value === undefined) return 'u';
  if (value === null) return 'z';
  switch (typeof value) {
    case 'boolean':
      return value ? 't' : 'f';
    case 'number':
      return `n${Object.is(value, -0) ? '-0' : String(value)};`;
    case 'string':
      return `s${JSON.stringify(value)}`;
    case 'object': {
      // Bytes by their bytes: the host's converter hands out a Buffer where the sandbox's has a Uint8Array.
      if (value instanceof Uint8Array) return `b${base64(value, STANDARD)};`;
      const proto: unknown = Object.getPrototypeOf(value);
      // Dense plain arrays and plain objects only, what JSON.parse gives: own keys are all they hold.
      if (proto === Array.prototype && Object.keys(value).length === (value as unknown[]).length)
        return `a${encodeArgs(value as unknown[])}`;
      if (proto === Object.prototype)
        return `o{${Object.keys(value)
          .map((key) => `${JSON.stringify(key)}:${encode((value as Record<string, unknown>)[key])}`)
          .join(',')}}`;
      return NOT_PLAIN;
    }
    default:
      return NOT_PLAIN;
  }
}

/**
 * Anything else: a Map, a Date, a class instance, a sparse array, a bigint. The SDK's default converter
 * never delivers one, so no edge digest contains this item, and a worker whose converter (a custom one,
 * protobuf) decodes one refuses the run rather than compare values by fields they do not show. No
 * variable text: the item must not spell the start of another.
 */
const NOT_PLAIN = 'x;';

const STANDARD = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const URL_SAFE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * RFC 4648 base64 (`STANDARD`, padded: what `Buffer#toString('base64')` gives, which earlier digests
 * used) or base64url (unpadded). Written out because the sandbox has neither `Buffer` nor `btoa`; a unit
 * test holds both forms to Node's.
 */
function base64(bytes: Uint8Array, alphabet: string): string {
  const padded = alphabet === STANDARD;
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i]!;
    const b = i + 1 < bytes.length ? bytes[i + 1]! : -1;
    const c = i + 2 < bytes.length ? bytes[i + 2]! : -1;
    out += alphabet[a >> 2]! + alphabet[((a & 3) << 4) | (b < 0 ? 0 : b >> 4)]!;
    if (b < 0) out += padded ? '==' : '';
    else
      out +=
        alphabet[((b & 15) << 2) | (c < 0 ? 0 : c >> 6)]! + (c < 0 ? (padded ? '=' : '') : alphabet[c & 63]!);
  }
  return out;
}

/** Base64url without padding (a digest's form in claims and lineage facts). */
export function base64url(bytes: Uint8Array): string {
  return base64(bytes, URL_SAFE);
}

/** Padded standard base64, as the digest encodes bytes. Exported for the unit test only. */
export function base64Standard(bytes: Uint8Array): string {
  return base64(bytes, STANDARD);
}
