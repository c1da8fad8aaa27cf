import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { problem } from './problems.js';

/** How a parser refusal is put on record: as the request it refused, or by what was refused. */
export interface ParserRefusalRecords {
  /** A refusal of a routed request's body, recorded as that request (its caller, its route). */
  request(request: FastifyRequest): void;
  /** Any other: anonymous, by what was refused (never a raw path). */
  bytes(what: string): void;
}

/** The answer to bytes Node's HTTP parser refused, by its error's code, and what the record says. */
function refusalOf(err: Error): { status: number; title: string; what: string } {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return { status: 408, title: 'Request timeout', what: 'request not received in time' };
  if (code === 'HPE_HEADER_OVERFLOW')
    return { status: 431, title: 'Request headers too large', what: 'headers too large' };
  return { status: 400, title: 'Bad request', what: 'malformed request' };
}

/**
 * What Node's HTTP parser refuses (a request not received in time, headers over Node's 16 KiB, bytes
 * that are not HTTP, a malformed chunk of a body), answered with a problem document and put on record,
 * where Fastify's own handler answers its own JSON and records nothing. It follows each socket's latest
 * request (pipelined ones follow each other): a refusal while that request's body is still coming is
 * that request's, any other is of bytes no route has seen.
 */
export class ParserRefusals {
  private readonly latest = new WeakMap<
    Socket,
    { request: FastifyRequest; response?: ServerResponse; answered: () => boolean }
  >();
  private readonly refused = new WeakSet<IncomingMessage>();

  constructor(private readonly records: ParserRefusalRecords) {}

  /** From the first `onRequest` hook: the socket's latest request, and whether its route answered. */
  handling(request: FastifyRequest, reply: FastifyReply): void {
    this.latest.set(request.raw.socket, {
      request,
      response: reply.raw,
      // Began (a streamed file) or sent (perhaps still queued behind a pipelined one's).
      answered: () => reply.sent || reply.raw.headersSent,
    });
  }

  /** From `frameworkErrors`: a request the router answered before any hook ran. */
  answeredByRouter(request: FastifyRequest): void {
    this.latest.set(request.raw.socket, { request, answered: () => true });
  }

  /** Whether the parser refused this request's body while its route handled it (then on record). */
  refusedBody(request: FastifyRequest): boolean {
    return this.refused.has(request.raw);
  }

  /** Fastify's `clientErrorHandler`. */
  readonly handler = (err: Error, socket: Socket): void => {
    // A reset, or a socket already gone: nobody to answer (as Fastify's own handler does).
    if ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || socket.destroyed) return;
    // Of a request whose body is still coming: answered already, it gets no second answer, nor a
    // second record, and the socket is only closed; being handled, it is recorded as that request (one
    // no route takes by what was refused), and nothing records it again.
    const current = this.latest.get(socket);
    const ofRequest = current !== undefined && !current.request.raw.complete;
    if (socket.writable && !(ofRequest && current.answered())) {
      const { status, title, what } = refusalOf(err);
      if (ofRequest) this.refused.add(current.request.raw);
      if (ofRequest && current.request.routeOptions.url !== undefined) this.records.request(current.request);
      else this.records.bytes(what);
      // Written only where the client reads it as the refused request's answer: none is waiting ahead
      // of it (a pipelined request's, which would read this as its own), and nothing of one is on the
      // wire yet (a streamed file). Otherwise the connection is only closed.
      const ahead = (socket as { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined;
      const mine = ofRequest && ahead !== undefined && ahead === current.response && !ahead.headersSent;
      if (ahead === undefined || mine) {
        const body = JSON.stringify(problem(status, 'BAD_REQUEST', title));
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\n` +
            `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
    }
    socket.destroy(err);
  };
}
