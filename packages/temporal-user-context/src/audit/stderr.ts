/**
 * How many bytes of reports stderr may hold while it does not drain. The sinks' fallbacks (an audit
 * sink that throws, a summary not written, a database record that could not be inserted) write one
 * line per record: with a stalled stderr reader and a flood of records, they held every line (found by
 * review: gigabytes within seconds), the failure the stdout sink's own bound exists to prevent.
 */
export const STDERR_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

let dropped = 0;

/**
 * Writes `line` (one line, newline included) to stderr, unless stderr already holds more than
 * {@link STDERR_MAX_BUFFERED_BYTES}: then it is dropped and counted, and the count is written before
 * the next line that fits. Never throws (stderr itself may have failed: nowhere is left to report to).
 */
export function reportOnStderr(line: string): void {
  try {
    const stderr = process.stderr;
    if (stderr.writableLength > STDERR_MAX_BUFFERED_BYTES) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      stderr.write(`temporal-user-context: ${dropped} reports dropped while stderr did not drain\n`);
      dropped = 0;
    }
    stderr.write(line);
  } catch {
    // stderr itself failed (a closed pipe): nowhere is left to report to.
  }
}
