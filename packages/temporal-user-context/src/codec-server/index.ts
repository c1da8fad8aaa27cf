/**
 * `temporal-user-context/codec-server`: a remote codec server (Temporal's codec server protocol) for the
 * Web UI and the CLI, with bearer-token authentication, an exact CORS origin and audited decisions.
 * See {@link createCodecServer} and docs/codec.md.
 *
 * @packageDocumentation
 */
export { createCodecServer, type CodecServerOptions } from './server.js';
export { CodecServerCodes, CodecServerError, type CodecServerCode } from './errors.js';
export { jwtVerifier, scopesOf, type CodecPrincipal, type JwtOptions, type VerifyToken } from './auth.js';
export { ALLOWED_REQUEST_HEADERS } from './cors.js';
