import type { FastifyReply } from 'fastify';

/**
 * Headers the Web UI sends to a codec endpoint (temporalio/ui `src/lib/services/data-encoder.ts`):
 * `Content-Type: application/json` and `X-Namespace` always; `Authorization: Bearer <access token>`
 * and `Authorization-Extras: <id token>` when "pass access token" is on. All of them make the request
 * non-simple, so the browser sends a preflight first.
 */
export const ALLOWED_REQUEST_HEADERS = 'authorization, authorization-extras, content-type, x-namespace';

/**
 * The origin check. `undefined` (no `Origin` header: CLI, curl, server-to-server) is not a browser
 * cross-origin call and passes on to authentication; any origin other than the UI's is refused.
 */
export function originAllowed(origin: string | undefined, allowedOrigin: string): boolean {
  return origin === undefined || origin === allowedOrigin;
}

/**
 * CORS headers for an allowed browser origin. Credentials only when the server allows them (the UI's
 * "include cross-origin credentials"): the UI authenticates with a bearer token, and cookies are not read.
 */
export function setCorsHeaders(reply: FastifyReply, origin: string | undefined, credentials = false): void {
  // Always vary on Origin, so a cache never serves one origin's answer to another.
  reply.header('vary', 'Origin');
  if (origin === undefined) return;
  reply.header('access-control-allow-origin', origin);
  if (credentials) reply.header('access-control-allow-credentials', 'true');
}

/** Preflight answer for the allowed origin. */
export function setPreflightHeaders(reply: FastifyReply, privateNetwork: boolean): void {
  reply.header('access-control-allow-methods', 'POST');
  reply.header('access-control-allow-headers', ALLOWED_REQUEST_HEADERS);
  reply.header('access-control-max-age', '600');
  // Chrome's Private Network Access: a UI on a public address calling a codec server on a private one.
  if (privateNetwork) reply.header('access-control-allow-private-network', 'true');
}
