import { readFileSync } from 'node:fs';
import type { WorkerOptions } from '@temporalio/worker';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * The module id under which the SDK's bundler (webpack, development mode) registers this package's
 * workflow interceptor module: a path relative to where the bundle was built, ending in the package's
 * directory, its source or build folder and `workflow/interceptors`. Matched without touching the file
 * system, so that it holds for bundles built on another machine, and for workers that are bundled
 * themselves. Quotes may be escaped (`devtool: 'eval'`).
 */
const REGISTERED_INTERCEPTORS =
  /\/temporal-user-context\/(?:[\w.-]+\/)?workflow\/interceptors\.[cm]?[jt]s\\?"/;

/**
 * The module id under which the bundler registers this package's failure converter as the sandbox's
 * custom one (`failureConverterPath`), matched the same way.
 */
const REGISTERED_FAILURE_CONVERTER =
  /__temporal_custom_failure_converter \*\/ \\?"[^"\\]*\/temporal-user-context\/(?:[\w.-]+\/)?failure-converter\.cjs\\?"/;

/**
 * Refuses a prebuilt workflow bundle that does not register the workflow interceptors. Given a bundle,
 * the SDK ignores the interceptor modules plugins add, and a bundle built without this plugin would run
 * workflows with no check at start, no actor policy and no audit. The bundler lists the modules it
 * registers in the bundle's `importInterceptors` function: the check looks there (the workflow API
 * imports the interceptor module too, so finding it elsewhere in the bundle proves nothing).
 */
export function assertBundledWithPlugin(
  bundle: NonNullable<WorkerOptions['workflowBundle']>,
  failureConverter: boolean,
): void {
  const code = 'code' in bundle ? bundle.code : readFileSync(bundle.codePath, 'utf8');
  const start = code.indexOf('function importInterceptors()');
  const end = code.indexOf('];', start);
  if (start < 0 || end < 0 || !REGISTERED_INTERCEPTORS.test(code.slice(start, end))) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the workflow bundle does not register this plugin's workflow interceptors, so its workflows " +
        'would run unchecked: build it with bundleWorkflowCode({ workflowsPath, plugins: [plugin] }) ' +
        '(or, for a bundle whose module ids a webpack hook changed, set checkWorkflowBundle: false)',
    );
  }
  // A bundle built before failure messages were encrypted, or with failureMessages: 'clear', would keep
  // what workflows fail with in clear while this worker's activities encrypt theirs.
  if (failureConverter && !REGISTERED_FAILURE_CONVERTER.test(code))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the workflow bundle does not have this plugin's failure converter, so what its workflows fail " +
        'with would be in clear in history: build it with bundleWorkflowCode({ workflowsPath, plugins: ' +
        '[plugin] }) and the same failureMessages, or pass it failureConverterPath (exported by this ' +
        'package); for a bundle whose module ids a webpack hook changed, set checkWorkflowBundle: false',
    );
}
