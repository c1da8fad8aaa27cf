// The sinks' stderr fallbacks hold a bounded backlog: past it, reports are dropped and counted.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { STDERR_MAX_BUFFERED_BYTES, reportOnStderr } from '../../src/audit/stderr.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('reports on stderr', () => {
  it('are dropped and counted while stderr holds more than its bound, and the count comes first after', () => {
    // Found by review: a sink failing on every record wrote a line each to a stderr nobody read, without
    // bound (gigabytes within seconds).
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => {
      written.push(String(chunk));
      return true;
    });
    const backlog = vi.spyOn(process.stderr, 'writableLength', 'get');
    backlog.mockReturnValue(STDERR_MAX_BUFFERED_BYTES + 1);
    reportOnStderr('one\n');
    reportOnStderr('two\n');
    expect(written).toEqual([]);
    backlog.mockReturnValue(0);
    reportOnStderr('three\n');
    reportOnStderr('four\n');
    expect(written).toEqual([
      'temporal-user-context: 2 reports dropped while stderr did not drain\n',
      'three\n',
      'four\n',
    ]);
  });

  it('never throw, also when stderr does', () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => {
      throw new Error('EPIPE');
    });
    expect(() => reportOnStderr('x\n')).not.toThrow();
  });
});
