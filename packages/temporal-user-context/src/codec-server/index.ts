export { createCodecServer, type CodecServerOptions } from './server.js';
export { CodecServerCodes, CodecServerError, type CodecServerCode } from './errors.js';
export { jwtVerifier, scopesOf, type CodecPrincipal, type JwtOptions, type VerifyToken } from './auth.js';
export { ALLOWED_REQUEST_HEADERS } from './cors.js';
