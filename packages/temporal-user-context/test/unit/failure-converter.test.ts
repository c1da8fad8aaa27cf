// The failure converter installed with the codec (src/failure-converter.cjs): what stays readable.
import { createRequire } from 'node:module';
import { ApplicationFailure, defaultPayloadConverter, type FailureConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextError } from '../../src/context/errors.js';

const load = createRequire(import.meta.url);
const { failureConverter, REFUSAL_CODES } = load('../../src/failure-converter.cjs') as {
  failureConverter: FailureConverter;
  REFUSAL_CODES: ReadonlySet<string>;
};

const shown = (err: Error) => failureConverter.errorToFailure(err, defaultPayloadConverter).message;

describe('the failure converter', () => {
  it("knows this library's codes exactly (its CommonJS list is ErrorCodes)", () => {
    expect([...REFUSAL_CODES].sort()).toEqual(Object.values(ErrorCodes).sort());
  });

  it("keeps the library's refusals readable, and encrypts an application's failure named like one (found by review)", () => {
    const refusal = ApplicationFailure.create({ type: ErrorCodes.MISSING, message: 'no user context' });
    expect(shown(refusal)).toBe('no user context');
    expect(shown(new UserContextError(ErrorCodes.REVOKED, 'context revoked'))).toBe(
      `${ErrorCodes.REVOKED}: context revoked`,
    );
    // An application's own type that only begins like a code: its message may quote user data.
    const own = ApplicationFailure.create({
      type: 'USER_CONTEXT_ORDER_REJECTED',
      message: 'alice@example.com',
    });
    expect(shown(own)).toBe('Encoded failure');
    const wrapped = ApplicationFailure.create({
      type: 'UserContextError',
      message: 'USER_CONTEXT_ORDER_REJECTED: alice@example.com',
    });
    expect(shown(wrapped)).toBe('Encoded failure');
  });
});
