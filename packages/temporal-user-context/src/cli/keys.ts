#!/usr/bin/env node
/**
 * Key set command line (docs/operations.md, _Keys_):
 *   keys generate --issuer NAME --out DIR   writes DIR/edge.json (signs: the API only) and DIR/worker.json
 *   keys stage    --in DIR/edge.json --out DIR   adds fresh keys as `staged` (roll out everywhere first)
 *   keys activate --in DIR/edge.json --out DIR   makes the staged keys active and retires the old ones
 *                 [--grace-seconds N]            (the old signing key verifies tokens issued up to N s
 *                                                 after it, default 86400: the edges' rollout)
 *   keys rotate   --in DIR/edge.json --out DIR   both at once (a leak, or every holder updated together)
 *   keys retire   --in DIR/edge.json --kid KID --out DIR   removes a retired (or staged) key
 *   keys export-pseudonym --in DIR/edge.json --out FILE   writes a lookup file: the pseudonym key alone
 *   keys pseudonym --in FILE [--user ID] [--workspace ID]   prints the pseudonyms the mirrors and
 *                  headers show for that user and/or workspace (at least one), and a list filter for the
 *                  search-attribute mirror
 * Files are written with mode 0600, whole or not at all, and never over an existing file unless `--force`
 * is given. Give workers only worker.json.
 */
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { KeyRing } from '../crypto/keyring.js';
import {
  activateKeySet,
  generateKeySet,
  retireKey,
  rotateKeySet,
  stageKeySet,
  workerKeySet,
} from '../crypto/generate.js';
import { pseudonymKeyFromJSON, pseudonymsOf } from '../crypto/pseudonym.js';
import { mirrorQuery } from '../client/mirror.js';
import type { KeySetJson } from '../crypto/key-set.js';

function refuse(reason: string): never {
  throw new UserContextError(ErrorCodes.MISCONFIGURED, reason);
}

/**
 * Writes `text` to `path` with mode 0600: into a fresh private directory beside it first (so nobody can
 * swap the file before it moves), flushed to disk, then moved into place, so a reader never sees half a
 * key set and an existing file's looser mode is not inherited. Without `force` an existing file (or a
 * dangling link) is left alone: `link` refuses to replace one, atomically.
 */
