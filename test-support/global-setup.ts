import type { TestProject } from 'vitest/node';
import { startTemporal } from './temporal.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalNamespace: string;
  }
}

/** One Temporal dev server for the whole run; test files connect to it by address. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const env = await startTemporal();
  project.provide('temporalAddress', env.address);
  project.provide('temporalNamespace', env.namespace ?? 'default');
  return async () => {
    await env.teardown();
  };
}
