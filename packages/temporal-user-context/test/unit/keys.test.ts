// Key sets: the two-step rotation, retiring a key, what a key set must be to load, and the CLI's files.
import { sign as edSign, verify as edVerify, createPublicKey } from 'node:crypto';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { CompactEncrypt, SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AesGcmPayloadCodec,
  ContextVerifier,
  ErrorCodes,
  KeyRing,
  UserContextError,
  UserContextPlugin,
  activateKeySet,
  generateKeySet,
  issueContextToken,
  memoryAuditSink,
  openContextToken,
  retireKey,
  rotateKeySet,
  stageKeySet,
  workerKeySet,
  type KeySetJson,
} from 'temporal-user-context';
import { codeOf as codeOfType } from '../../../../test-support/refusal.js';
import { keysCli } from '../../../../test-support/child.js';

const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const codeOf = (p: Promise<unknown>) => codeOfType(p, UserContextError);
const clone = (set: KeySetJson): KeySetJson => JSON.parse(JSON.stringify(set)) as KeySetJson;
const misconfigured = expect.objectContaining({ code: ErrorCodes.MISCONFIGURED });

async function token(ring: KeyRing, workflowId: string): Promise<string> {
  return (await issueContextToken(ring, alice, { namespace: 'default', use: 'start', workflowId })).header
    .tok;
}
function codec(ring: KeyRing): AesGcmPayloadCodec {
  return new AesGcmPayloadCodec({ namespace: 'default', keys: ring.codecKeyMaterial() });
}
const payload = {
  metadata: { encoding: new TextEncoder().encode('json/plain') },
  data: new Uint8Array([49]),
};
const wf = { type: 'workflow' as const, namespace: 'default', workflowId: 'wf-1' };

