#!/usr/bin/env node
// Builds the publishable package: JavaScript and declarations compiled from src/ into an output folder
// (default dist/, or --out DIR), with a package.json of its own whose entry points name them. Publish
// that folder (`npm publish dist`): in this repository the package's own package.json points at the
// TypeScript sources, which only a TypeScript-aware runtime (tsx, vitest) loads, and which the SDK's
// workflow bundler does not compile under node_modules.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const at = process.argv.indexOf('--out');
const out = resolve(at > 0 ? process.argv[at + 1] : join(root, 'dist'));

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const tsc = join(root, '..', '..', 'node_modules', 'typescript', 'bin', 'tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out], {
  stdio: 'inherit',
});
// Loaded by path (the SDK requires it on clients and workers and bundles it for the sandbox).
copyFileSync(join(root, 'src', 'failure-converter.cjs'), join(out, 'failure-converter.cjs'));
copyFileSync(join(root, '..', '..', 'README.md'), join(out, 'README.md'));

const source = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const entry = (file) => ({ types: `./${file}.d.ts`, default: `./${file}.js` });
const exports = {};
for (const [name, path] of Object.entries(source.exports)) {
  exports[name] = entry(path.replace(/^\.\/src\//, '').replace(/\.ts$/, ''));
}
const deps = source.dependencies;
const pick = (names) => Object.fromEntries(names.map((n) => [n, deps[n]]));
// The SDK is the application's: one copy of it (two would not share the classes this package checks
// errors and failures against), of the minor version this package is tested with (it reaches into a
// few of the SDK's internal modules).
const temporal = Object.keys(deps).filter(
  (n) => n.startsWith('@temporalio/') && n !== '@temporalio/envconfig',
);
const manifest = {
  name: source.name,
  version: source.version,
  description: source.description,
  license: source.license,
  type: 'module',
  main: './index.js',
  types: './index.d.ts',
  exports,
  bin: { 'temporal-user-context-keys': './cli/keys.js' },
  engines: source.engines,
  dependencies: pick(['jose', 'zod', 'pino', 'nexus-rpc', '@grpc/grpc-js']),
  peerDependencies: {
    ...Object.fromEntries(temporal.map((n) => [n, `~${deps[n]}`])),
    '@temporalio/testing': `~${source.peerDependencies['@temporalio/testing']}`,
    fastify: `^${deps.fastify}`,
  },
  peerDependenciesMeta: {
    '@temporalio/testing': { optional: true },
    // Only `temporal-user-context/codec-server` needs it.
    fastify: { optional: true },
  },
};
writeFileSync(join(out, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`built ${manifest.name}@${manifest.version} into ${out}`);