function writeSecretFile(path: string, text: string, force: boolean): void {
  const staging = mkdtempSync(join(dirname(path), '.keys-'));
  const temp = join(staging, 'key-set.json');
  try {
    const fd = openSync(temp, 'wx', 0o600);
    try {
      writeSync(fd, text);
      fchmodSync(fd, 0o600); // the umask may have narrowed it further, never widened: set it exactly
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (force) renameSync(temp, path);
    else {
      try {
        linkSync(temp, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') refuse(`${path} exists (--force replaces it)`);
        throw err;
      }
    }
    syncDirectory(dirname(path));
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** Makes the new directory entry durable: after a crash the file is the old one or the new one. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Whether anything, even a dangling symbolic link, is at `path`. */
function occupied(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

/** Writes the edge set and the worker set derived from it, as a pair. */
function write(dir: string, edge: KeySetJson, force: boolean): void {
  // Validate before writing anything, and only ever write an edge set: a worker's set given as --in
  // (it has no private halves) would otherwise replace edge.json with a set that cannot issue.
  if (!KeyRing.fromJSON(edge).canIssue)
    refuse('--in must be the edge set (edge.json, with the private signing key)');
  const files = { edge: join(dir, 'edge.json'), worker: join(dir, 'worker.json') };
  // Both or neither: checked before the first write, so a refusal leaves no half-written pair.
  if (!force)
    for (const file of Object.values(files))
      if (occupied(file)) refuse(`${file} exists (--force replaces it)`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeSecretFile(files.edge, `${JSON.stringify(edge, null, 2)}\n`, force);
  writeSecretFile(files.worker, `${JSON.stringify(workerKeySet(edge), null, 2)}\n`, force);
  process.stdout.write(`wrote ${files.edge} (API only) and ${files.worker} (workers)\n`);
}

/** The same file, through links and `..`: the path compared as the filesystem resolves it. */
function sameFile(a: string, b: string): boolean {
  const resolved = (path: string) => {
    try {
      return realpathSync(path);
    } catch {
      // Not there yet: its directory resolved, its name as given.
      try {
        return join(realpathSync(dirname(path)), basename(path));
      } catch {
        return resolve(path);
      }
    }
  };
  return resolved(a) === resolved(b);
}

function readJson(path: string): KeySetJson {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `cannot read ${path}`);
  }
  try {
    return JSON.parse(text) as KeySetJson;
  } catch {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `${path} is not JSON`);
  }
}

/** A key set file, checked as a ring before anything is derived from it (a coded refusal, no TypeError). */
function readKeySet(path: string): KeySetJson {
  const set = readJson(path);
  KeyRing.fromJSON(set);
  return set;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      issuer: { type: 'string' },
      out: { type: 'string' },
      in: { type: 'string' },
      user: { type: 'string' },
      workspace: { type: 'string' },
      kid: { type: 'string' },
      'grace-seconds': { type: 'string' },
      force: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const force = values.force === true;
  if (command === 'generate' && values.out) {
    write(values.out, generateKeySet(values.issuer ?? 'temporal-user-context').edge, force);
    return 0;
  }
  // How long edges may still sign with the key an activation retires (default a day).
  const grace = values['grace-seconds'];
  if (grace !== undefined && command !== 'activate' && command !== 'rotate')
    refuse('--grace-seconds is for activate and rotate only');
  const activation = grace === undefined ? {} : { graceSeconds: /^\d+$/.test(grace) ? Number(grace) : NaN };
  // A Map, not an object: `keys constructor ...` must not find an inherited member.
  const transforms = new Map<string | undefined, (set: KeySetJson) => KeySetJson>([
    ['stage', stageKeySet],
    ['activate', (set) => activateKeySet(set, activation)],
    ['rotate', (set) => rotateKeySet(set, activation)],
  ]);
  const transform = transforms.get(command);
  if (transform && values.in && values.out) {
    write(values.out, transform(readKeySet(values.in)), force);
    return 0;
  }
  if (command === 'retire' && values.in && values.kid && values.out) {
    write(values.out, retireKey(readKeySet(values.in), values.kid), force);
    return 0;
  }
  if (command === 'export-pseudonym' && values.in && values.out) {
    // Never over the key set it reads, --force or not: that would replace every key with the lookup.
    if (sameFile(values.out, values.in)) refuse('--out must not be the --in file');
    const set = readJson(values.in);
    KeyRing.fromJSON(set); // a valid key set, or a coded refusal
    const lookup = { version: 1, issuer: set.issuer, pseudonym: set.pseudonym };
    writeSecretFile(values.out, `${JSON.stringify(lookup, null, 2)}\n`, force);
    process.stdout.write(`wrote ${values.out} (the pseudonym key only: for looking users up)\n`);
    return 0;
  }
  if (command === 'pseudonym' && values.in && (values.user || values.workspace)) {
    const key = pseudonymKeyFromJSON(readJson(values.in));
    // One of the two may be left out (all of a user's workflows, or a whole workspace's): a valid
    // placeholder stands in for it and its pseudonym is not printed.
    const p = pseudonymsOf(key, { userId: values.user ?? 'x', workspaceId: values.workspace ?? 'x' });
    const found = {
      ...(values.user ? { userId: p.userId } : {}),
      ...(values.workspace ? { workspaceId: p.workspaceId } : {}),
    };
    const query = mirrorQuery('pseudonym', key, { userId: values.user, workspaceId: values.workspace });
    process.stdout.write(`${JSON.stringify({ ...found, query })}\n`);
    return 0;
  }
  process.stderr.write(
    'usage: keys generate --issuer NAME --out DIR\n' +
      '     | keys stage|activate|rotate --in EDGE.json --out DIR [--grace-seconds N]\n' +
      '     | keys retire --in EDGE.json --kid KID --out DIR\n' +
      '     | keys export-pseudonym --in EDGE.json --out FILE\n' +
      '       (add --force to replace existing files)\n' +
      '     | keys pseudonym --in FILE [--user ID] [--workspace ID] (at least one)\n',
  );
  return 2;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  // A refused input, key file or file operation: one line naming the code, not a stack trace.
  const io = err as NodeJS.ErrnoException;
  if (err instanceof UserContextError) process.stderr.write(`${err.message}\n`);
  else if (err instanceof Error && typeof io.syscall === 'string')
    process.stderr.write(`${ErrorCodes.MISCONFIGURED}: cannot ${io.syscall} ${io.path ?? ''}: ${io.code}\n`);
  else throw err;
  process.exitCode = 1;
}
