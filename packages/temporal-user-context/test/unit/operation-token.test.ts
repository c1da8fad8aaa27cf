// Sealed Nexus operation tokens: what a cancel is held to (docs/wire-format.md, check 9).
import { CompactEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextError,
  generateKeySet,
  issueContextToken,
  rotateKeySet,
} from 'temporal-user-context';
import { openOperationToken, sealOperationToken } from '../../src/crypto/operation-token.js';
import { codeOf as codeOfType } from '../../../../test-support/refusal.js';

const keys = generateKeySet('edge');
const edge = KeyRing.fromJSON(keys.edge);
const worker = KeyRing.fromJSON(keys.worker);
const binding = {
  tok: 'handler-token-1',
  ns: 'default',
  wf: 'caller-1',
  run: 'run-1',
  jti: 'jti-1',
  at: { ns: 'default', ep: 'who-endpoint', svc: 'who', op: 'parked' },
};

const codeOf = (p: Promise<unknown>) => codeOfType(p, UserContextError);

describe('sealed operation tokens', () => {
  it('open to the binding they were sealed with, on any ring holding the sealing key', async () => {
    const token = await sealOperationToken(worker, binding);
    expect(token.startsWith('tuc1.')).toBe(true);
    expect(token).not.toContain(binding.tok);
    expect(await openOperationToken(edge, token)).toEqual(binding);
    const { run: _run, ...withoutRun } = binding;
    expect(await openOperationToken(worker, await sealOperationToken(worker, withoutRun))).toEqual(
      withoutRun,
    );
  });

  it('refuse a token the guard did not seal, an altered one, and one whose sealing key the ring lacks', async () => {
    const token = await sealOperationToken(worker, binding);
    const [prefix, head, key, iv, ciphertext, tag] = token.split('.');
    const flipped = ciphertext!.slice(0, -2) + (ciphertext!.endsWith('AA') ? 'BB' : 'AA');
    const other = KeyRing.fromJSON(generateKeySet('edge').worker);
    expect(
      await Promise.all([
        codeOf(openOperationToken(worker, binding.tok)),
        codeOf(openOperationToken(worker, [prefix, head, key, iv, flipped, tag].join('.'))),
        codeOf(openOperationToken(other, token)),
      ]),
    ).toEqual([ErrorCodes.LINEAGE_MISMATCH, ErrorCodes.TOKEN_INVALID, ErrorCodes.KEY_UNKNOWN]);
    // Rotated, the old sealing key still opens it (decrypt-only); retired from the ring, it does not.
    const rotated = rotateKeySet(keys.edge);
    expect(await openOperationToken(KeyRing.fromJSON(rotated), token)).toEqual(binding);
    const retired = { ...rotated, sealing: rotated.sealing.filter((k) => k.status === 'active') };
    expect(await codeOf(openOperationToken(KeyRing.fromJSON(retired), token))).toBe(ErrorCodes.KEY_UNKNOWN);
  });

  it('a context token never opens as an operation token (the authenticated cty differs), nor a wrong shape', async () => {
    const { header } = await issueContextToken(
      edge,
      { userId: 'alice', workspaceId: 'ws-acme', roles: [] },
      {
        namespace: 'default',
        use: 'start',
        workflowId: 'caller-1',
      },
    );
    expect(await codeOf(openOperationToken(worker, `tuc1.${header.tok}`))).toBe(ErrorCodes.TOKEN_INVALID);
    const seal = worker.activeSealingKey();
    const sealed = (value: unknown) =>
      new CompactEncrypt(new TextEncoder().encode(JSON.stringify(value)))
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: 'tuc-nexus-op+json' })
        .encrypt(seal.key);
    expect(
      await Promise.all([
        codeOf(openOperationToken(worker, `tuc1.${await sealed({ ...binding, extra: 1 })}`)),
        codeOf(openOperationToken(worker, `tuc1.${await sealed({ ...binding, jti: '' })}`)),
        codeOf(openOperationToken(worker, `tuc1.${await sealed('not an object')}`)),
      ]),
    ).toEqual([ErrorCodes.TOKEN_INVALID, ErrorCodes.TOKEN_INVALID, ErrorCodes.TOKEN_INVALID]);
  });

  it('a handler token too long to seal under the server limit is refused at sealing, not truncated', async () => {
    expect(await codeOf(sealOperationToken(worker, { ...binding, tok: 'x'.repeat(3500) }))).toBe(
      ErrorCodes.TOO_LARGE,
    );
    expect(await codeOf(openOperationToken(worker, 'tuc1.' + 'x'.repeat(5000)))).toBe(ErrorCodes.TOO_LARGE);
  });

  it('a binding that would not open again (an id over its cap) is refused at sealing, not sealed', async () => {
    const long = { ...binding, at: { ...binding.at, svc: 's'.repeat(1001) } };
    expect(await codeOf(sealOperationToken(worker, long))).toBe(ErrorCodes.INVALID);
    expect(await codeOf(sealOperationToken(worker, { ...binding, jti: '' }))).toBe(ErrorCodes.INVALID);
  });
});