describe('rotation in two steps: stage everywhere, then activate', () => {
  const old = generateKeySet('edge').edge;
  const staged = stageKeySet(old);
  const activated = activateKeySet(staged);

  it('a staged set still signs, seals and encrypts with the current keys', async () => {
    const stagedEdge = KeyRing.fromJSON(staged);
    const oldWorker = KeyRing.fromJSON(workerKeySet(old));
    expect(await openContextToken(oldWorker, await token(stagedEdge, 'wf-a'))).toMatchObject({
      sub: 'alice',
    });
    const [sealed] = await codec(stagedEdge).encode([payload], wf);
    expect((await codec(oldWorker).decode([sealed!], wf))[0]!.data).toEqual(Buffer.from(payload.data));
  });

  it('once every holder is staged, the first to activate is understood by all the others, both ways', async () => {
    const stagedEdge = KeyRing.fromJSON(staged);
    const stagedWorker = KeyRing.fromJSON(workerKeySet(staged));
    const newEdge = KeyRing.fromJSON(activated);
    const newWorker = KeyRing.fromJSON(workerKeySet(activated));
    // The activated edge's tokens open on a worker that is only staged, and the old edge's on an activated one.
    expect(await openContextToken(stagedWorker, await token(newEdge, 'wf-b'))).toMatchObject({
      sub: 'alice',
    });
    expect(await openContextToken(newWorker, await token(stagedEdge, 'wf-c'))).toMatchObject({
      sub: 'alice',
    });
    // Payloads encrypted by an activated worker decode at a staged edge (results), and the other way.
    const [fromNew] = await codec(newWorker).encode([payload], wf);
    expect((await codec(stagedEdge).decode([fromNew!], wf))[0]!.data).toEqual(Buffer.from(payload.data));
    const [fromStaged] = await codec(stagedEdge).encode([payload], wf);
    expect((await codec(newWorker).decode([fromStaged!], wf))[0]!.data).toEqual(Buffer.from(payload.data));
    // Without the staging step, what the new keys make is unknown to a holder of the old set.
    const oldWorker = KeyRing.fromJSON(workerKeySet(old));
    expect(await codeOf(openContextToken(oldWorker, await token(newEdge, 'wf-d')))).toBe(
      ErrorCodes.KEY_UNKNOWN,
    );
    expect(await codeOf(codec(oldWorker).decode([fromNew!], wf))).toBe(ErrorCodes.KEY_UNKNOWN);
  });

  it('activation retires the old signing key without its private half, and promotes every staged key', () => {
    const [retired, current] = activated.signing;
    expect(retired).toMatchObject({ kid: old.signing[0]!.kid, status: 'verify-only' });
    expect(retired!.jwk).not.toHaveProperty('d');
    expect(current).toMatchObject({ kid: staged.signing[1]!.kid, status: 'active' });
    expect(current!.jwk.d).toBeDefined();
    expect(activated.sealing.map((k) => k.status)).toEqual(['decrypt-only', 'active']);
    expect(activated.codec!.map((k) => k.status)).toEqual(['decrypt-only', 'active']);
    // One rotation at a time, and nothing to activate without a stage.
    expect(() => stageKeySet(staged)).toThrow(misconfigured);
    // A worker's set is never rotated: staged, it would put a private signing key into a worker's file;
    // activated or trimmed, it would be written back as an edge set that cannot issue.
    expect(() => stageKeySet(workerKeySet(old))).toThrow(misconfigured);
    expect(() => activateKeySet(workerKeySet(staged))).toThrow(misconfigured);
    expect(() => retireKey(workerKeySet(activated), old.sealing[0]!.kid)).toThrow(misconfigured);
    expect(() => activateKeySet(activated)).toThrow(misconfigured);
  });

  it('the retired signing key verifies only what was issued up to the activation and its grace', async () => {
    const day = 86_400;
    const at = Date.now();
    const fresh = activateKeySet(staged, { now: at });
    expect(fresh.signing[0]!.notAfter).toBe(Math.floor(at / 1000) + day);
    expect(activateKeySet(staged, { now: at, graceSeconds: 60 }).signing[0]!.notAfter).toBe(
      Math.floor(at / 1000) + 60,
    );
    // A copy of the old edge set (its private signing half) taken before the rotation: an edge not yet
    // given the activated set signs with it, within the grace; after it, a copy mints nothing.
    const copy = KeyRing.fromJSON(old);
    const tok = await token(copy, 'wf-copy');
    expect(await openContextToken(KeyRing.fromJSON(workerKeySet(fresh)), tok)).toMatchObject({
      sub: 'alice',
    });
    const longAgo = activateKeySet(staged, { now: at - 2 * day * 1000 });
    expect(await codeOf(openContextToken(KeyRing.fromJSON(workerKeySet(longAgo)), tok))).toBe(
      ErrorCodes.TOKEN_INVALID,
    );
    // Tokens of the new active key are not held to it.
    const current = await token(KeyRing.fromJSON(longAgo), 'wf-new');
    expect(await openContextToken(KeyRing.fromJSON(workerKeySet(longAgo)), current)).toMatchObject({
      sub: 'alice',
    });
    // A cut-off belongs to a retired key only; a grace outside 0–366 days is refused.
    const onActive = clone(fresh);
    onActive.signing[1]!.notAfter = 1;
    expect(() => KeyRing.fromJSON(onActive)).toThrow(misconfigured);
    for (const graceSeconds of [-1, 1.5, 367 * day, Number.NaN])
      expect(() => activateKeySet(staged, { graceSeconds }), String(graceSeconds)).toThrow(misconfigured);
  });

  it("a token dated back to the cut-off holds no longer than its use's longest window after it", async () => {
    const day = 86_400;
    const longAgo = activateKeySet(staged, { now: Date.now() - 30 * day * 1000 });
    const notAfter = longAgo.signing[0]!.notAfter!;
    const worker = KeyRing.fromJSON(workerKeySet(longAgo));
    const copy = KeyRing.fromJSON(old);
    // Dated to the cut-off by the copy's holder: it opens (iat ≤ notAfter), and its window is long shut.
    const { header, claims } = await issueContextToken(copy, alice, {
      namespace: 'default',
      use: 'actor',
      workflowId: 'wf-1',
      now: () => notAfter * 1000,
    });
    expect(await openContextToken(worker, header.tok)).toMatchObject({ iat: notAfter });
    const lin = { root: 'wf-1', wf: 'wf-1', start: notAfter * 1000 };
    expect(
      await codeOf(
        new ContextVerifier(worker).verifyActor(
          { ...header, lin },
          { namespace: 'default', workflowId: 'wf-1' },
        ),
      ),
    ).toBe(ErrorCodes.TOKEN_EXPIRED);
    // The same claims with a ten-year window, signed and sealed by hand: refused when opened.
    const signer = copy.activeSigningKey()!;
    const seal = copy.activeSealingKey();
    const jws = await new SignJWT({ ...claims, exp: notAfter + 3650 * day })
      .setProtectedHeader({ alg: 'EdDSA', kid: signer.kid, typ: 'tuc+jwt' })
      .sign(signer.privateKey);
    const forged = await new CompactEncrypt(new TextEncoder().encode(jws))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: 'JWT' })
      .encrypt(seal.key);
    expect(await codeOf(openContextToken(worker, forged))).toBe(ErrorCodes.INVALID);
    // Nor does an edge issue one: a day for start and actor tokens, 366 days for a schedule's.
    for (const [use, windowSeconds] of [
      ['start', day + 1],
      ['actor', day + 1],
    ] as const)
      expect(
        await codeOf(
          issueContextToken(copy, alice, { namespace: 'default', use, workflowId: 'wf-1', windowSeconds }),
        ),
        use,
      ).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('a ring keeps only the active private half in memory, and says whether its set held any', () => {
    const ring = KeyRing.fromJSON(staged);
    expect([...ring.signing.values()].map((k) => k.privateKey !== undefined)).toEqual([true, false]);
    expect(ring.holdsPrivateKey).toBe(true);
    expect(KeyRing.fromJSON(workerKeySet(staged)).holdsPrivateKey).toBe(false);
  });

  it('a rotation leaves payload encryption off in a set that has no codec keys', () => {
    const noCodec = { ...clone(old), codec: [] };
    expect(rotateKeySet(noCodec).codec).toEqual([]);
    expect(KeyRing.fromJSON(rotateKeySet(noCodec)).codec.size).toBe(0);
    const absent = clone(old);
    delete absent.codec;
    expect(rotateKeySet(absent).codec).toBeUndefined();
  });

  it('retireKey removes a retired key, so what it made stops opening; never the active one', async () => {
    const oldEdge = KeyRing.fromJSON(old);
    const tok = await token(oldEdge, 'wf-e');
    const worker = KeyRing.fromJSON(workerKeySet(activated));
    expect(await openContextToken(worker, tok)).toMatchObject({ sub: 'alice' });
    const withoutOldSealing = retireKey(activated, old.sealing[0]!.kid);
    expect(await codeOf(openContextToken(KeyRing.fromJSON(workerKeySet(withoutOldSealing)), tok))).toBe(
      ErrorCodes.KEY_UNKNOWN,
    );
    const withoutOldSigning = retireKey(activated, old.signing[0]!.kid);
    expect(withoutOldSigning.signing.map((k) => k.kid)).toEqual([staged.signing[1]!.kid]);
    expect(() => retireKey(activated, activated.signing[1]!.kid)).toThrow(misconfigured);
    expect(() => retireKey(activated, 'no-such-key')).toThrow(misconfigured);
  });
});

