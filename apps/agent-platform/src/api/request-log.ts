import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/** What a request's log lines say about it: the route's pattern, never its URL. */
function requestFields(request: FastifyRequest, reply: FastifyReply) {
  return {
    method: request.method,
    route: request.routeOptions.url ?? 'unknown route',
    statusCode: reply.statusCode,
    responseTime: Math.round(reply.elapsedTime * 10) / 10,
  };
}

/**
 * Fastify's request log without personal data: one `request completed` line per request (method, the
 * route's pattern, status, time), and Fastify's other request lines without the request. Fastify's own
 * lines carry the raw URL (ids in the path, a query string that may name a third party) and the client's
 * address and port (found by review; docs/personal-data.md).
 */
export class RouteLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    // An error here is one met while sending the answer (a closed socket, a failed stream).
    if (error) reply.log.error({ ...requestFields(request, reply), err: error }, 'request errored');
    else reply.log.info(requestFields(request, reply), 'request completed');
  }

  // Reached when the app's error handler itself fails (Fastify falls back to its default handler).
  // Fastify's `routeNotFound` line is not overridden: the app's own not-found handler replaces the one
  // that writes it.
  override defaultErrorLog(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    const level = reply.statusCode >= 500 ? 'error' : 'info';
    reply.log[level]({ ...requestFields(request, reply), err: error }, error.message);
  }

  override writeHeadError(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    reply.log.warn({ ...requestFields(request, reply), err: error }, error.message);
  }
}
