import { z } from 'zod';
import { userContextSchema } from '../context/schema.js';

/** What a token was issued for: starting workflow `wf`, acting on workflow `wf`, or schedule `sch`. */
export type TokenUse = 'start' | 'actor' | 'schedule';

/**
 * A workflow start as its start or schedule token binds it: workflow type and task queue (`wt`, `tq`)
 * and, when given, its arguments (`ad`: their digest, which the plugin computes from `args`).
 */
export interface BoundStart {
  workflowType: string;
  taskQueue: string;
  /** The arguments, as given to the start or `schedule.create` (the plugin binds them unless told not to). */
  args?: readonly unknown[];
  /** Their digest, when the plugin computed it already (internal); used instead of `args`. */
  argsDigest?: string;
  /** A start's cron schedule, when it has one (`cr`); schedules' actions bind none. */
  cronSchedule?: string;
  /** A start's delay in milliseconds, when it has one (`dl`); schedules' actions bind none. */
  startDelayMs?: number;
  /** True when a start has a workflow retry policy (`rp`); schedules' actions bind none. */
  retried?: boolean;
}

/** A schedule's action as its token binds it (the name it had before start tokens bound starts too). */
export type ScheduledAction = BoundStart;

/**
 * The longest window (`exp` − `iat`, seconds) a token of each use may have: what an edge can issue
 * (a day for start and actor tokens, 366 days for a schedule's). Workers refuse longer ones, so that a
 * token signed with a retired key's copy and dated back to its cut-off (`notAfter`) holds no longer
 * than that after it.
 */
export const MAX_WINDOW = { start: 86_400, actor: 86_400, schedule: 366 * 86_400 } as const;

/**
 * Claims inside the signed token (see docs/wire-format.md). All are required except `wf` / `sch`, the
 * start binding of start and schedule tokens (`wt` / `tq` / `ad`, and a start's `cr` / `dl` / `rp`) and
 * an actor token's call (`nm`).
 */
export const claimsSchema = z
  .object({
    iss: z.string().min(1).max(128),
    /** Audience: the Temporal namespace. */
    aud: z.string().min(1).max(256),
    sub: userContextSchema.shape.userId,
    ws: userContextSchema.shape.workspaceId,
    roles: userContextSchema.shape.roles,
    use: z.enum(['start', 'actor', 'schedule']),
    wf: z.string().min(1).max(1000).optional(),
    sch: z.string().min(1).max(1000).optional(),
    /**
     * Start and schedule tokens: the workflow type and task queue the lineage's root (a schedule's
     * runs) must have been started with (checks 7 and 10). Optional, for tokens issued before they were
     * bound.
     */
    wt: z.string().min(1).max(1000).optional(),
    tq: z.string().min(1).max(1000).optional(),
    /**
     * Start and schedule tokens: the digest of the arguments the root (a schedule's runs) must have been
     * started with (checks 7 and 10). Optional, for tokens issued before arguments were bound.
     */
    ad: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/)
      .optional(),
    /**
     * Actor tokens: the name of the signal, update or query the token was issued for, which the handler
     * that acts on it must be running (check 11). Optional, for tokens issued before calls were bound.
     */
    nm: z.string().min(1).max(1000).optional(),
    /**
     * Start tokens: the start's cron schedule and delay (ms), when it had them; a start without them
     * binds their absence (check 10). Optional, as the start binding is.
     */
    cr: z.string().min(1).max(1000).optional(),
    dl: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
    /** Start tokens: 1 when the start had a workflow retry policy (check 10); absent when it had none. */
    rp: z.literal(1).optional(),
    /** Pseudonyms the header shows; a header whose hints differ from these is refused. */
    wsh: z.string().max(64),
    subh: z.string().max(64),
    iat: z.number().int().nonnegative(),
    /** End of the start window: the lineage must have started by then. */
    exp: z.number().int().nonnegative(),
    jti: z.string().min(8).max(64),
  })
  .strict()
  .refine(
    (c) =>
      // Schedule tokens name the schedule (`sch`) and its action's workflow id (`wf`), which every
      // run's id starts with (`<wf>-<RFC 3339 time>`); start and actor tokens name one workflow id.
      // Only what starts a lineage binds how it starts (`wt`, `tq`), only an actor token its call (`nm`).
      c.use === 'schedule'
        ? c.sch !== undefined && c.wf !== undefined && c.nm === undefined
        : c.wf !== undefined &&
          c.sch === undefined &&
          (c.use === 'start' ? c.nm === undefined : c.wt === undefined && c.tq === undefined),
    {
      message: 'binding must match use',
    },
  )
  // The start binding is both or neither (tokens issued before it was bound have neither); the rest of
  // it only with them, and a start's cron schedule and delay only in start tokens.
  .refine(
    (c) =>
      (c.wt === undefined) === (c.tq === undefined) &&
      (c.ad === undefined || c.wt !== undefined) &&
      ((c.cr === undefined && c.dl === undefined && c.rp === undefined) ||
        (c.use === 'start' && c.wt !== undefined)),
    {
      message: 'a start binds its workflow type and task queue together, and its arguments only with them',
    },
  )
  .refine((c) => c.exp > c.iat, { message: 'exp must follow iat' })
  .refine((c) => c.exp - c.iat <= MAX_WINDOW[c.use], { message: 'window longer than its use allows' });

/** The claims of an opened, verified context token (docs/wire-format.md). */
export type ContextClaims = z.infer<typeof claimsSchema>;
