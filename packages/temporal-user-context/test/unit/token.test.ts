// Sealed tokens: issue at the edge, open on workers, rotation, and a fuzzed decoder.
import { randomBytes, sign as edSign } from 'node:crypto';
import fc from 'fast-check';
import { CompactEncrypt, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  ContextVerifier,
  ErrorCodes,
  KeyRing,
  TokenIssuedAheadError,
  UserContextError,
  generateKeySet,
  issueContextToken,
  openContextToken,
  rotateKeySet,
  workerKeySet,
} from 'temporal-user-context';
import { codeOf as codeOfType } from '../../../../test-support/refusal.js';
import { argsDigest } from '../../src/crypto/args-digest.js';
import { MAX_WINDOW, claimsSchema } from '../../src/crypto/claims.js';
import { verifyOriginatorInParts } from '../../src/worker/verifier.js';

const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const keys = generateKeySet('edge');
const edge = KeyRing.fromJSON(keys.edge);
const worker = KeyRing.fromJSON(keys.worker);

const codeOf = (p: Promise<unknown>) => codeOfType(p, UserContextError);

/**
 * A token signed with the edge ring's own Ed25519 key by hand (not through jose, which would refuse
 * some of what tests write), over exactly `payload`, then sealed with `outer` in the JWE header.
 */
function sealedByHand(
  header: Record<string, unknown>,
  payload: string,
  outer: Record<string, unknown> = { cty: 'JWT' },
): Promise<string> {
  const b64u = (x: string | Buffer) => Buffer.from(x).toString('base64url');
  const input = `${b64u(JSON.stringify(header))}.${b64u(payload)}`;
  const jws = `${input}.${b64u(edSign(null, Buffer.from(input), edge.activeSigningKey()!.privateKey))}`;
  const seal = edge.activeSealingKey();
  return new CompactEncrypt(new TextEncoder().encode(jws))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, ...outer })
    .encrypt(seal.key);
}

