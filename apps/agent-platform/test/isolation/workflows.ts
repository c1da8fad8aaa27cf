import { condition, continueAsNew, defineSignal, proxyActivities, setHandler } from '@temporalio/workflow';
import type { IsolationActivities } from './fixtures.js';

const act = proxyActivities<IsolationActivities>({
  startToCloseTimeout: '20s',
  retry: { maximumAttempts: 3 },
});

export async function readAgents(): Promise<string[]> {
  return act.listAgentNames();
}

export async function crossWorkspace(foreignAgentId: string, foreignWorkspace: string) {
  return {
    read: await act.getAgentById(foreignAgentId),
    rename: await act.renameAgent(foreignAgentId, 'pwned'),
    insert: await act.insertAgentInto(foreignWorkspace),
  };
}

export const proceed = defineSignal('proceed');

/** Reads, waits for a signal (the membership may be revoked meanwhile), reads again. */
export async function readSleepRead(): Promise<{ before: string[]; after: string[] }> {
  let go = false;
  setHandler(proceed, () => void (go = true));
  const before = await act.listAgentNames();
  await condition(() => go);
  return { before, after: await act.listAgentNames() };
}

/** Continues as new once, then reads: the new run's activity re-checks the membership. */
export async function readAfterContinueAsNew(round: number): Promise<string[]> {
  if (round === 0) {
    await act.listAgentNames();
    let go = false;
    setHandler(proceed, () => void (go = true));
    await condition(() => go);
    return continueAsNew<typeof readAfterContinueAsNew>(1);
  }
  return act.listAgentNames();
}
