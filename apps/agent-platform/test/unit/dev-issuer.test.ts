// The local development issuer's key file: whoever may read or write it mints any user's tokens.
import { chmodSync, mkdtempSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDevIssuer } from '../../src/auth/dev-issuer.js';

describe('loadDevIssuer', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'dev-issuer-'));

  it('makes its key file for this user alone, and reads the same key back', async () => {
    const file = join(dir(), 'auth', 'dev-issuer.json');
    const first = await loadDevIssuer(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, '..')).mode & 0o777).toBe(0o700);
    expect((await loadDevIssuer(file)).jwks).toEqual(first.jwks);
  });

  it('gives two first starts at once the same key', async () => {
    const file = join(dir(), 'auth', 'dev-issuer.json');
    const [a, b] = await Promise.all([loadDevIssuer(file), loadDevIssuer(file)]);
    expect(a.jwks).toEqual(b.jwks);
  });

  it('refuses a directory others may write: they could swap the key', async () => {
    const shared = dir();
    chmodSync(shared, 0o777);
    await expect(loadDevIssuer(join(shared, 'dev-issuer.json'))).rejects.toThrow(/writable by no one else/);
  });

  it('refuses a key file others may read or write, and one reached through a link', async () => {
    const file = join(dir(), 'dev-issuer.json');
    await loadDevIssuer(file);
    for (const mode of [0o644, 0o620, 0o604]) {
      chmodSync(file, mode);
      await expect(loadDevIssuer(file), mode.toString(8)).rejects.toThrow(/no one else may read or write/);
    }
    chmodSync(file, 0o600);
    const link = join(dir(), 'dev-issuer.json');
    symlinkSync(file, link);
    await expect(loadDevIssuer(link)).rejects.toThrow(/not a link/);
    // One planted open to everyone, before the platform first ran.
    const planted = join(dir(), 'planted.json');
    writeFileSync(planted, '{}', { mode: 0o666 });
    chmodSync(planted, 0o666);
    await expect(loadDevIssuer(planted)).rejects.toThrow(/no one else may read or write/);
  });
});
