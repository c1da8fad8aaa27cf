/**
 * Promises of a lookup by key, kept only once they succeed: concurrent callers share one lookup, a
 * failed one is forgotten (the next caller looks again), and eviction (oldest first) happens only when
 * a lookup succeeded, so a flood of bad keys cannot push good ones out.
 */
export class SuccessCache<V> {
  private readonly entries = new Map<string, Promise<V>>();

  constructor(private readonly size: number) {}

  get(key: string, lookup: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit) return hit;
    const pending = lookup();
    this.entries.set(key, pending);
    pending.then(
      () => {
        if (this.entries.size > this.size) this.entries.delete(this.entries.keys().next().value as string);
      },
      () => this.entries.delete(key),
    );
    return pending;
  }
}
