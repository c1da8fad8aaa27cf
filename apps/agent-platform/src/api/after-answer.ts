/**
 * Work the API does after a request's answer (the late deletes of a schedule create that timed out),
 * each by its timer, with what to do instead when the API closes first (`dropped`: log and record what
 * was left undone). Closing also waits for work begun, so that its records go before the sinks close.
 */
export class AfterAnswer {
  private readonly pending = new Map<NodeJS.Timeout, () => void>();
  private readonly working = new Set<Promise<void>>();
  private closed = false;

  /** Runs `work` in `delayMs` (its errors its own), or `dropped` if the API closes first. */
  later(delayMs: number, work: () => Promise<void>, dropped: () => void): void {
    if (this.closed) return dropped();
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      const job: Promise<void> = work()
        .catch(() => undefined)
        .finally(() => this.working.delete(job));
      this.working.add(job);
    }, delayMs);
    timer.unref();
    this.pending.set(timer, dropped);
  }

  /** Drops what has not begun, and waits for what has, at most `maxWaitMs`. */
  async close(maxWaitMs: number): Promise<void> {
    this.closed = true;
    for (const [timer, dropped] of this.pending) {
      clearTimeout(timer);
      dropped();
    }
    this.pending.clear();
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.working]),
      new Promise((resolve) => (waited = setTimeout(resolve, maxWaitMs))),
    ]);
    clearTimeout(waited);
  }
}
