import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
// Default import: the package is CommonJS, whose named exports plain Node (tsx, the benches) cannot see.
import proto from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';

const cliScript = fileURLToPath(new URL('../scripts/temporal-cli.mjs', import.meta.url));

/** Search attributes the plugin mirrors the context into; the dev server must know them. */
export const testSearchAttributes = [
  defineSearchAttributeKey('UserId', SearchAttributeType.KEYWORD),
  defineSearchAttributeKey('WorkspaceId', SearchAttributeType.KEYWORD),
];

/**
 * Starts a real Temporal dev server through the SDK's test environment, using a CLI binary we already
 * have (no run-time download), or connects to `TEMPORAL_ADDRESS` when it is set (`extraArgs`, more
 * `temporal server start-dev` flags, are then unused).
 */
export async function startTemporal(
  options: { extraArgs?: readonly string[] } = {},
): Promise<TestWorkflowEnvironment> {
  if (process.env.TEMPORAL_ADDRESS) {
    const env = await TestWorkflowEnvironment.createFromExistingServer({
      address: process.env.TEMPORAL_ADDRESS,
      namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
    });
    await registerSearchAttributes(env);
    return env;
  }
  let path: string | undefined;
  try {
    // It may build the CLI from the Go module proxy (minutes); never for good: this blocks vitest itself.
    path = execFileSync(process.execPath, [cliScript, '--print-path'], {
      encoding: 'utf8',
      timeout: 15 * 60_000,
    }).trim();
  } catch {
    path = undefined; // fall through to the SDK's own cached download (machines with internet)
  }
  return TestWorkflowEnvironment.createLocal({
    server: {
      ...(path ? { executable: { type: 'existing-path' as const, path } } : {}),
      searchAttributes: testSearchAttributes,
      extraArgs: [
        '--dynamic-config-value',
        'frontend.enableUpdateWorkflowExecution=true',
        ...(options.extraArgs ?? []),
      ],
    },
  });
}

/**
 * `start()` (a dev server's start), tried again when it fails, three times in all: the dev server exits
 * when a port it was given, or one it picked itself, is taken by the time it binds (other processes on
 * a busy machine). Once only against `TEMPORAL_ADDRESS`, where a failure is no port's.
 */
export async function startRetrying<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt === 3 || process.env.TEMPORAL_ADDRESS) throw err;
      console.warn(`Temporal dev server did not start (attempt ${attempt}), trying again:`, err);
    }
  }
}

/**
 * Registers {@link testSearchAttributes} on a server the tests did not start (a cluster's namespace),
 * as the dev server is given them at start. Temporal Cloud registers them through its own API, not the
 * operator service: there they must exist beforehand, and a failure here is only reported.
 */
async function registerSearchAttributes(env: TestWorkflowEnvironment): Promise<void> {
  const namespace = env.namespace ?? 'default';
  const operator = env.connection.operatorService;
  try {
    const { customAttributes } = await operator.listSearchAttributes({ namespace });
    const missing = testSearchAttributes.filter((key) => !(key.name in (customAttributes ?? {})));
    if (missing.length === 0) return;
    await operator.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        missing.map((key) => [
          key.name,
          proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        ]),
      ),
    });
  } catch (err) {
    console.warn(
      `Could not register the search attributes ${testSearchAttributes.map((k) => k.name).join(', ')} ` +
        `in ${namespace} (register them before the tests):`,
      err,
    );
  }
}
