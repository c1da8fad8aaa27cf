#!/usr/bin/env node
// Builds the publishable package: JavaScript and declarations compiled from src/ into an output folder
// (default dist/, or --out DIR), with a package.json of its own whose entry points name them. Publish
// that folder (`npm publish dist`): in this repository the package's own package.json points at the
// TypeScript sources, which only a TypeScript-aware runtime (tsx, vitest) loads, and which the SDK's
// workflow bundler does not compile under node_modules.
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = realpathSync(resolve(dirname(fileURLToPath(import.meta.url)), '..'));
const at = process.argv.indexOf('--out');
const given = at > 0 ? process.argv[at + 1] : join(root, 'dist');
if (!given || given.startsWith('-')) {
  console.error('build: --out needs a folder');
  process.exit(2);
}
/** The real path of `path`: its deepest existing folder resolved through symlinks, plus the rest. */
function real(path) {
  const absolute = resolve(path);
  if (existsSync(absolute)) return realpathSync(absolute);
  return join(real(dirname(absolute)), basename(absolute));
}
const out = real(given);
// The folder is emptied first: never the package, a folder holding it, nor one inside it but dist/.
const outside = (rel) => rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel);
const fromOut = relative(out, root);
const inside = relative(root, out);
const holdsPackage = fromOut === '' || !outside(fromOut);
if (holdsPackage || (!outside(inside) && inside !== 'dist')) {
  console.error(`build: refusing to empty ${out} (the package, a folder holding it, or one of its own)`);
  process.exit(2);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const tsc = join(root, '..', '..', 'node_modules', 'typescript', 'bin', 'tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out], {
  stdio: 'inherit',
});
// Loaded by path (the SDK requires it on clients and workers and bundles it for the sandbox).
copyFileSync(join(root, 'src', 'failure-converter.cjs'), join(out, 'failure-converter.cjs'));
// The package's README: an introduction for installing it, then the repository README's library
// sections (from "## Concepts" to "## Layout"), whose docs/ links resolve to the docs shipped beside it.
const repoReadme = readFileSync(join(root, '..', '..', 'README.md'), 'utf8');
const from = repoReadme.indexOf('\n## Concepts\n');
const to = repoReadme.indexOf('\n## Layout\n');
if (from < 0 || to < from) {
  console.error('build: the README has no "## Concepts" ... "## Layout" sections to publish');
  process.exit(2);
}
writeFileSync(
  join(out, 'README.md'),
  `${readFileSync(join(root, 'scripts', 'package-readme.md'), 'utf8').trimEnd()}\n${repoReadme.slice(from, to).trimEnd()}\n`,
);
cpSync(join(root, '..', '..', 'docs'), join(out, 'docs'), { recursive: true });
copyFileSync(join(root, '..', '..', 'LICENSE'), join(out, 'LICENSE'));

const source = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const entry = (file) => ({ types: `./${file}.d.ts`, default: `./${file}.js` });
const exports = {};
for (const [name, path] of Object.entries(source.exports)) {
  exports[name] = entry(path.replace(/^\.\/src\//, '').replace(/\.ts$/, ''));
}
const deps = source.dependencies;
const caret = (names) => Object.fromEntries(names.map((n) => [n, `^${deps[n]}`]));
// The SDK is the application's: one copy of it (two would not share the classes this package checks
// errors and failures against), of the minor version this package is tested with (it reaches into a
// few of the SDK's internal modules).
const temporal = Object.keys(deps).filter((n) => n.startsWith('@temporalio/'));
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
  // sonic-boom is pino's; named here, to patch releases only, because the default sink's exit flush
  // reads its state of a write in progress (src/audit/sinks.ts), which a minor release may reshape.
  dependencies: { ...caret(['jose', 'zod', 'pino']), 'sonic-boom': `~${deps['sonic-boom']}` },
  peerDependencies: {
    ...Object.fromEntries(temporal.map((n) => [n, `~${deps[n]}`])),
    '@temporalio/testing': `~${source.peerDependencies['@temporalio/testing']}`,
    // The SDK's own (its ranges): one copy, so that errors are instances of the classes it checks.
    'nexus-rpc': '^0.0.3',
    '@grpc/grpc-js': '^1.12.4',
    fastify: `^${deps.fastify}`,
    pg: `^${deps.pg.split('.')[0]}`,
  },
  peerDependenciesMeta: {
    // Types only: a client-only application (an API) need not install the worker.
    '@temporalio/worker': { optional: true },
    '@temporalio/testing': { optional: true },
    // `temporal-user-context/codec-server` only.
    fastify: { optional: true },
    // `temporal-user-context/postgres` with `fromPgPool` (PGlite does not; the declarations name no pg
    // type: `PgPoolLike`).
    pg: { optional: true },
  },
};
writeFileSync(join(out, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`built ${manifest.name}@${manifest.version} into ${out}`);
