import { createHash } from 'node:crypto';
import { defaultPayloadConverter } from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/** Deepest nesting digested: deeper input is refused alike at the edge and on workers, never by stack size. */
export const MAX_ARGS_DEPTH = 256;

/**
 * Digest of a start's or a schedule's arguments as a workflow receives them (claim `ad`,
 * docs/wire-format.md): a worker computes it over the values its data converter decodes from the run's
 * input. The encoding is injective on what a payload converter can deliver, so that two inputs a
 * workflow can tell apart never share a digest: `-0` and `0`, `Infinity` and `null` (JSON text may hold
 * `1e999`, which parses to `Infinity` and stringifies back to `null`), bytes and an object of indices,
 * `undefined` and `null`. Input nested deeper than {@link MAX_ARGS_DEPTH} throws a `RangeError`.
 */
export function argsDigest(values: readonly unknown[]): string {
  const out: string[] = [];
  encodeList(values, 0, out);
  return createHash('sha256').update(out.join(''), 'utf8').digest('base64url');
}

/**
 * The digest of `args` as given to `schedule.create` or a workflow start, over what the SDK's default
 * payload converter delivers for them (each encoded, then decoded): what a worker with that converter
 * decodes. `option` names the plugin option that turns the binding off, for the refusal's message.
 *
 * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` when an argument does not convert (a
 *   `BigInt`, a cycle, a function: the default converter would refuse it at `create` too) or is nested
 *   too deep to digest.
 */
export function createArgsDigest(
  args: readonly unknown[],
  option: 'bindScheduleArguments' | 'bindStartArguments' = 'bindScheduleArguments',
): string {
  try {
    return argsDigest(
      args.map((arg) => defaultPayloadConverter.fromPayload(defaultPayloadConverter.toPayload(arg))),
    );
  } catch (err) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `${option === 'bindScheduleArguments' ? "a schedule's" : "a workflow's"} arguments must convert with the default payload converter, nested at most ${MAX_ARGS_DEPTH} deep, to be bound to its token (${
        err instanceof Error ? err.name : typeof err
      }); or set ${option}: false`,
    );
  }
}

// Every item is self-delimiting: a one-letter tag, then a number up to `;`, a JSON string literal up to
// its closing quote, bytes in base64 up to `;`, or a bracketed list: the text decodes back to one value.
// Items are pushed onto one list of pieces, joined once: a text joined per nesting level would copy a
// value's text once per level above it (a 2 MB string 250 levels deep: ~400 ms on a worker's thread).
function encode(value: unknown, depth: number, out: string[]): void {
  if (depth > MAX_ARGS_DEPTH) throw new RangeError(`arguments nested deeper than ${MAX_ARGS_DEPTH}`);
  if (value === undefined) return void out.push('u');
  if (value === null) return void out.push('z');
  switch (typeof value) {
    case 'boolean':
      return void out.push(value ? 't' : 'f');
    case 'number':
      return void out.push(`n${Object.is(value, -0) ? '-0' : String(value)};`);
    case 'string':
      return void out.push(`s${JSON.stringify(value)}`);
    case 'object': {
      // Bytes by their bytes: the host's converter hands out a Buffer where the sandbox's has a Uint8Array.
      if (value instanceof Uint8Array)
        return void out.push(
          `b${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')};`,
        );
      const proto: unknown = Object.getPrototypeOf(value);
      // Dense plain arrays and plain objects only, what JSON.parse gives: own keys are all they hold.
      if (proto === Array.prototype && Object.keys(value).length === (value as unknown[]).length) {
        out.push('a');
        return encodeList(value as unknown[], depth + 1, out);
      }
      if (proto === Object.prototype) {
        out.push('o{');
        let first = true;
        for (const key of Object.keys(value)) {
          out.push(first ? `${JSON.stringify(key)}:` : `,${JSON.stringify(key)}:`);
          first = false;
          encode((value as Record<string, unknown>)[key], depth + 1, out);
        }
        return void out.push('}');
      }
      return void out.push(NOT_PLAIN);
    }
    default:
      return void out.push(NOT_PLAIN);
  }
}

/**
 * Anything else: a Map, a Date, a class instance, a sparse array, a bigint. The SDK's default converter
 * never delivers one, so no edge digest contains this item, and a worker whose converter (a custom one,
 * protobuf) decodes one refuses the run rather than compare values by fields they do not show. No
 * variable text: the item must not spell the start of another.
 */
const NOT_PLAIN = 'x;';

function encodeList(values: readonly unknown[], depth: number, out: string[]): void {
  // An index loop, not forEach(): a hole must encode as `undefined`, not be skipped. Nested arrays are
  // dense (checked above); the top-level list is one value per payload.
  out.push('[');
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out.push(',');
    encode(values[i], depth, out);
  }
  out.push(']');
}
