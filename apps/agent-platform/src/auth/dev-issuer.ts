import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { DATA_DIR } from '../config.js';

export const DEV_ISSUER = 'urn:agent-platform:dev-issuer';
export const DEV_AUDIENCE = 'agent-platform';
const ALG = 'ES256';

/** A local token issuer for development and tests: an ES256 key pair kept in a git-ignored file. */
export interface DevIssuer {
  issuer: string;
  audience: string;
  /** Public keys, as a JWKS document. */
  jwks: { keys: JWK[] };
  mint(claims: {
    user: string;
    workspace: string;
    roles: string[];
    expiresIn?: string;
    /** Its `iat`, epoch seconds (default now): a token obtained earlier. */
    issuedAt?: number;
  }): Promise<string>;
}

interface StoredKey {
  kid: string;
  privateJwk: JWK;
}

export async function loadDevIssuer(
  file = join(DATA_DIR, 'auth', 'dev-issuer.json'),
  options: { issuer?: string; audience?: string } = {},
): Promise<DevIssuer> {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Whoever can write this key, or swap the file (the directory's owner, or anyone who may write it),
  // mints any user's tokens; whoever can read it too (found by review: a data directory under /tmp can
  // be seeded by another local user).
  const where = statSync(dir);
  if (!ownedByMe(where) || (where.mode & 0o022) !== 0)
    throw new Error(`${dir}: the dev issuer's directory must be this user's, and writable by no one else`);
  let stored = readKey(file);
  if (stored === undefined) {
    const { privateKey } = await generateKeyPair(ALG, { extractable: true });
    const made: StoredKey = {
      kid: `dev-${Date.now().toString(36)}`,
      privateJwk: await exportJWK(privateKey),
    };
    try {
      // `wx`: a file or link planted meanwhile is not written through.
      writeFileSync(file, JSON.stringify(made), { mode: 0o600, flag: 'wx' });
      stored = made;
    } catch (err) {
      // Another process's first start made it meanwhile: that one is the key.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      stored = readKey(file);
      if (stored === undefined) throw err;
    }
  }
  return devIssuerFromKey(stored, options);
}

/** Whether a file's or directory's owner is this process's user (always, where there are no uids). */
function ownedByMe(info: { uid: number }): boolean {
  return process.getuid === undefined || info.uid === process.getuid();
}

/**
 * The key in `file`, or undefined when there is none. Opened without following a link, and checked on
 * the open descriptor: a file swapped between a check by path and the read is never the one read.
 */
function readKey(file: string): StoredKey | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    // O_NOFOLLOW on a link.
    if (code === 'ELOOP' || code === 'EMLINK')
      throw new Error(`${file}: the dev issuer's key must be a file of this user, not a link`, {
        cause: err,
      });
    throw err;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile() || (info.mode & 0o077) !== 0 || !ownedByMe(info))
      throw new Error(
        `${file}: the dev issuer's key must be a file of this user that no one else may read or write (chmod 600), not a link`,
      );
    return JSON.parse(readFileSync(fd, 'utf8')) as StoredKey;
  } finally {
    closeSync(fd);
  }
}

/** An in-memory dev issuer (tests). */
export async function createEphemeralIssuer(options: { issuer?: string; audience?: string } = {}) {
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  return devIssuerFromKey({ kid: 'ephemeral', privateJwk: await exportJWK(privateKey) }, options);
}

async function devIssuerFromKey(
  stored: StoredKey,
  options: { issuer?: string; audience?: string },
): Promise<DevIssuer> {
  const issuer = options.issuer ?? DEV_ISSUER;
  const audience = options.audience ?? DEV_AUDIENCE;
  const key = await importJWK(stored.privateJwk, ALG);
  const { x, y, crv, kty } = stored.privateJwk;
  const publicJwk: JWK = { kty, crv, x, y, kid: stored.kid, alg: ALG, use: 'sig' };
  return {
    issuer,
    audience,
    jwks: { keys: [publicJwk] },
    mint: ({ user, workspace, roles, expiresIn, issuedAt }) =>
      new SignJWT({ workspace_id: workspace, roles })
        .setProtectedHeader({ alg: ALG, kid: stored.kid, typ: 'JWT' })
        .setSubject(user)
        .setIssuer(issuer)
        .setAudience(audience)
        .setIssuedAt(issuedAt)
        .setExpirationTime(expiresIn ?? '1h')
        .sign(key),
  };
}
