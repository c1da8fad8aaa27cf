import type { TestProject } from 'vitest/node';
import { freePort } from './net.js';
import { startTemporal } from './temporal.js';

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
  // With TEMPORAL_ADDRESS, the HTTP API is wherever TEMPORAL_HTTP_ADDRESS says, if anywhere. The dev
  // server exits when a port it was given, or one it picked itself, is taken by the time it binds (other
  // processes on a busy machine): tried again on fresh ports, three times in all.
  let httpPort: number | undefined;
  let env: Awaited<ReturnType<typeof startTemporal>> | undefined;
  for (let attempt = 1; env === undefined; attempt++) {
    httpPort = process.env.TEMPORAL_ADDRESS ? undefined : await freePort();
    try {
      env = await startTemporal({ extraArgs: httpPort ? ['--http-port', String(httpPort)] : [] });
    } catch (err) {
      if (attempt === 3 || process.env.TEMPORAL_ADDRESS) throw err;
      console.warn(`Temporal dev server did not start (attempt ${attempt}), trying again:`, err);
    }
  }
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
