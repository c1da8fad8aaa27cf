// The package as it is published (`scripts/build.mjs`: compiled JavaScript and declarations), installed
// as a real folder under an application's node_modules rather than this repository's workspace link:
// loaded by plain Node, bundled by the SDK's workflow bundler (which compiles no TypeScript under
// node_modules), its key CLI run as a bin, and its declarations checked by a strict TypeScript consumer.
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHILD_TIMEOUT } from '../../../../test-support/child.js';

const repo = resolve(import.meta.dirname, '../../../..');
let app: string;
let pkg: string;

/** Runs an ES module script with plain Node in the application's folder; returns its stdout. */
function node(script: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: app,
    encoding: 'utf8',
    timeout: CHILD_TIMEOUT,
    // No TypeScript loader, whatever the test runner put in the environment.
    env: { ...process.env, NODE_OPTIONS: '' },
  });
}

beforeAll(() => {
  app = mkdtempSync(join(tmpdir(), 'tuc-published-'));
  pkg = join(app, 'node_modules', 'temporal-user-context');
  execFileSync(
    process.execPath,
    [join(repo, 'packages/temporal-user-context/scripts/build.mjs'), '--out', pkg],
    { stdio: 'pipe', timeout: CHILD_TIMEOUT },
  );
  // Its dependencies and peers, as the application's own installation provides them.
  const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as {
    dependencies: Record<string, string>;
    peerDependencies: Record<string, string>;
  };
  // And pg's types, which an application that makes a pg Pool installs itself.
  for (const name of [
    ...Object.keys(manifest.dependencies),
    ...Object.keys(manifest.peerDependencies),
    '@types/pg',
  ]) {
    const target = join(app, 'node_modules', name);
    mkdirSync(dirname(target), { recursive: true });
    // Where this repository's installation put it: beside the package when another version was hoisted.
    const own = join(repo, 'packages/temporal-user-context/node_modules', name);
    symlinkSync(existsSync(own) ? own : join(repo, 'node_modules', name), target, 'dir');
  }
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: 'consumer', type: 'module', private: true }),
  );
}, 120_000);

afterAll(() => {
  if (app) rmSync(app, { recursive: true, force: true });
});

