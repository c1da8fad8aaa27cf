import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
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
    return TestWorkflowEnvironment.createFromExistingServer({
      address: process.env.TEMPORAL_ADDRESS,
      namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
    });
  }
  let path: string | undefined;
  try {
    path = execFileSync(process.execPath, [cliScript, '--print-path'], { encoding: 'utf8' }).trim();
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