describe('what a key set must be to load', () => {
  const good = generateKeySet('edge').edge;
  const refused = (mutate: (set: KeySetJson) => void): void => {
    const set = clone(good);
    mutate(set);
    expect(() => KeyRing.fromJSON(set)).toThrow(misconfigured);
  };
  const zeros = 'A'.repeat(43);

  it('loads the generated set (the control)', () => {
    expect(KeyRing.fromJSON(clone(good)).canIssue).toBe(true);
  });

  it('a key file that cannot be read is a named refusal that names the file and why', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tuc-keyfile-'));
    for (const [path, why] of [
      [join(dir, 'missing.json'), 'ENOENT'],
      [dir, 'EISDIR'],
    ] as const)
      expect(() => KeyRing.fromEnv({ USER_CONTEXT_KEYS_FILE: path })).toThrow(
        expect.objectContaining({
          code: ErrorCodes.MISCONFIGURED,
          message: expect.stringContaining(`${JSON.stringify(path)} not readable (${why})`),
        }),
      );
    rmSync(dir, { recursive: true });
  });

  it('refuses unknown JWK members and non-canonical base64url', () => {
    refused((s) => Object.assign(s.signing[0]!.jwk, { kid: 'x' }));
    // The same 32 bytes spelled with the two low (padding) bits set: decodes alike, must not load.
    const x = s2(good.signing[0]!.jwk.x);
    expect(Buffer.from(x, 'base64url').equals(Buffer.from(good.signing[0]!.jwk.x, 'base64url'))).toBe(true);
    refused((s) => (s.signing[0]!.jwk.x = x));
    refused((s) => (s.sealing[0]!.k = s2(s.sealing[0]!.k)));
  });

  it('refuses secrets of one repeated byte and a secret used twice, across key ids or purposes', () => {
    refused((s) => (s.sealing[0]!.k = zeros));
    refused((s) => (s.codec![0]!.k = '_'.repeat(42) + '8'));
    refused((s) => (s.pseudonym.k = zeros));
    refused((s) => (s.codec![0]!.k = s.sealing[0]!.k));
    refused((s) => (s.pseudonym.k = s.sealing[0]!.k));
    refused((s) => s.sealing.push({ kid: 'seal-twice', status: 'decrypt-only', k: s.sealing[0]!.k }));
  });

  it('refuses no active signing key, two active ones, and a private half that is not the public half', () => {
    refused((s) => (s.signing[0]!.status = 'verify-only'));
    const other = generateKeySet('edge').edge.signing[0]!;
    refused((s) => s.signing.push({ ...other }));
    refused((s) => (s.signing[0]!.jwk.d = other.jwk.d));
  });

  it('refuses small-order public keys, under which node:crypto accepts a forged signature', () => {
    // R = the identity, S = 0: under the identity key, node:crypto verifies it for any message.
    const identity = Buffer.from('01'.padEnd(64, '0'), 'hex');
    const forged = Buffer.concat([identity, Buffer.alloc(32)]);
    const key = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: identity.toString('base64url') },
      format: 'jwk',
    });
    expect(edVerify(null, Buffer.from('any token'), key, forged)).toBe(true);
    // Every encoding of the eight points of small order: each y with both sign bits, and the
    // non-canonical y + p where it fits in 255 bits (14 in all).
    const ones = 'ff'.repeat(30);
    for (const hex of [
      `01${'00'.repeat(30)}00`, // the identity (order 1)
      `01${'00'.repeat(30)}80`,
      `ee${ones}7f`, // the identity as p + 1
      `ee${ones}ff`,
      `ec${ones}7f`, // order 2 (y = p - 1)
      `ec${ones}ff`,
      `00${'00'.repeat(30)}00`, // order 4 (y = 0)
      `00${'00'.repeat(30)}80`,
      `ed${ones}7f`, // order 4, y = 0 as p
      `ed${ones}ff`,
      '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
      '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85',
      'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
      'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa',
    ]) {
      refused((s) => {
        s.signing[0]!.jwk = { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hex, 'hex').toString('base64url') };
      });
    }
    // A genuine key signs and verifies as before (the check is not a blanket refusal).
    const ring = KeyRing.fromJSON(clone(good));
    const signer = ring.activeSigningKey()!;
    expect(
      edVerify(null, Buffer.from('m'), signer.publicKey, edSign(null, Buffer.from('m'), signer.privateKey)),
    ).toBe(true);
  });

  it('prints no key material when a ring or a plugin holding it is logged', () => {
    const ring = KeyRing.fromJSON(clone(good));
    const plugin = new UserContextPlugin({ keys: ring, audit: memoryAuditSink() });
    const printed = [inspect(ring, { depth: 20 }), inspect(plugin, { depth: 20 }), JSON.stringify(ring)].join(
      '\n',
    );
    const secrets = [...good.sealing, ...good.codec!, good.pseudonym].map((k) => k.k);
    const bytes = secrets.map((k) => [...Buffer.from(k, 'base64url')].slice(0, 6).join(', '));
    for (const text of [...secrets, good.signing[0]!.jwk.d!, ...bytes]) expect(printed).not.toContain(text);
    expect(inspect(ring)).toContain(good.sealing[0]!.kid);
    // The codec still gets the bytes it needs.
    expect(ring.codecKeyMaterial().keys[0]!.key).toHaveLength(32);
  });

  it("hands out copies of its codec keys: a caller that wipes them leaves the ring's intact", async () => {
    const ring = KeyRing.fromJSON(clone(good));
    const first = codec(ring);
    const encoded = await first.encode([payload], wf);
    for (const key of ring.codecKeyMaterial().keys) key.key.fill(0);
    for (const key of ring.codec.values()) key.raw.fill(0);
    // Built after the wipe, a codec still has the set's key: it reads the first one's payloads, and the
    // first reads its own (found by review: the ring's bytes were zeroed, and later codecs encrypted
    // under the all-zero key).
    const second = codec(ring);
    const data = (p: { data?: Uint8Array | null }[]) => [...(p[0]!.data ?? [])];
    expect(data(await second.decode(encoded, wf))).toEqual([49]);
    expect(data(await first.decode(await second.encode([payload], wf), wf))).toEqual([49]);
  });

  it('refuses one Ed25519 key under two key ids (a retired key restored without its cut-off)', () => {
    const rotated = activateKeySet(stageKeySet(clone(good)));
    expect(KeyRing.fromJSON(clone(rotated)).signing.size).toBe(2);
    refused((set) => {
      Object.assign(set, clone(rotated));
      const retired = set.signing.find((k) => k.status === 'verify-only')!;
      set.signing.push({ kid: 'restored', status: 'verify-only', jwk: { ...retired.jwk } });
    });
  });

  it('warns once when a key set file is open to its group or others (0600 is quiet)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tuc-keymode-'));
    const warnings: { message: string; code?: string }[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push({ message: w.message, code: w.code });
    process.on('warning', onWarning);
    try {
      const shared = join(dir, 'shared.json');
      const own = join(dir, 'own.json');
      writeFileSync(shared, JSON.stringify(good));
      chmodSync(shared, 0o644);
      writeFileSync(own, JSON.stringify(good));
      chmodSync(own, 0o600);
      KeyRing.fromFile(shared);
      KeyRing.fromFile(shared);
      KeyRing.fromFile(own);
      return new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        expect(warnings).toEqual([
          { message: expect.stringContaining('mode 0644') as string, code: 'USER_CONTEXT_KEY_FILE_MODE' },
        ]);
        expect(warnings[0]!.message).toContain(shared);
      });
    } finally {
      setImmediate(() => {
        process.off('warning', onWarning);
        rmSync(dir, { recursive: true, force: true });
      });
    }
  });
});

