#!/usr/bin/env node
/**
 * Key set command line:
 *   keys generate --issuer NAME --out DIR   writes DIR/edge.json (signs: the API only) and DIR/worker.json
 *   keys rotate   --in DIR/edge.json --out DIR   retires the active keys (kept verify/decrypt-only) and adds new ones
 *   keys export-pseudonym --in DIR/edge.json --out FILE   writes a lookup file: the pseudonym key alone
 *   keys pseudonym --in FILE [--user ID] [--workspace ID]   prints the pseudonyms the mirrors and
 *                  headers show for that user and/or workspace (at least one), and a list filter for the
 *                  search-attribute mirror
 * Files are written with mode 0600. Give workers only worker.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { KeyRing } from '../crypto/keyring.js';
import { generateKeySet, rotateKeySet, workerKeySet } from '../crypto/generate.js';
import { pseudonymKeyFromJSON, pseudonymsOf } from '../crypto/pseudonym.js';
import { mirrorQuery } from '../client/mirror.js';
import type { KeySetJson } from '../crypto/key-set.js';

function write(dir: string, edge: KeySetJson): void {
  KeyRing.fromJSON(edge); // validate before writing anything
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'edge.json'), `${JSON.stringify(edge, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'worker.json'), `${JSON.stringify(workerKeySet(edge), null, 2)}\n`, {
    mode: 0o600,
  });
  process.stdout.write(
    `wrote ${join(dir, 'edge.json')} (API only) and ${join(dir, 'worker.json')} (workers)\n`,
  );
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
    },
    strict: true,
  });
  if (command === 'generate' && values.out) {
    write(values.out, generateKeySet(values.issuer ?? 'temporal-user-context').edge);
    return 0;
  }
  if (command === 'rotate' && values.in && values.out) {
    write(values.out, rotateKeySet(readJson(values.in)));
    return 0;
  }
  if (command === 'export-pseudonym' && values.in && values.out) {
    const set = readJson(values.in);
    KeyRing.fromJSON(set); // a valid key set, or a coded refusal
    const lookup = { version: 1, issuer: set.issuer, pseudonym: set.pseudonym };
    writeFileSync(values.out, `${JSON.stringify(lookup, null, 2)}\n`, { mode: 0o600 });
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
    'usage: keys generate --issuer NAME --out DIR | keys rotate --in EDGE.json --out DIR\n' +
      '     | keys export-pseudonym --in EDGE.json --out FILE\n' +
      '     | keys pseudonym --in FILE [--user ID] [--workspace ID] (at least one)\n',
  );
  return 2;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  // A refused input or key file: one line naming the code, not a stack trace.
  if (!(err instanceof UserContextError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exitCode = 1;
}
