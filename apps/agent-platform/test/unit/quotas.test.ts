import { describe, expect, it } from 'vitest';
import { DEFAULT_QUOTAS, quotasFromEnv, resolveQuotas } from '../../src/api/quotas.js';

describe('quotas', () => {
  it('reads the limits from the environment, defaults where unset or empty', () => {
    expect(quotasFromEnv({})).toEqual(DEFAULT_QUOTAS);
    expect(quotasFromEnv({ AGENT_PLATFORM_MAX_OPEN_RUNS: '', AGENT_PLATFORM_MAX_SCHEDULES: '7' })).toEqual({
      openRuns: 100,
      schedules: 7,
      settlePauseMs: 1000,
    });
  });

  it('refuses a limit that is no whole number from 1 to 100 000', () => {
    for (const value of ['0', '100001', '1e3', '0x10', ' 5', '-1', '2.5'])
      expect(() => quotasFromEnv({ AGENT_PLATFORM_MAX_OPEN_RUNS: value }), value).toThrow(/whole numbers/);
    // Given in code: an explicit undefined means the default, not "no limit".
    expect(resolveQuotas({ openRuns: undefined as unknown as number })).toEqual(DEFAULT_QUOTAS);
    for (const openRuns of [0, -1, 1.5, Number.NaN, Infinity])
      expect(() => resolveQuotas({ openRuns }), String(openRuns)).toThrow(/quotas.openRuns/);
    // The settle pause may be none, but no fraction, negative or endless one.
    expect(resolveQuotas({ settlePauseMs: 0 }).settlePauseMs).toBe(0);
    for (const settlePauseMs of [-1, 1.5, Number.NaN, Infinity, 600_001])
      expect(() => resolveQuotas({ settlePauseMs }), String(settlePauseMs)).toThrow(/quotas.settlePauseMs/);
  });
});
