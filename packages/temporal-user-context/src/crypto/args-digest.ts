import { createHash } from 'node:crypto';
import { defaultPayloadConverter } from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { encodeArgs } from '../header/args-encoding.js';

/**
 * Digest of a workflow's arguments as it receives them (claim `ad`, docs/wire-format.md): a worker
 * computes it over the values its data converter decodes from the run's input; the workflow sandbox
 * computes the same (`workflow/args-digest.ts`). SHA-256 of {@link encodeArgs}, base64url.
 */
export function argsDigest(values: readonly unknown[]): string {
  return createHash('sha256').update(encodeArgs(values), 'utf8').digest('base64url');
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
      `${option === 'bindScheduleArguments' ? "a schedule's" : "a workflow's"} arguments must convert with the default payload converter to be bound to its token (${
        err instanceof Error ? err.name : typeof err
      }); or set ${option}: false`,
    );
  }
}