describe('the published package', () => {
  it('has a README of its own whose links reach the docs shipped with it, and the licence', () => {
    // Found by review: the package shipped the repository's README (its first commands start the
    // reference service), whose twelve docs/ links led nowhere.
    const readme = readFileSync(join(pkg, 'README.md'), 'utf8');
    expect(readme).toContain('npm install temporal-user-context');
    expect(readme).not.toContain('npm install && npm start');
    const links = [...readme.matchAll(/\]\((docs\/[^)#\s]+)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(5);
    expect(links.filter((link) => !existsSync(join(pkg, link)))).toEqual([]);
    expect(readFileSync(join(pkg, 'LICENSE'), 'utf8')).toContain('MIT License');
  });

  it('is JavaScript and declarations only, and every entry point loads with plain Node', () => {
    expect(existsSync(join(pkg, 'index.js'))).toBe(true);
    expect(existsSync(join(pkg, 'index.d.ts'))).toBe(true);
    expect(
      execFileSync('find', [pkg, '-name', '*.ts', '-not', '-name', '*.d.ts'], {
        encoding: 'utf8',
        timeout: CHILD_TIMEOUT,
      }),
    ).toBe('');
    const out = node(`
      const entries = ['temporal-user-context', 'temporal-user-context/workflow', 'temporal-user-context/postgres',
        'temporal-user-context/codec-server', 'temporal-user-context/testing'];
      const loaded = {};
      for (const entry of entries) loaded[entry] = Object.keys(await import(entry)).sort();
      console.log(JSON.stringify(loaded));
    `);
    const loaded = JSON.parse(out) as Record<string, string[]>;
    expect(loaded['temporal-user-context']).toEqual(
      expect.arrayContaining([
        'UserContextPlugin',
        'KeyRing',
        'runAsUser',
        'currentUserContext',
        'ErrorCodes',
      ]),
    );
    expect(loaded['temporal-user-context/workflow']).toEqual(
      expect.arrayContaining(['getUserContext', 'getActor', 'verifyActor', 'userContextFailureCode']),
    );
    expect(loaded['temporal-user-context/postgres']).toEqual(
      expect.arrayContaining(['withUserScope', 'fromPgPool', 'fromPGlite', 'assertIsolation']),
    );
    expect(loaded['temporal-user-context/codec-server']).toContain('createCodecServer');
    expect(loaded['temporal-user-context/testing']).toContain('userActivityEnvironment');
  });

  it('a CommonJS application require()s it (Node 20.19+ and 22.12+ load ES modules so)', () => {
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `const loaded = ['', '/workflow', '/postgres', '/codec-server', '/testing'].map(
           (entry) => Object.keys(require('temporal-user-context' + entry)).length > 0);
         const root = require('temporal-user-context');
         const workflow = require('temporal-user-context/workflow');
         console.log(typeof root.UserContextPlugin, typeof workflow.getUserContext, loaded.join());`,
      ],
      {
        cwd: app,
        encoding: 'utf8',
        timeout: CHILD_TIMEOUT,
        env: { ...process.env, NODE_OPTIONS: '--no-warnings' },
      },
    );
    expect(out.trim()).toBe('function function true,true,true,true,true');
  });

  it("the SDK bundles workflow code that imports it from node_modules, with the plugin's interceptors", () => {
    writeFileSync(
      join(app, 'workflows.js'),
      `import { getUserContext } from 'temporal-user-context/workflow';
       export async function hello() { return (await getUserContext()).userId; }`,
    );
    const out = node(`
      import { bundleWorkflowCode } from '@temporalio/worker';
      import { KeyRing, UserContextPlugin, generateKeySet } from 'temporal-user-context';
      const plugin = new UserContextPlugin({ keys: KeyRing.fromJSON(generateKeySet('consumer').worker), audit: { emit() {} } });
      const { code } = await bundleWorkflowCode({
        workflowsPath: ${JSON.stringify(join(app, 'workflows.js'))},
        plugins: [plugin],
        logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} },
      });
      // The worker's own check of a prebuilt bundle: it registers the plugin's workflow interceptors.
      plugin.configureWorker({ taskQueue: 'q', workflowBundle: { code } });
      console.log(JSON.stringify({ interceptors: /temporal-user-context\\/workflow\\/interceptors\\.js/.test(code) }));
    `);
    expect(JSON.parse(out)).toEqual({ interceptors: true });
  }, 120_000);

  it('its key command line, the file its bin names, runs with plain Node', () => {
    const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    const bin = join(pkg, manifest.bin['temporal-user-context-keys']!);
    expect(readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    execFileSync(process.execPath, [bin, 'generate', '--issuer', 'consumer', '--out', join(app, 'keys')], {
      cwd: app,
      stdio: 'pipe',
      timeout: CHILD_TIMEOUT,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const edge = JSON.parse(readFileSync(join(app, 'keys', 'edge.json'), 'utf8')) as { issuer?: string };
    expect(edge.issuer).toBe('consumer');
    expect(existsSync(join(app, 'keys', 'worker.json'))).toBe(true);
  });

  it('its declarations import no optional peer but where its entry needs it: an application on PGlite needs no pg types', () => {
    // Found by review: the postgres entry's declarations imported pg's Pool type, so a PGlite-only
    // application without @types/pg failed to typecheck with skipLibCheck off, and with it on,
    // fromPgPool's pool silently became \`any\`.
    const declarations = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
        entry.isDirectory()
          ? declarations(join(dir, entry.name))
          : entry.name.endsWith('.d.ts')
            ? [join(dir, entry.name)]
            : [],
      );
    const importing = (module: RegExp) =>
      declarations(pkg)
        .filter((file) => module.test(readFileSync(file, 'utf8')))
        .map((file) => file.slice(pkg.length + 1))
        .sort();
    expect(importing(/from '(?:pg|@electric-sql\/pglite)'/)).toEqual([]);
    // fastify is an optional peer of the codec server's entry alone.
    expect(importing(/from 'fastify'/).every((file) => file.startsWith('codec-server/'))).toBe(true);
  });

  it('its declarations typecheck in a strict consumer, whatever that consumer’s own options', () => {
    writeFileSync(
      join(app, 'consumer.ts'),
      `import { KeyRing, UserContextPlugin, runAsUser, currentUserContext, type UserContext } from 'temporal-user-context';
       import { getUserContext, getActor } from 'temporal-user-context/workflow';
       import { withUserScope, fromPGlite, fromPgPool } from 'temporal-user-context/postgres';
       import pg from 'pg';
       import { createCodecServer } from 'temporal-user-context/codec-server';
       import { userActivityEnvironment } from 'temporal-user-context/testing';
       export const used = [KeyRing, UserContextPlugin, runAsUser, currentUserContext, getUserContext, getActor,
         withUserScope, fromPGlite, createCodecServer, userActivityEnvironment];
       export const who: UserContext = { userId: 'a', workspaceId: 'w', roles: ['member'] };
       // A pg Pool is what fromPgPool takes (its declaration is structural: no pg types in it); a string
       // is no pool.
       export const adapted = fromPgPool(new pg.Pool());
       // @ts-expect-error
       export const notAPool = fromPgPool('not a pool');`,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          exactOptionalPropertyTypes: true,
          noPropertyAccessFromIndexSignature: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: true,
          noEmit: true,
          types: [],
        },
        files: ['consumer.ts'],
      }),
    );
    execFileSync(process.execPath, [join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], {
      cwd: app,
      encoding: 'utf8',
      timeout: CHILD_TIMEOUT,
    });
  }, 120_000);
});
