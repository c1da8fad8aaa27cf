/**
 * Promises of a lookup by key, kept only once they succeed: concurrent callers share one lookup, a
 * failed one is forgotten (the next caller looks again), and eviction (oldest first) happens only when
 * a lookup succeeded, so a flood of bad keys cannot push good ones out. With `ttlMs`, a success is kept
 * that long after its lookup began, then looked up again: for answers that can change (a schedule that
 * is deleted).
 */
export class SuccessCache<V> {
  private readonly entries = new Map<string, { readonly value: Promise<V>; readonly until: number }>();

  constructor(
    private readonly size: number,
    private readonly ttlMs = Infinity,
  ) {}

  get(key: string, lookup: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    // Without a TTL no clock is read (the verifier's token cache is on every activity's path).
    if (hit && (this.ttlMs === Infinity || Date.now() < hit.until)) return hit.value;
    if (hit) this.entries.delete(key);
    const pending = lookup();
    const entry = { value: pending, until: this.ttlMs === Infinity ? Infinity : Date.now() + this.ttlMs };
    this.entries.set(key, entry);
    pending.then(
      () => {
        if (this.entries.size > this.size) this.entries.delete(this.entries.keys().next().value as string);
      },
      // Only this lookup's entry: a later one under the same key (after expiry) stays.
      () => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      },
    );
    return pending;
  }
}
