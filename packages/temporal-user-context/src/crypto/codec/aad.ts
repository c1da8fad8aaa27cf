import { FORMAT_V1_BYTES } from './format.js';

/**
 * Builds the additional authenticated data of a v1 payload. GCM authenticates it but does not store
 * it: the decoder rebuilds it from what it knows, so any difference (other namespace, other workflow,
 * other key id, other format) fails authentication.
 *
 * Layout, every field length-prefixed so that no two different tuples share an encoding:
 * `u8 len | format | u16 len | namespace | u8 bound | u32 len | workflowId | u8 len | kid`
 * where `bound` is 1 for a workflow-bound payload and 0 for a namespace-only one.
 */
export function buildAad(namespace: string, workflowId: Uint8Array | undefined, kid: Uint8Array): Buffer {
  const nsLen = Buffer.byteLength(namespace, 'utf8');
  const wfLen = workflowId?.byteLength ?? 0;
  const size = 1 + FORMAT_V1_BYTES.byteLength + 2 + nsLen + 1 + 4 + wfLen + 1 + kid.byteLength;
  const out = Buffer.allocUnsafe(size);
  let at = out.writeUInt8(FORMAT_V1_BYTES.byteLength, 0);
  out.set(FORMAT_V1_BYTES, at);
  at += FORMAT_V1_BYTES.byteLength;
  // Namespace names are at most 255 bytes in Temporal; u16 leaves room and still cannot overflow
  // because the codec refuses longer names (see binding.ts).
  at = out.writeUInt16BE(nsLen, at);
  at += out.write(namespace, at, 'utf8');
  at = out.writeUInt8(workflowId ? 1 : 0, at);
  at = out.writeUInt32BE(wfLen, at);
  if (workflowId) {
    out.set(workflowId, at);
    at += wfLen;
  }
  at = out.writeUInt8(kid.byteLength, at);
  out.set(kid, at);
  return out;
}
