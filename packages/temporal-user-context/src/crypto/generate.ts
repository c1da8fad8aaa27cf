import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeySetJson } from './key-set.js';

function secret(): string {
  return randomBytes(32).toString('base64url');
}

function kid(prefix: string): string {
  return `${prefix}-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Generates a fresh key set. Returns the edge's set (with the Ed25519 private key) and the worker's
 * set (the same without it): give workers only the second.
 */
export function generateKeySet(issuer: string): { edge: KeySetJson; worker: KeySetJson } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' }) as { x: string; d: string };
  const edge: KeySetJson = {
    version: 1,
    issuer,
    signing: [{ kid: kid('sig'), status: 'active', jwk: { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d } }],
    sealing: [{ kid: kid('seal'), status: 'active', k: secret() }],
    pseudonym: { k: secret() },
    codec: [{ kid: kid('codec'), status: 'active', k: secret() }],
  };
  return { edge, worker: workerKeySet(edge) };
}

/** The worker's view of a key set: every private signing key removed. */
export function workerKeySet(set: KeySetJson): KeySetJson {
  return {
    ...set,
    signing: set.signing.map((s) => ({ ...s, jwk: { kty: 'OKP', crv: 'Ed25519', x: s.jwk.x } })),
  };
}

/**
 * Rotates a key set: the current active keys become `verify-only` / `decrypt-only` (kept so old
 * histories still open and replay), and fresh active keys are added.
 */
export function rotateKeySet(set: KeySetJson): KeySetJson {
  const next = generateKeySet(set.issuer).edge;
  return {
    ...set,
    signing: [...set.signing.map((s) => ({ ...s, status: 'verify-only' as const })), ...next.signing],
    sealing: [...set.sealing.map((s) => ({ ...s, status: 'decrypt-only' as const })), ...next.sealing],
    codec: [
      ...(set.codec ?? []).map((s) => ({ ...s, status: 'decrypt-only' as const })),
      ...(next.codec ?? []),
    ],
  };
}
