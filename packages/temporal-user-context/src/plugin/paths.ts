import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);

/**
 * The failure converter module installed while the codec is on (`failureMessages`): clients and workers
 * require() it, the bundler puts it into the workflow sandbox.
 */
export const failureConverterPath = fileURLToPath(new URL('../failure-converter.cjs', import.meta.url));

/** The workflow interceptor module, bundled into the workflow sandbox by the worker. */
export const workflowInterceptorsPath = fileURLToPath(
  new URL(`../workflow/interceptors${extname(here)}`, import.meta.url),
);
