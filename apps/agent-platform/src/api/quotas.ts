/** Per-workspace limits of the API (`quotas` of createApi). */
export interface Quotas {
  /** Runs pending or running at once (default 100). */
  openRuns: number;
  /** Schedules (default 50). */
  schedules: number;
  /**
   * After a start at the limit whose settling of open records changed nothing, how long the workspace's
   * refused starts settle nothing (default 1 000 ms, from 0 to 600 000): refused starts do not become a
   * stream of describes.
   */
  settlePauseMs: number;
}

export const DEFAULT_QUOTAS: Quotas = { openRuns: 100, schedules: 50, settlePauseMs: 1000 };

const MAX_QUOTA = 100_000;

/**
 * `given` over the defaults; a limit that is no whole number from 1 to 100 000, or a settle pause that is
 * no whole number of milliseconds from 0 to 600 000, is refused.
 */
export function resolveQuotas(given: { [K in keyof Quotas]?: number | undefined } = {}): Quotas {
  const limit = (name: 'openRuns' | 'schedules'): number => {
    const value = given[name] ?? DEFAULT_QUOTAS[name];
    if (!Number.isInteger(value) || value < 1 || value > MAX_QUOTA)
      throw new Error(`quotas.${name} must be a whole number from 1 to ${MAX_QUOTA}`);
    return value;
  };
  const settlePauseMs = given.settlePauseMs ?? DEFAULT_QUOTAS.settlePauseMs;
  if (!Number.isInteger(settlePauseMs) || settlePauseMs < 0 || settlePauseMs > 600_000)
    throw new Error('quotas.settlePauseMs must be a whole number of milliseconds from 0 to 600000');
  return { openRuns: limit('openRuns'), schedules: limit('schedules'), settlePauseMs };
}

/**
 * The limits from the environment: AGENT_PLATFORM_MAX_OPEN_RUNS (default 100) and
 * AGENT_PLATFORM_MAX_SCHEDULES (default 50). One member's runs or schedules share the worker, the model
 * provider and the database with every workspace.
 */
export function quotasFromEnv(env: NodeJS.ProcessEnv = process.env): Quotas {
  // Decimal digits only: Number() would also take `1e3`, `0x12c` and spaces.
  const read = (name: string): number | undefined => {
    const value = env[name];
    if (!value) return undefined;
    if (!/^[0-9]+$/.test(value)) throw new Error(`${name} must be a whole number from 1 to ${MAX_QUOTA}`);
    return Number(value);
  };
  try {
    // resolveQuotas takes an unset limit as its default.
    return resolveQuotas({
      openRuns: read('AGENT_PLATFORM_MAX_OPEN_RUNS'),
      schedules: read('AGENT_PLATFORM_MAX_SCHEDULES'),
    });
  } catch (err) {
    throw new Error(
      `AGENT_PLATFORM_MAX_OPEN_RUNS and AGENT_PLATFORM_MAX_SCHEDULES must be whole numbers from 1 to ${MAX_QUOTA}`,
      { cause: err },
    );
  }
}
