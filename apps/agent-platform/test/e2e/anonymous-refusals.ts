// The shutdown-flush check shared by the process tests (`npm start`, `npm run api`): anonymous refusals
// sent just before a stop, and what the coalescing audit sink must have written for them by the time
// the process has exited.
import { expect } from 'vitest';

/** What the audit_log query returns: the refusals' details, in the order they were recorded. */
export const ANONYMOUS_REFUSALS_SQL = `select detail from audit_log
  where action = 'api.request' and reason = 'AUTH_MISSING'
  order by time, recorded_at, detail like '% coalesced; first: %'`;

/** Sends five requests without a token to the API on `port`; each is refused (401). */
export async function sendAnonymousRefusals(port: number): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const refused = await fetch(`http://127.0.0.1:${port}/workspaces/ws-acme/agents`);
    expect(refused.status).toBe(401);
  }
}

/**
 * The first refusal is written at once; the other four wait in the coalescing sink's window, which
 * only the shutdown's flush writes (before the database closes), as one summary.
 */
export function expectAnonymousRefusalsFlushed(details: string[]): void {
  expect(details).toEqual([
    'GET /workspaces/:ws/agents ws=ws-acme',
    expect.stringMatching(/^4 more like it in \d+ s, coalesced; first: GET \/workspaces\/:ws\/agents/),
  ]);
}