/** The same bytes with the unused low bits of the last base64url character set. */
function s2(b64: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(b64.at(-1)!);
  return b64.slice(0, -1) + alphabet[last | 0b11];
}

describe('the keys command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tuc-keys-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const keys = keysCli;
  const edgeFile = join(dir, 'edge.json');
  const read = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as KeySetJson;

  it('stages, activates and retires; never replaces a file without --force; always writes mode 0600', () => {
    expect(keys('generate', '--out', dir).status).toBe(0);
    const generated = read(edgeFile);
    // A second generate would replace the live keys: refused, the files untouched.
    const again = keys('generate', '--out', dir);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^USER_CONTEXT_MISCONFIGURED: \S+edge\.json exists \(--force replaces it\)/);
    expect(read(edgeFile)).toEqual(generated);
    // A file left world-readable is written back 0600, not with its old mode.
    chmodSync(edgeFile, 0o644);
    expect(keys('stage', '--in', edgeFile, '--out', dir, '--force').status).toBe(0);
    expect(statSync(edgeFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'worker.json')).mode & 0o777).toBe(0o600);
    expect(read(edgeFile).signing.map((k) => k.status)).toEqual(['active', 'staged']);
    expect(read(join(dir, 'worker.json')).signing.every((k) => k.jwk.d === undefined)).toBe(true);
    expect(keys('activate', '--in', edgeFile, '--out', dir, '--grace-seconds', 'x', '--force').status).toBe(
      1,
    );
    const before = Math.floor(Date.now() / 1000);
    expect(
      keys('activate', '--in', edgeFile, '--out', dir, '--grace-seconds', '3600', '--force').status,
    ).toBe(0);
    const after = Math.ceil(Date.now() / 1000);
    const activated = read(edgeFile);
    expect(activated.signing.map((k) => k.status)).toEqual(['verify-only', 'active']);
    // The grace counts from the moment the command ran.
    const notAfter = activated.signing[0]!.notAfter!;
    expect(notAfter).toBeGreaterThanOrEqual(before + 3600);
    expect(notAfter).toBeLessThanOrEqual(after + 3600);
    expect(read(join(dir, 'worker.json')).signing[0]!.notAfter).toBe(notAfter);
    const oldKid = generated.signing[0]!.kid;
    expect(keys('retire', '--in', edgeFile, '--kid', oldKid, '--out', dir, '--force').status).toBe(0);
    expect(read(edgeFile).signing.map((k) => k.kid)).not.toContain(oldKid);
  });

  it('writes only an edge set, leaves no staging files behind, and no half pair beside a dangling link', () => {
    const before = readFileSync(edgeFile, 'utf8');
    expect(keys('stage', '--in', edgeFile, '--out', dir, '--force').status).toBe(0);
    const worker = keys('activate', '--in', join(dir, 'worker.json'), '--out', dir, '--force');
    expect(worker.status).toBe(1);
    expect(worker.stderr).toMatch(/^USER_CONTEXT_MISCONFIGURED: key set: rotate the edge set/);
    expect(read(edgeFile).signing.some((k) => k.jwk.d)).toBe(true);
    expect(keys('activate', '--in', edgeFile, '--out', dir, '--force').status).toBe(0);
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
    expect(readFileSync(edgeFile, 'utf8')).not.toBe(before);
    const fresh = join(dir, 'fresh');
    mkdirSync(fresh);
    symlinkSync(join(dir, 'nowhere'), join(fresh, 'worker.json'));
    expect(keys('generate', '--out', fresh).status).toBe(1);
    expect(readdirSync(fresh)).toEqual(['worker.json']);
  });

  it('refuses a malformed key set with one coded line, and knows no inherited command names', () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{}');
    const malformed = keys('stage', '--in', bad, '--out', join(dir, 'never'));
    expect(malformed.status).toBe(1);
    expect(malformed.stderr).toMatch(/^USER_CONTEXT_MISCONFIGURED: key set: [^\n]*\n$/);
    const inherited = keys('constructor', '--in', edgeFile, '--out', join(dir, 'never'), '--force');
    expect(inherited.status).toBe(2);
    expect(readdirSync(dir)).not.toContain('never');
  });

  it('export-pseudonym never writes over the key set it reads, nor over another file without --force', () => {
    const before = readFileSync(edgeFile, 'utf8');
    const same = keys('export-pseudonym', '--in', edgeFile, '--out', edgeFile, '--force');
    expect(same.status).toBe(1);
    expect(readFileSync(edgeFile, 'utf8')).toBe(before);
    // Nor through a link to its directory.
    symlinkSync(dir, join(dir, 'alias'));
    const linked = keys(
      'export-pseudonym',
      '--in',
      edgeFile,
      '--out',
      join(dir, 'alias', 'edge.json'),
      '--force',
    );
    expect(linked.status).toBe(1);
    expect(readFileSync(edgeFile, 'utf8')).toBe(before);
    // A directory that is not there: one coded line, no stack trace.
    const missing = keys('export-pseudonym', '--in', edgeFile, '--out', join(dir, 'absent', 'lookup.json'));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^USER_CONTEXT_MISCONFIGURED: cannot mkdtemp .*absent.*: ENOENT\n$/);
    const other = join(dir, 'notes.txt');
    writeFileSync(other, 'keep me');
    expect(keys('export-pseudonym', '--in', edgeFile, '--out', other).status).toBe(1);
    expect(readFileSync(other, 'utf8')).toBe('keep me');
  });
});
