import type { TestProject } from 'vitest/node';
import { freePort } from './net.js';
import { startRetrying, startTemporal } from './temporal.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalNamespace: string;
    /** The server's HTTP API (Nexus requests sent straight to an endpoint); '' when unknown. */
    temporalHttpAddress: string;
  }
}

/** One Temporal dev server for the whole run; test files connect to it by address. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // With TEMPORAL_ADDRESS, the HTTP API is wherever TEMPORAL_HTTP_ADDRESS says, if anywhere. Each try
  // of the dev server's start on a fresh port.
  let httpPort: number | undefined;
  const env = await startRetrying(async () => {
    httpPort = process.env.TEMPORAL_ADDRESS ? undefined : await freePort();
    return startTemporal({ extraArgs: httpPort ? ['--http-port', String(httpPort)] : [] });
  });
  project.provide('temporalAddress', env.address);
  project.provide(
    'temporalHttpAddress',
    httpPort ? `http://127.0.0.1:${httpPort}` : (process.env.TEMPORAL_HTTP_ADDRESS ?? ''),
  );
  project.provide('temporalNamespace', env.namespace ?? 'default');
  return async () => {
    await env.teardown();
  };
}
