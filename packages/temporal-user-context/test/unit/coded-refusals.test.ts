// Public helpers refuse bad input with a coded UserContextError, never a TypeError from inside (found by
// review: each call below threw a TypeError, was accepted, or gave the wrong code).
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextError,
  activateKeySet,
  generateKeySet,
  mirrorQuery,
  openContextToken,
  pseudonymsOf,
  retireKey,
  stageKeySet,
  workerKeySet,
} from 'temporal-user-context';

const ring = KeyRing.fromJSON(generateKeySet('coded').edge);

function codeOfCall(call: () => unknown): string | undefined {
  try {
    call();
  } catch (err) {
    return err instanceof UserContextError ? err.code : `not coded: ${String(err)}`;
  }
  return undefined;
}

describe('coded refusals of bad input', () => {
  it('key set helpers take only key sets', () => {
    for (const bad of [{}, null, { version: 1 }] as never[]) {
      expect(codeOfCall(() => stageKeySet(bad))).toBe(ErrorCodes.MISCONFIGURED);
      expect(codeOfCall(() => activateKeySet(bad))).toBe(ErrorCodes.MISCONFIGURED);
      expect(codeOfCall(() => workerKeySet(bad))).toBe(ErrorCodes.MISCONFIGURED);
      expect(codeOfCall(() => retireKey(bad, 'sig-1'))).toBe(ErrorCodes.MISCONFIGURED);
    }
    // A set no ring would take is not made.
    expect(codeOfCall(() => generateKeySet(''))).toBe(ErrorCodes.MISCONFIGURED);
    // What they take is unchanged.
    const set = generateKeySet('coded').edge;
    expect(() => KeyRing.fromJSON(workerKeySet(set))).not.toThrow();
  });

  it('a token that is not a string is an invalid token, not an oversized one', async () => {
    await expect(openContextToken(ring, 42 as never)).rejects.toMatchObject({
      code: ErrorCodes.TOKEN_INVALID,
    });
    await expect(openContextToken(ring, 'x'.repeat(9000))).rejects.toMatchObject({
      code: ErrorCodes.TOO_LARGE,
    });
  });

  it('pseudonym lookups without ids are refused by code', () => {
    expect(codeOfCall(() => pseudonymsOf(ring, null as never))).toBe(ErrorCodes.INVALID);
    expect(codeOfCall(() => mirrorQuery('pseudonym', ring, null as never))).toBe(ErrorCodes.MISCONFIGURED);
  });
});
