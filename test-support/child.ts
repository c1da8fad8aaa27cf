/**
 * The longest a test lets a synchronous child process (execFileSync, spawnSync) run. Such a call blocks
 * the test process, where vitest's own timeouts cannot fire: a child that never exits would hold the
 * run. The slowest, a webpack build of the published package, takes ~10 s.
 */
export const CHILD_TIMEOUT = 110_000;
