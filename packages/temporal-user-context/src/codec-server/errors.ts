/**
 * Stable refusal codes of the codec server, sent as `{ code, message }`. Payload failures reuse the
 * codec's {@link ErrorCodes} (`USER_CONTEXT_PAYLOAD_TAMPERED`, ...). Match on `code`, never `message`.
 */
export const CodecServerCodes = {
  /** The request came from a browser origin other than the configured Web UI. HTTP 403. */
  ORIGIN_FORBIDDEN: 'CODEC_ORIGIN_FORBIDDEN',
  /** No `Authorization: Bearer` token. HTTP 401. */
  UNAUTHENTICATED: 'CODEC_UNAUTHENTICATED',
  /**
   * The token failed verification (signature, issuer, audience, expiry, algorithm). HTTP 401. The audit
   * record's detail says which, coarsely (`token=expired`, `token=bad-signature`, ...).
   */
  TOKEN_INVALID: 'CODEC_TOKEN_INVALID',
  /** `X-Namespace` is missing or names another namespace than the server's. HTTP 403. */
  NAMESPACE_FORBIDDEN: 'CODEC_NAMESPACE_FORBIDDEN',
  /** The token lacks the scope for this operation (e.g. a reader asking to encode). HTTP 403. */
  SCOPE_FORBIDDEN: 'CODEC_SCOPE_FORBIDDEN',
  /** `/encode` was called but the server was created with `encode: false` (the default). HTTP 404. */
  ENCODE_DISABLED: 'CODEC_ENCODE_DISABLED',
  /**
   * The request is malformed or too large: not a remote-codec `{ payloads: [...] }` body or not JSON
   * (400), too large (413), a content type missing or other than `application/json` / `text/plain`
   * (415), a URL that cannot be decoded (400); or, refused by the HTTP parser, not sent within
   * `requestTimeoutMs` (408), headers too large (431), not HTTP (400).
   */
  BAD_REQUEST: 'CODEC_BAD_REQUEST',
  /** Unknown path or method. HTTP 404. */
  NOT_FOUND: 'CODEC_NOT_FOUND',
  /**
   * The token could not be checked now: the identity provider's key set did not answer (timeout,
   * connection refused, not 200, not a key set). HTTP 503: the same token may pass later.
   */
  UNAVAILABLE: 'CODEC_UNAVAILABLE',
  /** Anything unexpected; details only in the server log. HTTP 500. */
  INTERNAL: 'CODEC_INTERNAL',
} as const;

/** A stable code of a codec-server refusal (the `code` of its JSON error body). */
export type CodecServerCode = (typeof CodecServerCodes)[keyof typeof CodecServerCodes];

/** A refusal with its HTTP status. Thrown inside the server, turned into a JSON reply by one handler. */
export class CodecServerError extends Error {
  override readonly name = 'CodecServerError';
  constructor(
    readonly status: number,
    readonly code: CodecServerCode,
    message: string,
    /** Extra audit detail (sanitised by the auditor), never sent to the client. */
    readonly detail?: string,
  ) {
    super(message);
  }
}