/** Whether the claims schema accepts claims of `base` (over a valid token's other claims) with `extra`. */
function claimsAccepted(base: Record<string, unknown>) {
  const claims = {
    iss: 'edge',
    aud: 'ns',
    sub: 'alice',
    ws: 'ws-acme',
    roles: [],
    wsh: 'w'.repeat(22),
    subh: 's'.repeat(22),
    jti: 'j'.repeat(16),
    ...base,
  };
  return (extra: Record<string, unknown>) => claimsSchema.safeParse({ ...claims, ...extra }).success;
}
describe('context tokens', () => {
  it('history shows no readable claim', async () => {
    const { header } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-1',
    });
    const visible = JSON.stringify(header) + Buffer.from(header.tok.split('.')[0]!, 'base64url').toString();
    for (const secret of ['alice', 'ws-acme', 'member', 'wf-1']) expect(visible).not.toContain(secret);
  });

  it('a worker ring opens what the edge issued but cannot issue', async () => {
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-1',
    });
    expect(await openContextToken(worker, header.tok)).toEqual(claims);
    expect(worker.canIssue).toBe(false);
    expect(
      await codeOf(issueContextToken(worker, alice, { namespace: 'default', use: 'start', workflowId: 'x' })),
    ).toBe(ErrorCodes.MISCONFIGURED);
  });

  // Found by review: the edge issued what workers then refused (`roles: 'admin'` became five roles).
  it('issues for a well-formed context and a known use only', async () => {
    const start = { namespace: 'default', use: 'start', workflowId: 'wf-1' } as const;
    for (const bad of [
      { ...alice, userId: 'bad id!' },
      { ...alice, roles: 'admin' },
      { ...alice, extra: 1 },
      null,
    ])
      expect(await codeOf(issueContextToken(edge, bad as never, start)), JSON.stringify(bad)).toBe(
        ErrorCodes.INVALID,
      );
    expect(await codeOf(issueContextToken(edge, alice, { ...start, use: 'bogus' as never }))).toBe(
      ErrorCodes.MISCONFIGURED,
    );
    // A context given as a plain object is parsed, and issued as parsed.
    const { claims } = await issueContextToken(edge, { ...alice, roles: ['member', 'admin'] }, start);
    expect(claims.roles).toEqual(['member', 'admin']);
  });

  it('a token has one spelling: lenient base64url variants of a genuine token are refused before decrypting', async () => {
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-1',
    });
    const [protectedHeader, key, iv, ciphertext, tag] = header.tok.split('.') as [
      string,
      string,
      string,
      string,
      string,
    ];
    // The tag's last character carries two spare bits: a neighbour decodes to the same 16 bytes.
    const last = tag.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const spare = alphabet[alphabet.indexOf(last) ^ 1]!;
    expect(Buffer.from(tag.slice(0, -1) + spare, 'base64url')).toEqual(Buffer.from(tag, 'base64url'));
    const variants = [
      [protectedHeader, key, `${iv}Q`, ciphertext, tag], // a stray trailing character
      [protectedHeader, key, iv, ciphertext, tag.slice(0, -1) + spare], // spare bits set
      [protectedHeader, key, iv, `${ciphertext}==`, tag], // padding
      [protectedHeader, 'AA', iv, ciphertext, tag], // an encrypted key, which dir has none of
      [protectedHeader, key, iv, ciphertext, tag, ''], // a sixth segment
      // Found by mutation testing: the higher two of the tag's four spare bits, and standard base64's
      // letters for base64url's (Node's decoder reads both alphabets, so jose would open either).
      [protectedHeader, key, iv, ciphertext, tag.slice(0, -1) + alphabet[alphabet.indexOf(last) ^ 4]!],
      [protectedHeader, key, iv, ciphertext.replace(/[-_]/, (c) => (c === '-' ? '+' : '/')), tag],
    ].map((parts) => parts.join('.'));
    expect(ciphertext).toMatch(/[-_]/);
    expect(Buffer.from(tag.slice(0, -1) + alphabet[alphabet.indexOf(last) ^ 4]!, 'base64url')).toEqual(
      Buffer.from(tag, 'base64url'),
    );
    for (const variant of variants) {
      expect(variant).not.toBe(header.tok);
      expect(await codeOf(openContextToken(worker, variant)), variant).toBe(ErrorCodes.TOKEN_INVALID);
    }
    expect(await openContextToken(worker, header.tok)).toEqual(claims);
  });

  it('a key set naming two keys of one kind by the same id is refused, whatever the kind', () => {
    const set = JSON.parse(JSON.stringify(keys.edge)) as {
      signing: Array<{ kid: string }>;
      sealing: Array<{ kid: string; status: string }>;
      codec: Array<{ kid: string; status: string }>;
    };
    for (const kind of ['signing', 'sealing', 'codec'] as const) {
      const twice = JSON.parse(JSON.stringify(set)) as typeof set;
      const [first] = twice[kind];
      twice[kind].push({ ...first!, status: 'decrypt-only' } as never);
      if (kind === 'signing') (twice.signing.at(-1) as { status?: string }).status = 'verify-only';
      expect(() => KeyRing.fromJSON(twice as never), kind).toThrow(
        expect.objectContaining({
          code: ErrorCodes.MISCONFIGURED,
          reason: `key set: duplicate ${kind} key id`,
        }),
      );
    }
    // Nor may one id name keys of two kinds: retiring it would remove both.
    const shared = JSON.parse(JSON.stringify(set)) as typeof set;
    shared.codec[0]!.kid = shared.sealing[0]!.kid;
    expect(() => KeyRing.fromJSON(shared as never)).toThrow(
      expect.objectContaining({
        code: ErrorCodes.MISCONFIGURED,
        reason: 'key set: one key id names keys of two kinds',
      }),
    );
  });

  it('seals and encodes with the active key whatever the file order; a codec set needs exactly one active key', () => {
    // Found by mutation testing: the first key of a kind was taken as active, and a codec set with no
    // active key or two of them loaded.
    const secret = (kid: string, status: string) => ({
      kid,
      status,
      k: randomBytes(32).toString('base64url'),
    });
    const set = keys.edge as unknown as { sealing: unknown[]; codec: Array<{ kid: string }> };
    const ring = KeyRing.fromJSON({
      ...set,
      sealing: [secret('seal-old', 'decrypt-only'), secret('seal-next', 'staged'), ...set.sealing],
      codec: [secret('codec-old', 'decrypt-only'), ...set.codec],
    } as never);
    expect(ring.activeSealingKey().kid).toBe(edge.activeSealingKey().kid);
    expect(ring.activeCodecKey().kid).toBe(set.codec[0]!.kid);
    for (const codec of [
      [secret('codec-a', 'decrypt-only')],
      [secret('codec-a', 'active'), secret('codec-b', 'active')],
    ]) {
      expect(() => KeyRing.fromJSON({ ...set, codec } as never)).toThrow(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
    }
  });

  it('case 24: after rotation, tokens under retired keys still open; new ones use the new keys', async () => {
    const old = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-old',
    });
    const rotatedSet = rotateKeySet(keys.edge);
    const rotatedEdge = KeyRing.fromJSON(rotatedSet);
    const rotatedWorker = KeyRing.fromJSON(workerKeySet(rotatedSet));
    expect((await openContextToken(rotatedWorker, old.header.tok)).jti).toBe(old.claims.jti);
    const fresh = await issueContextToken(rotatedEdge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-new',
    });
    expect(await codeOf(openContextToken(worker, fresh.header.tok))).toBe(ErrorCodes.KEY_UNKNOWN);
  });

  it('the verifier caches opened tokens: one token, one decryption', async () => {
    const verifier = new ContextVerifier(worker);
    const { header } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-c',
    });
    expect(verifier.open(header.tok)).toBe(verifier.open(header.tok));
  });

  it('opened claims are frozen: a revocation hook cannot change what later checks of the token read', async () => {
    const verifier = new ContextVerifier(worker);
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'start',
      workflowId: 'wf-frozen',
    });
    const withLin = { ...header, lin: { root: 'wf-frozen', wf: 'wf-frozen', start: claims.iat * 1000 } };
    const facts = { namespace: 'ns-a', workflowId: 'wf-frozen' };
    const first = await verifier.verifyOriginator(withLin, facts);
    expect(Object.isFrozen(first.claims)).toBe(true);
    expect(Object.isFrozen(first.claims.roles)).toBe(true);
    // What a careless (or hostile) isRevoked hook might do with the claims it is given. Modules are
    // strict code: writing to a frozen object throws instead of silently doing nothing.
    const hook = (c: Record<string, unknown> & { roles: string[] }) => {
      c.aud = 'ns-b';
      c.exp = Number.MAX_SAFE_INTEGER;
      c.roles.push('admin');
    };
    expect(() => hook(first.claims as never)).toThrow(TypeError);
    const again = await verifier.verifyOriginator(withLin, facts);
    expect(again.claims).toBe(first.claims); // the same cached object
    expect(again.claims).toEqual(claims);
    expect(again.context.roles).toEqual(['member']);
    expect(await codeOf(verifier.verifyOriginator(withLin, { ...facts, namespace: 'ns-b' }))).toBe(
      ErrorCodes.AUDIENCE_MISMATCH,
    );
    expect(Object.isFrozen(await openContextToken(worker, header.tok))).toBe(true);
  });

  it('audience, lineage and window are checked against the facts given', async () => {
    const verifier = new ContextVerifier(worker);
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'start',
      workflowId: 'wf-1',
    });
    const lin = { root: 'wf-1', wf: 'wf-1', start: claims.iat * 1000 };
    await expect(
      verifier.verifyOriginator({ ...header, lin }, { namespace: 'ns-a', workflowId: 'wf-1' }),
    ).resolves.toMatchObject({ context: alice });
    expect(
      await codeOf(verifier.verifyOriginator({ ...header, lin }, { namespace: 'ns-b', workflowId: 'wf-1' })),
    ).toBe(ErrorCodes.AUDIENCE_MISMATCH);
    expect(
      await codeOf(verifier.verifyOriginator({ ...header, lin }, { namespace: 'ns-a', workflowId: 'wf-2' })),
    ).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await codeOf(verifier.verifyOriginator(header, { namespace: 'ns-a', workflowId: 'wf-1' }))).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    const late = { ...lin, start: (claims.exp + 3600) * 1000 };
    expect(
      await codeOf(
        verifier.verifyOriginator({ ...header, lin: late }, { namespace: 'ns-a', workflowId: 'wf-1' }),
      ),
    ).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it('a token issued a little past a worker clock that lags is retried, not refused; far past it, refused (found by review)', async () => {
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'start',
      workflowId: 'wf-1',
    });
    const facts = { namespace: 'ns-a', workflowId: 'wf-1' };
    const lin = { root: 'wf-1', wf: 'wf-1', start: claims.iat * 1000 };
    /** What a worker whose clock is `behind` seconds behind the edge's answers (30 s of skew tolerated). */
    const at = (behind: number) =>
      new ContextVerifier(worker, { now: () => (claims.iat - behind) * 1000 })
        .verifyOriginator({ ...header, lin }, facts)
        .then(
          () => 'verified',
          (err: unknown) =>
            err instanceof TokenIssuedAheadError
              ? `retry (${err.aheadSeconds} s)`
              : ((err as UserContextError).code ?? String(err)),
        );
    expect(await at(30)).toBe('verified');
    // 45 s behind: one worker's clock, not a verdict on the run.
    expect(await at(45)).toBe('retry (15 s)');
    expect(await at(630)).toBe('retry (600 s)');
    expect(await at(631)).toBe(ErrorCodes.TOKEN_EXPIRED);
  });

  it("an actor's window is measured at the time given (an activity's first scheduling), never later than now", async () => {
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'actor',
      workflowId: 'wf-1',
    });
    const lin = { root: 'wf-1', wf: 'wf-1', start: claims.iat * 1000 };
    const late = (claims.exp + 3600) * 1000;
    const verifier = new ContextVerifier(worker, { now: () => late });
    const facts = { namespace: 'ns-a', workflowId: 'wf-1' };
    // An hour past the window, now: expired.
    expect(await codeOf(verifier.verifyActor({ ...header, lin }, facts))).toBe(ErrorCodes.TOKEN_EXPIRED);
    // A retry of an activity first scheduled inside the window acts as its actor.
    const within = claims.iat * 1000 + 1000;
    expect(await codeOf(verifier.verifyActor({ ...header, lin }, { ...facts, at: within }))).toBeUndefined();
    // A time after now, or none, is not taken: now decides.
    expect(await codeOf(verifier.verifyActor({ ...header, lin }, { ...facts, at: late + 1000 }))).toBe(
      ErrorCodes.TOKEN_EXPIRED,
    );
    expect(await codeOf(verifier.verifyActor({ ...header, lin }, { ...facts, at: 0 }))).toBe(
      ErrorCodes.TOKEN_EXPIRED,
    );
    // Retries act for the actor for a day past the window at most (30 s of skew tolerated).
    const dayLater = new ContextVerifier(worker, { now: () => (claims.exp + 30 + 86_400 + 1) * 1000 });
    expect(await codeOf(dayLater.verifyActor({ ...header, lin }, { ...facts, at: within }))).toBe(
      ErrorCodes.TOKEN_EXPIRED,
    );
    const justInside = new ContextVerifier(worker, { now: () => (claims.exp + 30 + 86_400) * 1000 });
    expect(
      await codeOf(justInside.verifyActor({ ...header, lin }, { ...facts, at: within })),
    ).toBeUndefined();
  });

  it('a start token that binds its start holds only for a lineage stating that start (check 10)', async () => {
    const verifier = new ContextVerifier(worker);
    const digest = argsDigest(['agent-1']);
    const bound = async (argsDigest?: string) =>
      issueContextToken(edge, alice, {
        namespace: 'ns-a',
        use: 'start',
        workflowId: 'wf-1',
        boundStart: { workflowType: 'Agent', taskQueue: 'agents', ...(argsDigest ? { argsDigest } : {}) },
      });
    const { header, claims } = await bound(digest);
    expect(header.b).toBe(1);
    expect([claims.wt, claims.tq, claims.ad]).toEqual(['Agent', 'agents', digest]);
    const lin = { root: 'wf-1', wf: 'wf-1', start: claims.iat * 1000, wt: 'Agent', tq: 'agents', ad: digest };
    const facts = { namespace: 'ns-a', workflowId: 'wf-1' };
    const verdict = (over: Record<string, unknown>, h = header) =>
      codeOf(verifier.verifyOriginator({ ...h, lin: { ...lin, ...over } }, facts));
    expect(await verdict({})).toBeUndefined();
    for (const over of [
      { wt: undefined, tq: undefined, ad: undefined },
      { wt: undefined },
      { tq: undefined },
      { wt: 'Other' },
      { tq: 'other-queue' },
      { ad: argsDigest(['agent-2']) },
    ])
      expect(await verdict(over), JSON.stringify(over)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // A cron schedule the token does not bind, or lacks one it binds; a delay the server shows.
    expect(await verdict({ cr: '@every 1m' })).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await verdict({ dl: 0 })).toBeUndefined();
    expect(await verdict({ dl: 5000 })).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await verdict({ rp: 1 })).toBe(ErrorCodes.LINEAGE_MISMATCH);
    const cron = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'start',
      workflowId: 'wf-1',
      boundStart: {
        workflowType: 'Agent',
        taskQueue: 'agents',
        cronSchedule: '@every 1m',
        startDelayMs: 5000,
        retried: true,
      },
    });
    expect([cron.claims.cr, cron.claims.dl, cron.claims.rp]).toEqual(['@every 1m', 5000, 1]);
    expect(await verdict({ ad: undefined, cr: '@every 1m', rp: 1 }, cron.header)).toBeUndefined();
    expect(await verdict({ ad: undefined, rp: 1 }, cron.header)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await verdict({ ad: undefined, cr: '@every 1m' }, cron.header)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await verdict({ ad: undefined, cr: '@every 1m', rp: 1, dl: 5000 }, cron.header)).toBeUndefined();
    expect(await verdict({ ad: undefined, cr: '@every 1m', rp: 1, dl: 0 }, cron.header)).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    // No header states a digest of the arguments (it would expose them): without one (header mode) only
    // type and queue are compared; a digest is the server's (`withServerLineage`), and must match.
    expect(await verdict({ ad: undefined })).toBeUndefined();
    // Without bound arguments, any digest (or none) passes; type and queue are still compared.
    const typed = await bound();
    expect(typed.claims.ad).toBeUndefined();
    expect(await verdict({ ad: undefined }, typed.header)).toBeUndefined();
    expect(await verdict({ ad: argsDigest(['agent-2']) }, typed.header)).toBeUndefined();
    expect(await verdict({ wt: 'Other' }, typed.header)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // A token issued before starts were bound holds as before, whatever the lineage states.
    const { header: unbound } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'start',
      workflowId: 'wf-1',
    });
    expect(unbound.b).toBeUndefined();
    expect(await verdict({ wt: undefined, tq: undefined, ad: undefined }, unbound)).toBeUndefined();
    // ... unless the verifier requires bound starts (once every edge binds them).
    const strict = new ContextVerifier(worker, { requireBoundTokens: true });
    expect(
      await codeOf(
        strict.verifyOriginator({ ...unbound, lin: { root: 'wf-1', wf: 'wf-1', start: lin.start } }, facts),
      ),
    ).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await codeOf(strict.verifyOriginator({ ...header, lin }, facts))).toBeUndefined();
    // The public check never leaves it out, whatever a caller passes (the guards' partial form below).
    const partial = { boundStart: false, lateStart: () => Promise.resolve({ root: 'wf-1', chainStart: 0 }) };
    const publicCheck = verifier.verifyOriginator.bind(verifier) as (...args: unknown[]) => Promise<unknown>;
    expect(await codeOf(publicCheck({ ...header, lin: { ...lin, wt: 'Other' } }, facts, partial))).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    // A check that leaves the binding to the server's facts (server lineage, Nexus) skips it.
    expect(
      await codeOf(
        verifier[verifyOriginatorInParts]({ ...header, lin: { ...lin, wt: 'Other' } }, facts, {
          boundStart: false,
        }),
      ),
    ).toBeUndefined();
  });

  it("an actor token that binds its call holds only in that call's handler (check 11)", async () => {
    const verifier = new ContextVerifier(worker);
    const actorToken = (call?: string) =>
      issueContextToken(edge, alice, {
        namespace: 'ns-a',
        use: 'actor',
        workflowId: 'wf-1',
        ...(call === undefined ? {} : { call }),
      });
    const { header, claims } = await actorToken('signal:approve');
    expect([header.b, claims.nm]).toEqual([1, 'signal:approve']);
    const lin = { root: 'wf-1', wf: 'wf-1', start: claims.iat * 1000 };
    const facts = { namespace: 'ns-a', workflowId: 'wf-1' };
    const verdict = (hn?: string, h = header, v = verifier) =>
      codeOf(v.verifyActor({ ...h, lin: hn === undefined ? lin : { ...lin, hn } }, facts));
    expect(await verdict('signal:approve')).toBeUndefined();
    // Another call, the same name of another kind, or outside any handler.
    for (const hn of ['signal:reject', 'update:approve', 'query:approve', 'approve', undefined])
      expect(await verdict(hn), String(hn)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // A token that binds no call (an earlier edge's) holds anywhere, unless bound tokens are required.
    const { header: unbound } = await actorToken();
    expect(unbound.b).toBeUndefined();
    expect(await verdict(undefined, unbound)).toBeUndefined();
    expect(await verdict('signal:reject', unbound)).toBeUndefined();
    const strict = new ContextVerifier(worker, { requireBoundTokens: true });
    expect(await verdict(undefined, unbound, strict)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(await verdict('signal:approve', header, strict)).toBeUndefined();
    // A call no worker could open is refused where it is issued.
    for (const call of ['', 'x'.repeat(1001)])
      expect(await codeOf(actorToken(call)), `${call.length} characters`).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('with requireBoundTokens, a schedule token that binds no action (an earlier edge) is refused', async () => {
    const { claims } = await issueContextToken(edge, alice, {
      namespace: 'ns-a',
      use: 'schedule',
      workflowId: 'job',
      scheduleId: 'nightly',
      scheduledAction: { workflowType: 'Report', taskQueue: 'reports' },
    });
    // The same token as an edge before schedule tokens bound their action issued it: no wt, tq.
    const { wt: _wt, tq: _tq, ...legacyClaims } = claims;
    const signer = edge.activeSigningKey()!;
    const seal = edge.activeSealingKey();
    const jws = await new SignJWT(legacyClaims)
      .setProtectedHeader({ alg: 'EdDSA', kid: signer.kid, typ: 'tuc+jwt' })
      .sign(signer.privateKey);
    const tok = await new CompactEncrypt(new TextEncoder().encode(jws))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: 'JWT' })
      .encrypt(seal.key);
    const root = 'job-2026-12-01T00:00:00Z';
    const header = {
      v: 1 as const,
      tok,
      ws: claims.wsh,
      sub: claims.subh,
      lin: { root, wf: root, start: claims.iat * 1000, sched: 'nightly', wt: 'AnyType', tq: 'any-queue' },
    };
    const facts = { namespace: 'ns-a', workflowId: root };
    expect(await codeOf(new ContextVerifier(worker).verifyOriginator(header, facts))).toBeUndefined();
    const strict = new ContextVerifier(worker, { requireBoundTokens: true });
    await expect(strict.verifyOriginator(header, facts)).rejects.toMatchObject({
      code: ErrorCodes.LINEAGE_MISMATCH,
      reason: 'the schedule token binds no action',
    });
  });

  it('only start and schedule tokens bind a start; the binding names type and queue together', async () => {
    const accepts = claimsAccepted({ wf: 'wf-1', iat: 1, exp: 2 });
    const ad = 'a'.repeat(43);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', ad })).toBe(true);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q' })).toBe(true);
    expect(accepts({ use: 'start' })).toBe(true);
    expect(accepts({ use: 'start', wt: 'T' })).toBe(false);
    expect(accepts({ use: 'start', ad })).toBe(false);
    expect(accepts({ use: 'actor', wt: 'T', tq: 'Q' })).toBe(false);
    expect(accepts({ use: 'actor', ad })).toBe(false);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', cr: '@every 1h', dl: 1000 })).toBe(true);
    expect(accepts({ use: 'start', cr: '@every 1h' })).toBe(false);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', rp: 1 })).toBe(true);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', rp: true })).toBe(false);
    expect(accepts({ use: 'start', rp: 1 })).toBe(false);
    expect(accepts({ use: 'actor', rp: 1 })).toBe(false);
    expect(accepts({ use: 'start', dl: 1000 })).toBe(false);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', dl: 0 })).toBe(false);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', dl: 1.5 })).toBe(false);
    expect(accepts({ use: 'actor', cr: '@every 1h' })).toBe(false);
    expect(accepts({ use: 'schedule', sch: 's', wt: 'T', tq: 'Q', cr: '@every 1h' })).toBe(false);
    expect(accepts({ use: 'actor', nm: 'approve' })).toBe(true);
    expect(accepts({ use: 'actor', nm: 'approve', ad })).toBe(false);
    expect(accepts({ use: 'start', wt: 'T', tq: 'Q', nm: 'approve' })).toBe(false);
    expect(accepts({ use: 'schedule', sch: 's', nm: 'approve' })).toBe(false);
  });

  it('claims name what their use binds (wf, sch), exp follows iat, and no window outlasts its use', () => {
    const accepts = claimsAccepted({ iat: 1000, exp: 1001 });
    expect(accepts({ use: 'start', wf: 'wf-1' })).toBe(true);
    expect(accepts({ use: 'actor', wf: 'wf-1' })).toBe(true);
    expect(accepts({ use: 'schedule', wf: 'wf-1', sch: 's' })).toBe(true);
    // Start and actor tokens name one workflow, and no schedule; schedule tokens name both.
    expect(accepts({ use: 'start' })).toBe(false);
    expect(accepts({ use: 'actor' })).toBe(false);
    expect(accepts({ use: 'start', wf: 'wf-1', sch: 's' })).toBe(false);
    expect(accepts({ use: 'actor', wf: 'wf-1', sch: 's' })).toBe(false);
    expect(accepts({ use: 'schedule', sch: 's' })).toBe(false);
    expect(accepts({ use: 'schedule', wf: 'wf-1' })).toBe(false);
    // exp strictly after iat.
    expect(accepts({ use: 'start', wf: 'wf-1', exp: 1000 })).toBe(false);
    expect(accepts({ use: 'start', wf: 'wf-1', exp: 999 })).toBe(false);
    // The window of each use, to the second: a longer one (a retired key's copy dated back to its
    // cut-off, with a far exp) is refused.
    for (const use of ['start', 'actor', 'schedule'] as const) {
      const binding = use === 'schedule' ? { wf: 'wf-1', sch: 's' } : { wf: 'wf-1' };
      expect(accepts({ use, ...binding, exp: 1000 + MAX_WINDOW[use] })).toBe(true);
      expect(accepts({ use, ...binding, exp: 1000 + MAX_WINDOW[use] + 1 })).toBe(false);
    }
    expect(MAX_WINDOW).toEqual({ start: 86_400, actor: 86_400, schedule: 366 * 86_400 });
  });

  it('a sealed token whose inner header is not exactly EdDSA / tuc+jwt / known kid is refused, even validly signed', async () => {
    const { claims } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-h',
    });
    const signer = edge.activeSigningKey()!;
    const sealed = (header: Record<string, unknown>, outer?: Record<string, unknown>) =>
      sealedByHand(header, JSON.stringify(claims), outer);
    const genuine = { alg: 'EdDSA', kid: signer.kid, typ: 'tuc+jwt' };
    expect(await openContextToken(worker, await sealed(genuine))).toEqual(claims);
    // The outer `cty` keeps apart what the same keys seal: a sealed Nexus operation token, or no type.
    for (const outer of [{ cty: 'tuc-nexus-op+json' }, {}]) {
      expect(await codeOf(openContextToken(worker, await sealed(genuine, outer)))).toBe(
        ErrorCodes.TOKEN_INVALID,
      );
    }
    for (const [header, code] of [
      [{ ...genuine, alg: 'none' }, ErrorCodes.TOKEN_INVALID],
      [{ ...genuine, alg: 'HS256' }, ErrorCodes.TOKEN_INVALID],
      [{ kid: signer.kid, typ: 'tuc+jwt' }, ErrorCodes.TOKEN_INVALID],
      [{ ...genuine, typ: 'JWT' }, ErrorCodes.TOKEN_INVALID],
      [{ alg: 'EdDSA', kid: signer.kid }, ErrorCodes.TOKEN_INVALID],
      [{ ...genuine, kid: 'sig-unknown' }, ErrorCodes.KEY_UNKNOWN],
      [{ ...genuine, kid: '../../etc/passwd' }, ErrorCodes.KEY_UNKNOWN],
      [{ ...genuine, crit: ['b64'], b64: true }, ErrorCodes.TOKEN_INVALID],
    ] as const) {
      expect(await codeOf(openContextToken(worker, await sealed(header)))).toBe(code);
    }
  });

  it('case 18: claims that repeat a key are refused, even validly signed and sealed', async () => {
    const { claims } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-d',
    });
    const header = { alg: 'EdDSA', kid: edge.activeSigningKey()!.kid, typ: 'tuc+jwt' };
    const sealed = (payload: string) => sealedByHand(header, payload);
    const text = JSON.stringify(claims);
    expect(await openContextToken(worker, await sealed(text))).toEqual(claims);
    // A second `ws` after the first: JSON.parse would keep it, a first-wins reader the genuine one.
    const twice = `${text.slice(0, -1)},"ws":"ws-other"}`;
    expect(await codeOf(openContextToken(worker, await sealed(twice)))).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('property: mutated and random tokens only ever produce named errors', async () => {
    const { header, claims } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-f',
    });
    const tok = header.tok;
    const mutated = fc
      .tuple(
        fc.nat({ max: tok.length - 1 }),
        fc.constantFrom('A', '.', '_', '-', '', 'eyJ'),
        fc.nat({ max: 3 }),
      )
      .map(([at, insert, drop]) => tok.slice(0, at) + insert + tok.slice(at + drop));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(mutated, fc.string({ maxLength: 300 }), fc.base64String({ maxLength: 300 })),
        async (candidate) => {
          let opened: unknown;
          try {
            opened = await openContextToken(worker, candidate);
          } catch (err) {
            expect(err).toBeInstanceOf(UserContextError);
            return;
          }
          // A mutation may only open when base64url decodes it to the same bytes (spare bits of the
          // last character of a segment); then it must yield exactly the signed claims.
          expect(opened).toEqual(claims);
        },
      ),
      { numRuns: 500 },
    );
  });
});
