// The Nexus string header's size cap, in bytes as every other header's: a value of multi-byte
// characters under the cap in UTF-16 units but over it in UTF-8 is refused before it is parsed.
import { describe, expect, it } from 'vitest';
import { ErrorCodes, MAX_HEADER_BYTES } from 'temporal-user-context';
import { parseNexusHeader } from '../../src/worker/nexus-interceptor.js';

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

describe('the Nexus context header', () => {
  it('is capped in UTF-8 bytes, not in characters', () => {
    const euros = JSON.stringify({ v: 1, tok: 'x', lin: { root: '€'.repeat(3000) } });
    expect(euros.length).toBeLessThan(MAX_HEADER_BYTES);
    expect(Buffer.byteLength(euros)).toBeGreaterThan(MAX_HEADER_BYTES);
    expect(codeOf(() => parseNexusHeader({ 'user-context': euros }))).toBe(ErrorCodes.TOO_LARGE);
    // The same shape within the cap is parsed (and refused for its shape only).
    const small = JSON.stringify({ v: 1, tok: 'x', lin: { root: '€' } });
    expect(codeOf(() => parseNexusHeader({ 'user-context': small }))).toBe(ErrorCodes.HEADER_MALFORMED);
    expect(parseNexusHeader({})).toBeUndefined();
  });

  it('case 18: a value that repeats a key is refused, though JSON.parse would read it', () => {
    const good = { v: 1, tok: 'aaaa.bbbb.cccc.dddd.eeee', ws: 'w'.repeat(22), sub: 's'.repeat(22) };
    expect(parseNexusHeader({ 'user-context': JSON.stringify(good) })).toEqual(good);
    const twice = `${JSON.stringify(good).slice(0, -1)},"ws":"${'x'.repeat(22)}"}`;
    expect(JSON.parse(twice)).toMatchObject({ ws: 'x'.repeat(22) });
    expect(codeOf(() => parseNexusHeader({ 'user-context': twice }))).toBe(ErrorCodes.HEADER_MALFORMED);
  });
});
