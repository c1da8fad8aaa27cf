/** Idempotency keys (the `Idempotency-Key` header) and the digests a retry is matched by. */
import { createHash } from 'node:crypto';

/** The key of an `Idempotency-Key` header the route's schema has checked, without its quotes. */
export function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  return header.startsWith('"') ? header.slice(1, -1) : header;
}

/**
 * A keyed request's key (the checked `Idempotency-Key` header, unquoted) and the digest of what it asks
 * for, which a retry with the key must match; `undefined` without a key.
 */
export function keyedRequest(
  header: string | undefined,
  digest: () => string,
): { key: string; digest: string } | undefined {
  const key = idempotencyKey(header);
  return key === undefined ? undefined : { key, digest: digest() };
}

/**
 * The update id of an instruction sent with an idempotency key: the same for the same user, key and
 * instruction (a retry), another for anything else; a digest, so that neither the key nor the text
 * reaches Temporal's update id in clear.
 */
export function instructionUpdateId(
  who: { userId: string; workspaceId: string },
  key: string,
  instruction: string,
): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([who.workspaceId, who.userId, key, instruction]))
    .digest('base64url');
  return `instruction-${digest}`;
}

/**
 * What a run start asks for, as a digest: a retry with the same idempotency key must ask for the same
 * (agent, task and every option, absent ones included).
 */
export function runRequestDigest(
  agentId: string,
  body: { input: string; followUpSeconds?: number; maxStepsPerRun?: number; maxTotalSteps?: number },
): string {
  return requestDigest([
    agentId,
    body.input,
    body.followUpSeconds ?? null,
    body.maxStepsPerRun ?? null,
    body.maxTotalSteps ?? null,
  ]);
}

/** What a schedule create asks for, as a digest (the agent, the interval and the task). */
export function scheduleRequestDigest(
  agentId: string,
  body: { everySeconds: number; input: string },
): string {
  return requestDigest(['schedule', agentId, body.everySeconds, body.input]);
}

/** SHA-256 (base64url) of what a request asked for, as a JSON array (unambiguous, in a fixed order). */
function requestDigest(asked: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify(asked)).digest('base64url');
}
