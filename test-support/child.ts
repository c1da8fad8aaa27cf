import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The longest a test lets a synchronous child process (execFileSync, spawnSync) run. Such a call blocks
 * the test process, where vitest's own timeouts cannot fire: a child that never exits would hold the
 * run. The slowest, a webpack build of the published package, takes ~10 s.
 */
export const CHILD_TIMEOUT = 110_000;

const keysCliPath = fileURLToPath(
  new URL('../packages/temporal-user-context/src/cli/keys.ts', import.meta.url),
);

/**
 * Runs the package's key command line (`temporal-user-context-keys`, from its TypeScript source) with
 * `args`, within {@link CHILD_TIMEOUT}; a run that could not start or timed out throws (its `status`
 * would be null, not a verdict).
 */
export function keysCli(...args: string[]): SpawnSyncReturns<string> {
  const result = spawnSync(process.execPath, ['--import', 'tsx', keysCliPath, ...args], {
    encoding: 'utf8',
    timeout: CHILD_TIMEOUT,
  });
  if (result.error) throw result.error;
  return result;
}
