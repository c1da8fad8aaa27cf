// The scheduler's run ids (`<action workflow id>-<RFC 3339 time>`), read in one place.
import { describe, expect, it } from 'vitest';
import {
  isScheduledRunOf,
  sampleScheduledRunId,
  scheduledRunAction,
  scheduledRunTime,
} from '../../src/context/scheduled-run-id.js';

describe('scheduled run ids', () => {
  const run = 'report-2026-12-01T09:30:00Z';

  it('names a run of its action only, to the second, in UTC', () => {
    expect(isScheduledRunOf(run, 'report')).toBe(true);
    for (const [id, action] of [
      [run, 'repor'], // another action's prefix
      ['report-x-2026-12-01T09:30:00Z', 'report'], // more between the action and the time
      ['report-2026-12-01T09:30:00.5Z', 'report'], // fractions
      ['report-2026-12-01T09:30:00+01:00', 'report'], // an offset
      [`${run}x`, 'report'],
      ['report', 'report'],
    ] as const)
      expect(isScheduledRunOf(id, action), id).toBe(false);
  });

  it('reads the action and the time back, and names no action for an id of another shape', () => {
    expect(scheduledRunAction(run)).toBe('report');
    expect(scheduledRunAction('a-b-2026-12-01T09:30:00Z')).toBe('a-b');
    expect(scheduledRunAction('-2026-12-01T09:30:00Z')).toBeUndefined();
    expect(scheduledRunAction('report-9:30')).toBeUndefined();
    expect(scheduledRunTime(run)).toBe(Date.UTC(2026, 11, 1, 9, 30));
    expect(scheduledRunTime('report-now')).toBeNaN();
  });

  it('samples an id of the runs’ shape, as long as theirs', () => {
    const sample = sampleScheduledRunId('report');
    expect(isScheduledRunOf(sample, 'report')).toBe(true);
    expect(sample).toHaveLength(run.length);
  });
});
