/**
 * How the Temporal scheduler names the runs it starts: `<action workflow id>-<nominal time>`, the time in
 * RFC 3339 UTC to the second (`-2006-01-02T15:04:05Z`). One definition for every reader of it (found by
 * review: four copies): the verifier (a schedule token's run), the schedule check (a run named for a
 * time to come), the codec (a run's payloads) and the edge (a header's size).
 */
const SUFFIX = /^-(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)$/;
const SUFFIX_LENGTH = '-2006-01-02T15:04:05Z'.length;

/** Whether `run` is the id of a run the scheduler started of the action whose workflow id is `action`. */
export function isScheduledRunOf(run: string, action: string): boolean {
  return (
    run.length === action.length + SUFFIX_LENGTH &&
    run.startsWith(action) &&
    SUFFIX.test(run.slice(action.length))
  );
}

/** The action's workflow id in a scheduled run's id, or `undefined` when `run` has not that shape. */
export function scheduledRunAction(run: string): string | undefined {
  const action = run.slice(0, run.length - SUFFIX_LENGTH);
  return action.length > 0 && SUFFIX.test(run.slice(action.length)) ? action : undefined;
}

/** The nominal time (epoch ms) a scheduled run's id names, or `NaN`. */
export function scheduledRunTime(run: string): number {
  const time = SUFFIX.exec(run.slice(-SUFFIX_LENGTH))?.[1];
  return time === undefined ? NaN : Date.parse(time);
}

/** An id of the shape the scheduler gives the runs of `action`: for sizing what they will carry. */
export function sampleScheduledRunId(action: string): string {
  return `${action}-2000-01-01T00:00:00Z`;
}
