import {
  defaultPayloadConverter,
  type Payload,
  type PayloadCodec,
  type SerializationContext,
} from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { argsDigest } from '../crypto/args-digest.js';
import type { KeyRing } from '../crypto/keyring.js';
import { openContextToken } from '../crypto/open.js';
import { ORIGINATOR_HEADER, decodeHeader } from '../header/wire.js';
import type { UpdatedAction } from './control-calls.js';

/**
 * A schedule action's arguments, as each codec list that decodes them reads them: the lists of the
 * clients this plugin configured, else this plugin's codec alone; each result read with the SDK's
 * default payload converter, as `bindScheduleArguments` digests them. Empty when none decodes them.
 * Every list is tried (found by the round's review: the first that decoded without an error answered,
 * and a client's list that passes payloads through, or reads them otherwise, refused an update that
 * kept the arguments, depending on which client was made last): no wrong list yields the token's digest.
 */
export async function decodedArguments(
  chains: readonly (readonly PayloadCodec[])[],
  own: PayloadCodec | undefined,
  payloads: Payload[],
  context: SerializationContext,
): Promise<unknown[][]> {
  const tried = chains.length > 0 ? chains : [own ? [own] : []];
  const readings: unknown[][] = [];
  for (const chain of tried) {
    try {
      let plain = payloads;
      for (let i = chain.length - 1; i >= 0; i--) plain = await chain[i]!.decode(plain, context);
      readings.push(plain.map((p) => defaultPayloadConverter.fromPayload(p)));
    } catch {
      // Not this list's: another may read them.
    }
  }
  return readings;
}

/**
 * The refusal of a schedule update that moves the action its creator's token binds (another schedule,
 * workflow id, type, task queue, or other arguments where they are bound), or nothing. Such an update leaves runs that workers refuse (checks 4 and
 * 7), and one to another workflow id worse: every later run is handed the previous run's result,
 * which the codec bound to the old id and refuses before any check, so each such run's first workflow
 * task fails for ever. Updates that keep the action (the spec, arguments, policies) pass, as does an
 * action whose header this process cannot read (workers judge it).
 */
export async function scheduleUpdateRefusal(
  keys: KeyRing,
  updated: UpdatedAction,
  /** The arguments as each way of reading them that works reads them (none: not readable here). */
  argumentsOf: (payloads: Payload[]) => Promise<unknown[][]>,
): Promise<UserContextError | undefined> {
  let claims: Awaited<ReturnType<typeof openContextToken>>;
  try {
    const header = decodeHeader(
      updated.header ? { [ORIGINATOR_HEADER]: updated.header } : {},
      ORIGINATOR_HEADER,
    );
    if (!header) return undefined;
    claims = await openContextToken(keys, header.tok);
  } catch {
    return undefined;
  }
  if (claims.use !== 'schedule') return undefined;
  // Runs after the token's window are refused by workers: an update must keep the schedule ending
  // inside it, as schedule.create made it (found by review: an update could clear or move the end).
  const jitter = updated.jitterMs ?? 0;
  // A negative jitter would move the last run past the window (found by review): refused, as at create.
  if (!(jitter >= 0))
    return new UserContextError(ErrorCodes.MISCONFIGURED, 'the update gives the schedule a negative jitter');
  const latest = claims.exp * 1000 - jitter;
  if (updated.endMs === undefined || !(updated.endMs <= latest))
    return new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `the update would let the schedule start runs after its creator's token window (${new Date(latest).toISOString()}, less jitter), which workers refuse: keep its endAt by then, and re-create the schedule to go on`,
    );
  const moved = [
    claims.sch !== undefined && claims.sch !== updated.scheduleId ? 'schedule' : undefined,
    claims.wf !== undefined && claims.wf !== updated.workflowId ? 'workflow id' : undefined,
    claims.wt !== undefined && claims.wt !== updated.workflowType ? 'workflow type' : undefined,
    claims.tq !== undefined && claims.tq !== updated.taskQueue ? 'task queue' : undefined,
  ].filter((what) => what !== undefined);
  // The arguments, where the token binds them (bindScheduleArguments): read as workers read them.
  if (moved.length === 0 && claims.ad !== undefined) {
    let readings: unknown[][];
    try {
      readings = await argumentsOf(updated.input);
    } catch {
      readings = []; // not readable here: workers judge them
    }
    const digests = readings.flatMap((args) => {
      try {
        return [argsDigest(args)];
      } catch {
        return []; // values no digest takes (a BigInt): not this reading
      }
    });
    // Refused only when read, and no reading gives the token's digest.
    if (digests.length > 0 && !digests.includes(claims.ad)) moved.push('arguments');
  }
  if (moved.length === 0) return undefined;
  return new UserContextError(
    ErrorCodes.LINEAGE_MISMATCH,
    `the update changes what the schedule's token binds (${moved.join(', ')}): re-create the schedule instead`,
  );
}
