/**
 * What the API remembers between settlings of a workspace's open run records (see `settleOpenRuns` in
 * app.ts), bounded: when each workspace's last settling changed nothing, kept only while it still
 * counts (`pauseMs`), and when each open record was last looked at, for the most recently settled
 * `maxWorkspaces` workspaces (found by review: both maps kept every workspace that ever reached its
 * open-run limit, for the life of the process). What is forgotten only restarts the rotation through a
 * workspace's records.
 */
export class SettleMemory {
  /** When a workspace's last settling changed nothing, oldest first. */
  private readonly idleSince = new Map<string, number>();
  /** By workspace, least recently settled first: when each open record was last looked at. */
  private readonly lookedAt = new Map<string, Map<string, number>>();

  constructor(
    private readonly pauseMs: number,
    private readonly maxWorkspaces = 1000,
  ) {}

  /** Whether a settling of `workspaceId` that changed nothing ended less than `pauseMs` ago. */
  pausing(workspaceId: string, now: number): boolean {
    return now - (this.idleSince.get(workspaceId) ?? -Infinity) < this.pauseMs;
  }

  /** Records how a settling ended: `changed` ends the pause, else it starts now. */
  settled(workspaceId: string, changed: boolean, now: number): void {
    this.idleSince.delete(workspaceId);
    if (!changed) this.idleSince.set(workspaceId, now);
    // Oldest first: what is past the pause goes.
    for (const [id, since] of this.idleSince) {
      if (now - since < this.pauseMs) break;
      this.idleSince.delete(id);
    }
  }

  /**
   * The workspace's records' last looks, holding only the `open` ones (none: forgotten), as the most
   * recently settled workspace.
   */
  looks(workspaceId: string, open: ReadonlySet<string>): Map<string, number> {
    const looked = this.lookedAt.get(workspaceId) ?? new Map<string, number>();
    this.lookedAt.delete(workspaceId);
    for (const id of looked.keys()) if (!open.has(id)) looked.delete(id);
    if (open.size === 0) return looked;
    this.lookedAt.set(workspaceId, looked);
    if (this.lookedAt.size > this.maxWorkspaces)
      this.lookedAt.delete(this.lookedAt.keys().next().value as string);
    return looked;
  }

  /** How many workspaces each map holds (for tests). */
  get sizes(): { idle: number; looked: number } {
    return { idle: this.idleSince.size, looked: this.lookedAt.size };
  }
}
