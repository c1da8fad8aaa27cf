import { ErrorCodes, UserContextError } from './errors.js';

/**
 * A numeric option, or its default when left out. Anything else than a finite number in
 * `[min, max]` (an integer where `integer` is set) is refused with `USER_CONTEXT_MISCONFIGURED`: NaN
 * fails every comparison and Infinity passes every one, so either would silently turn a time check or
 * a bound off instead of failing.
 */
export function numberOption(
  name: string,
  value: unknown,
  fallback: number,
  bounds: { min: number; max: number; integer?: boolean },
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    (bounds.integer === true && !Number.isInteger(value)) ||
    value < bounds.min ||
    value > bounds.max
  ) {
    const kind = bounds.integer ? 'an integer' : 'a number';
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `${name} must be ${kind} from ${bounds.min} to ${bounds.max}`,
    );
  }
  return value;
}
