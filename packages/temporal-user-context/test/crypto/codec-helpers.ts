import { randomBytes } from 'node:crypto';
import type { Payload, SerializationContext } from '@temporalio/common';
import { AesGcmPayloadCodec, type AesGcmPayloadCodecOptions } from '../../src/crypto/payload-codec.js';

export const NS = 'default';
export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
export const str = (b: Uint8Array | null | undefined): string =>
  new TextDecoder().decode(b ?? new Uint8Array());

export const K1 = { kid: 'k1', key: new Uint8Array(randomBytes(32)), status: 'active' as const };
export const K2 = { kid: 'k2', key: new Uint8Array(randomBytes(32)), status: 'active' as const };

export function makeCodec(over: Partial<AesGcmPayloadCodecOptions> = {}): AesGcmPayloadCodec {
  return new AesGcmPayloadCodec({ keys: { keys: [K1] }, namespace: NS, ...over });
}

export function json(value: unknown): Payload {
  return { metadata: { encoding: utf8('json/plain') }, data: utf8(JSON.stringify(value)) };
}

export function wf(workflowId: string, namespace = NS): SerializationContext {
  return { type: 'workflow', namespace, workflowId };
}
