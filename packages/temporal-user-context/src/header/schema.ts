import { z } from 'zod';
import {
  HEADER_VERSION,
  HINT_PATTERN,
  MAX_HEADER_BYTES,
  MAX_WORKFLOW_ID_CHARS,
  TOKEN_PATTERN,
} from './wire.js';

// The v1 header as a zod schema: the reference definition, read by tests only (they assert that the
// sandbox's dependency-free check in wire.ts accepts exactly what this schema accepts).
const WF_ID = z.string().min(1).max(MAX_WORKFLOW_ID_CHARS);

export const lineageSchema = z
  .object({
    root: WF_ID,
    start: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    wf: WF_ID,
    sched: WF_ID.optional(),
    wt: WF_ID.optional(),
    tq: WF_ID.optional(),
    cr: WF_ID.optional(),
    rp: z.literal(1).optional(),
    hn: WF_ID.optional(),
  })
  .strict();

export const headerSchema = z
  .object({
    v: z.literal(HEADER_VERSION),
    tok: z.string().max(MAX_HEADER_BYTES).regex(TOKEN_PATTERN),
    ws: z.string().regex(HINT_PATTERN),
    sub: z.string().regex(HINT_PATTERN),
    b: z.literal(1).optional(),
    lin: lineageSchema.optional(),
  })
  .strict();
