// The JSON reader of headers, claims and operation tokens: JSON.parse, refusing repeated keys.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseJsonUniqueKeys } from '../../src/header/unique-keys.js';

describe('parseJsonUniqueKeys', () => {
  it('property: reads whatever JSON.stringify writes, as JSON.parse does', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        expect(parseJsonUniqueKeys(text)).toEqual(JSON.parse(text));
      }),
      { numRuns: 2000 },
    );
  });

  it('property: an object given one of its keys a second time is refused, at any depth', () => {
    const withKeys = fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), {
      minKeys: 1,
    });
    fc.assert(
      fc.property(
        withKeys,
        fc.nat(),
        fc.jsonValue({ maxDepth: 2 }),
        fc.nat({ max: 2 }),
        (obj, pick, extra, depth) => {
          const keys = Object.keys(obj);
          const again = keys[pick % keys.length] as string;
          // Repeat the key last, in the text: JSON.parse keeps that one and says nothing.
          let text = `${JSON.stringify(obj).slice(0, -1)},${JSON.stringify(again)}:${JSON.stringify(extra)}}`;
          for (let i = 0; i < depth; i++) text = i % 2 === 0 ? `[1,${text}]` : `{"outer":${text}}`;
          expect(() => JSON.parse(text)).not.toThrow();
          expect(() => parseJsonUniqueKeys(text)).toThrow(SyntaxError);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it.each([
    ['keys escaped differently', '{"tok":1,"t\\u006fk":2}'],
    ['a key after an escaped backslash', '{"a\\\\":1,"a\\\\":2}'],
    ['a key after a value full of brackets and quotes', '{"a":"}{][\\",","a":2}'],
    ['keys of an object inside an array', '[{"x":1},{"x":1,"x":2}]'],
    ['keys after a nested object closes', '{"a":{"b":1},"a":2}'],
  ])('refuses %s', (_name, text) => {
    expect(() => JSON.parse(text)).not.toThrow();
    expect(() => parseJsonUniqueKeys(text)).toThrow('repeats a key');
  });

  it.each([
    ['the same key in sibling objects', '[{"x":1},{"x":2}]', [{ x: 1 }, { x: 2 }]],
    ['the same key at two depths', '{"a":{"a":1}}', { a: { a: 1 } }],
    ['a key that only looks repeated inside a string', '{"a":"\\",\\"a\\":1"}', { a: '","a":1' }],
    ['values equal to keys', '{"a":"a","b":["a","b"]}', { a: 'a', b: ['a', 'b'] }],
    ['keys that differ only in case or width', '{"tok":1,"TOK":2,"ｔｏｋ":3}', { tok: 1, TOK: 2, ｔｏｋ: 3 }],
  ])('accepts %s', (_name, text, value) => {
    expect(parseJsonUniqueKeys(text)).toEqual(value);
  });

  it('passes on what is not JSON as JSON.parse refuses it', () => {
    for (const text of ['', '{', '{"a":1}x', "{'a':1}"])
      expect(() => parseJsonUniqueKeys(text)).toThrow(SyntaxError);
  });
});
