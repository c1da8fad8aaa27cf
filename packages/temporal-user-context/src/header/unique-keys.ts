/**
 * `JSON.parse`, refusing an object that names a key twice.
 *
 * `JSON.parse` keeps the last of two equal keys, other parsers the first or either: a header or claim
 * set written with two `tok`s or two `ws`s could mean one thing to this package and another to a proxy,
 * a log pipeline or a port of it in another language. Nothing this package writes repeats a key, so one
 * that does was written by someone else and is refused (threat model case 18).
 *
 * Pure, no imports: it runs in the workflow sandbox too.
 *
 * @throws SyntaxError for text that is not JSON (from `JSON.parse`) or that repeats a key in an object;
 *   callers turn either into their own named refusal.
 */
export function parseJsonUniqueKeys(text: string): unknown {
  const value: unknown = JSON.parse(text);
  // Text without an object in it has no keys to repeat (most claims and headers have one: scanned).
  if (text.indexOf('{') !== -1) assertUniqueKeys(text);
  return value;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;

/**
 * Walks text that `JSON.parse` accepted, so its syntax is known good: a string opened by `{` or by a
 * `,` inside an object is a key. Keys are compared as `JSON.parse` decodes them (`"a"` and `"\u0061"`
 * are one key). Strings are skipped with `indexOf`, so a 1 KiB token costs a few native searches.
 */
function assertUniqueKeys(text: string): void {
  // One entry per open container: the keys seen so far of an object, `undefined` for an array.
  const open: (Set<string> | undefined)[] = [];
  let keyNext = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = closingQuote(text, i);
      if (keyNext) {
        const raw = text.slice(i + 1, end);
        const key = raw.indexOf('\\') === -1 ? raw : (JSON.parse(text.slice(i, end + 1)) as string);
        const keys = open[open.length - 1] as Set<string>;
        if (keys.has(key)) throw new SyntaxError('JSON object repeats a key');
        keys.add(key);
        keyNext = false;
      }
      i = end;
    } else if (c === OPEN_OBJECT) {
      open.push(new Set());
      keyNext = true;
    } else if (c === OPEN_ARRAY) {
      open.push(undefined);
      keyNext = false;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      open.pop();
      keyNext = false;
    } else if (c === COMMA) {
      keyNext = open[open.length - 1] !== undefined;
    }
  }
}

/** Index of the quote that closes the string opened at `start` (one preceded by an even run of `\`). */
function closingQuote(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  for (;;) {
    let slashes = 0;
    while (text.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes++;
    if (slashes % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
}
