// The plugin preloads its workflow interceptor module: evaluated once per reusable V8 context instead of
// once per workflow. Per-workflow isolation under preload is what the integration tests exercise (they
// bundle through the plugin); this checks that the preload is configured and reaches the bundle.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
  failureConverterPath,
  workflowInterceptorsPath,
  type UserContextPluginOptions,
} from 'temporal-user-context';

const plugin = (options: Partial<UserContextPluginOptions> = {}) =>
  new UserContextPlugin({
    keys: KeyRing.fromJSON(generateKeySet('bundle').worker),
    audit: memoryAuditSink(),
    ...options,
  });
const workflowsPath = fileURLToPath(new URL('../fixtures/workflows.ts', import.meta.url));

describe('workflow bundle', () => {
  it('adds the interceptor module to the modules to preload, after the application’s own', () => {
    const options = plugin().configureBundler({ workflowsPath, preloadModules: ['app-module'] });
    expect(options.preloadModules).toEqual(['app-module', workflowInterceptorsPath]);
    expect(options.workflowInterceptorModules).toContain(workflowInterceptorsPath);
  });

  it('the bundle built with the plugin preloads the interceptor module, and a worker takes it', async () => {
    const { code } = await bundleWorkflowCode({
      workflowsPath,
      plugins: [plugin()],
      logger: new DefaultLogger('ERROR'),
    });
    const start = code.indexOf('function preloadModules()');
    expect(start).toBeGreaterThan(-1);
    const body = code.slice(start, code.indexOf('}', start));
    expect(body).toMatch(/__webpack_require__\([^)]*workflow\/interceptors\.ts"\)/);
    // As code, and as a file.
    expect(plugin().configureWorker({ taskQueue: 'q', workflowBundle: { code } }).workflowBundle).toEqual({
      code,
    });
    const dir = mkdtempSync(join(tmpdir(), 'tuc-bundle-'));
    try {
      writeFileSync(join(dir, 'bundle.js'), code);
      const codePath = join(dir, 'bundle.js');
      expect(
        plugin().configureWorker({ taskQueue: 'q', workflowBundle: { codePath } }).workflowBundle,
      ).toEqual({
        codePath,
      });
      expect(() => plugin().configureReplayWorker({ workflowBundle: { codePath } })).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('finds the registered interceptor module under the ids webpack writes, and only there', () => {
    // What the SDK's bundler generates: the modules it registers are required in importInterceptors.
    const bundle = (id: string, elsewhere = '') => ({
      code:
        `${elsewhere}\nexports.importInterceptors = function importInterceptors() {\n  return [\n` +
        `    __webpack_require__(/*! x */ ${id})\n  ];\n}`,
    });
    // The failure converter's check is the next test's.
    const configure = (b: { code: string }, options = {}) =>
      plugin({ failureMessages: 'clear', ...options }).configureWorker({ taskQueue: 'q', workflowBundle: b });
    for (const id of [
      '"./node_modules/temporal-user-context/dist/workflow/interceptors.js"',
      '"./packages/temporal-user-context/src/workflow/interceptors.ts"',
      '"../../node_modules/.pnpm/temporal-user-context@1.0.0/node_modules/temporal-user-context/dist/workflow/interceptors.js"',
      '\\"./node_modules/temporal-user-context/dist/workflow/interceptors.js\\"', // devtool: 'eval'
    ])
      expect(() => configure(bundle(id)), id).not.toThrow();
    const refused = [
      bundle('"./node_modules/x-temporal-user-context/dist/workflow/interceptors.js"'),
      bundle('"./src/workflows/interceptors.ts"'),
      bundle('123'), // production mode's numeric ids
      // Imported by workflow code (the API imports the module) but not registered.
      bundle(
        '"./src/interceptors.ts"',
        '"./node_modules/temporal-user-context/dist/workflow/interceptors.js"',
      ),
      { code: 'exports.x = 1' },
    ];
    for (const b of refused) {
      expect(() => configure(b)).toThrow(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
      expect(() => configure(b, { checkWorkflowBundle: false })).not.toThrow();
    }
  });

  it("with failure messages encrypted, a bundle must have the plugin's failure converter", async () => {
    const registered = (id: string) => ({
      code:
        `exports.importInterceptors = function importInterceptors() {\n  return [\n` +
        `    __webpack_require__(/*! x */ "./node_modules/temporal-user-context/dist/workflow/interceptors.js")\n  ];\n}\n` +
        `const customFailureConverter = (__webpack_require__(/*! __temporal_custom_failure_converter */ ${id}).failureConverter);`,
    });
    const configure = (b: { code: string }, options: Partial<UserContextPluginOptions> = {}) =>
      plugin(options).configureWorker({ taskQueue: 'q', workflowBundle: b });
    for (const id of [
      '"./node_modules/temporal-user-context/dist/failure-converter.cjs"',
      '"./packages/temporal-user-context/src/failure-converter.cjs"',
      '\\"./node_modules/temporal-user-context/src/failure-converter.cjs\\"', // devtool: 'eval'
    ])
      expect(() => configure(registered(id)), id).not.toThrow();
    // Built without it (before failure messages were encrypted, or with failureMessages: 'clear'): what
    // workflows fail with would stay in clear while the worker's activities encrypt theirs.
    for (const b of [registered('"./src/failures.cjs"'), registered('"?4f2a"')]) {
      expect(() => configure(b)).toThrow(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
      expect(() => configure(b, { failureMessages: 'clear' })).not.toThrow();
      expect(() => configure(b, { checkWorkflowBundle: false })).not.toThrow();
      // An application's own converter is its business (and its bundle's).
      expect(() =>
        plugin().configureWorker({
          taskQueue: 'q',
          workflowBundle: b,
          dataConverter: { failureConverterPath: '/app/failures.cjs' },
        }),
      ).not.toThrow();
    }
    // A real bundle built with failureMessages: 'clear', given to a worker whose plugin encrypts them.
    const { code } = await bundleWorkflowCode({
      workflowsPath,
      plugins: [plugin({ failureMessages: 'clear' })],
      logger: new DefaultLogger('ERROR'),
    });
    expect(() => configure({ code })).toThrow(
      expect.objectContaining({
        code: ErrorCodes.MISCONFIGURED,
        message: expect.stringMatching(/failure converter/),
      }),
    );
    // A replayer writes nothing to history: a bundle kept to replay its build's histories is taken.
    expect(() => plugin().configureReplayWorker({ workflowBundle: { code } })).not.toThrow();
    // Built with the converter named by hand (the package exports its path), it is taken too.
    const byHand = await bundleWorkflowCode({
      workflowsPath,
      plugins: [plugin({ failureMessages: 'clear' })],
      failureConverterPath,
      logger: new DefaultLogger('ERROR'),
    });
    expect(() => configure({ code: byHand.code })).not.toThrow();
  }, 60_000);

  it('a prebuilt bundle without the plugin is refused: the SDK would run its workflows without interceptors', async () => {
    const { code } = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') });
    for (const configure of [
      () => plugin().configureWorker({ taskQueue: 'q', workflowBundle: { code } }),
      () => plugin().configureReplayWorker({ workflowBundle: { code } }),
    ]) {
      expect(configure).toThrow(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
    }
  }, 60_000);
});
