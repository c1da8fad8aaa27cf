// For fake clients of unit tests: `withDeadline` as the SDK's Client has it, recording each deadline and
// whether a call runs inside one.
export function lookupDeadlines() {
  const deadlines: number[] = [];
  let open = 0;
  return {
    deadlines,
    /** Whether the caller is inside a `withDeadline` scope now. */
    inside: () => open > 0,
    async withDeadline<T>(deadline: number | Date, fn: () => Promise<T>): Promise<T> {
      deadlines.push(Number(deadline));
      open++;
      try {
        return await fn();
      } finally {
        open--;
      }
    },
  };
}
