import type { TestProject } from 'vitest/node';
import { freePort } from './net.js';
import { startRetrying, startTemporal } from './temporal.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalNamespace: string;
    /** The server's HTTP API (Nexus requests sent straight to an endpoint); '' when unknown. */
    temporalHttpAddress: string;
    /** A second namespace of the dev server started here; empty with `TEMPORAL_ADDRESS`. */
    temporalOtherNamespace: string;
  }
}

/** The dev server's second namespace. */
const OTHER_NAMESPACE = 'tuc-other';

/** One Temporal dev server for the whole run; test files connect to it by address. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // With TEMPORAL_ADDRESS, the HTTP API is wherever TEMPORAL_HTTP_ADDRESS says, if anywhere. Each try
  // of the dev server's start on a fresh port.
  let httpPort: number | undefined;
  const env = await startRetrying(async () => {
    httpPort = process.env.TEMPORAL_ADDRESS ? undefined : await freePort();
    return startTemporal({
      // A second namespace, for what must hold outside 'default' (replay.test.ts).
      extraArgs: ['--namespace', OTHER_NAMESPACE, ...(httpPort ? ['--http-port', String(httpPort)] : [])],
    });
  });
  project.provide('temporalAddress', env.address);
  project.provide(
    'temporalHttpAddress',
    httpPort ? `http://127.0.0.1:${httpPort}` : (process.env.TEMPORAL_HTTP_ADDRESS ?? ''),
  );
  project.provide('temporalNamespace', env.namespace ?? 'default');
  // Only on the dev server started here: another server's namespaces are its operator's.
  project.provide('temporalOtherNamespace', process.env.TEMPORAL_ADDRESS ? '' : OTHER_NAMESPACE);
  return async () => {
    await env.teardown();
  };
}
