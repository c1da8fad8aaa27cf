import { existsSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
  let stored: StoredKey;
  if (existsSync(file)) {
    // Whoever can write this key mints any user's tokens, and whoever can read it too (found by review:
    // a data directory under /tmp can be seeded by another local user). Not followed through a link.
    const info = lstatSync(file);
    if (!info.isFile() || (info.mode & 0o077) !== 0 || (process.getuid && info.uid !== process.getuid()))
      throw new Error(
        `${file}: the dev issuer's key must be a file of this user that no one else may read or write (chmod 600), not a link`,
      );
    stored = JSON.parse(readFileSync(file, 'utf8')) as StoredKey;
  } else {
    const { privateKey } = await generateKeyPair(ALG, { extractable: true });
    stored = { kid: `dev-${Date.now().toString(36)}`, privateJwk: await exportJWK(privateKey) };
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    // `wx`: a file or link planted meanwhile is not written through.
    writeFileSync(file, JSON.stringify(stored), { mode: 0o600, flag: 'wx' });
  }
  return devIssuerFromKey(stored, options);
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
