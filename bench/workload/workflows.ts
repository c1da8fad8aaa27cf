// Benchmark workload: one workflow, three activities (the shape of a small agent run).
import { proxyActivities } from '@temporalio/workflow';
import type * as activities from './activities.js';

const { step } = proxyActivities<typeof activities>({ startToCloseTimeout: '30s' });

export async function threeSteps(input: string): Promise<string> {
  let value = input;
  for (let i = 0; i < 3; i++) value = await step(value, i);
  return value;
}
