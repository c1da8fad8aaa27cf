import type { AddressInfo, Socket } from 'node:net';
import { connect, createServer as createNetServer } from 'node:net';
import type { LightMyRequestResponse } from 'fastify';
import { errors as joseErrors } from 'jose';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextError } from '../../src/context/errors.js';
import { jwtVerifier, tokenFailure } from '../../src/codec-server/auth.js';
import { CodecServerCodes } from '../../src/codec-server/index.js';
import { KeyRing, UserContextPlugin, generateKeySet, memoryAuditSink } from '../../src/index.js';
import { K1, K2, json, makeCodec, wf } from '../crypto/codec-helpers.js';
import { AUDIENCE, ISSUER, b64, makeIdp, makeServer, UI_ORIGIN, type Idp } from './helpers.js';

let idp: Idp;
let reader: string;
let writer: string;
beforeAll(async () => {
  idp = await makeIdp();
  reader = await idp.sign({ sub: 'alice', scope: 'openid codec:decode' });
  writer = await idp.sign({ sub: 'bob', scp: ['codec:decode', 'codec:encode'] });
});

let server: ReturnType<typeof makeServer> | undefined;
afterEach(async () => {
  await server?.app.close();
  server = undefined;
});

async function encryptedBody(workflowId = 'wf-1', text = 'hello from the codec') {
  const codec = server!.codec;
  const [p] = await codec.encode([json(text)], wf(workflowId));
  const metadata = Object.fromEntries(Object.entries(p!.metadata!).map(([k, v]) => [k, b64(v)]));
  return { payloads: [{ metadata, data: b64(p!.data!) }] };
}

function post(
  path: string,
  body: unknown,
  headers: Record<string, string | undefined> = {},
): Promise<LightMyRequestResponse> {
  return postText(path, JSON.stringify(body), headers);
}

type Served = ReturnType<typeof makeServer>;

/** A payload sealed by `target`'s codec for workflow `workflowId`, as the remote-codec JSON carries it. */
async function sealedFor(target: Served, workflowId: string) {
  const [p] = await target.codec.encode([json('x')], wf(workflowId));
  return {
    metadata: Object.fromEntries(Object.entries(p!.metadata!).map(([k, v]) => [k, b64(v)])),
    data: b64(p!.data!),
  };
}

/** A reader's `/decode` of `payloads` on `target`, from the UI origin. */
function decodeOn(target: Served, payloads: unknown[]): Promise<LightMyRequestResponse> {
  return target.app.inject({
    method: 'POST',
    url: '/decode',
    headers: {
      'content-type': 'application/json',
      'x-namespace': 'default',
      origin: UI_ORIGIN,
      authorization: `Bearer ${reader}`,
    },
    payload: JSON.stringify({ payloads }),
  });
}

/** A browser's CORS preflight from an origin the server does not allow. */
function foreignPreflight(url: string): Promise<LightMyRequestResponse> {
  return server!.app.inject({
    method: 'OPTIONS',
    url,
    headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
  });
}

/** {@link post} with the body as written: text that JSON.stringify would not produce. */
function postText(
  path: string,
  payload: string,
  headers: Record<string, string | undefined> = {},
): Promise<LightMyRequestResponse> {
  const h: Record<string, string> = {
    'content-type': 'application/json',
    'x-namespace': 'default',
    origin: UI_ORIGIN,
  };
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) delete h[k];
    else h[k] = v;
  }
  return server!.app.inject({ method: 'POST', url: path, headers: h, payload });
}

function expectRefusal(res: LightMyRequestResponse, status: number, code: string): void {
  expect(res.statusCode).toBe(status);
  expect(res.json()).toEqual({ code, message: expect.any(String) });
}

describe('codec server (case 23)', () => {
  it('decodes for the UI origin with a reader token (UI request shape, query string included)', async () => {
    server = makeServer(idp);
    const res = await post('/decode?preserveStorageRefs=true', await encryptedBody(), {
      authorization: `Bearer ${reader}`,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe(UI_ORIGIN);
    const [p] = res.json().payloads;
    expect(Buffer.from(p.metadata.encoding, 'base64').toString()).toBe('json/plain');
    expect(Buffer.from(p.data, 'base64').toString()).toBe('"hello from the codec"');
    expect(server.sink.events.at(-1)).toMatchObject({
      action: 'codec.decode',
      decision: 'allow',
      reason: 'ok',
      userId: 'alice',
    });
  });

  it('records whose data a decode read: the one workflow the payloads are bound to, or how many', async () => {
    server = makeServer(idp);
    const one = await encryptedBody('wf-alpha');
    expect((await post('/decode', one, { authorization: `Bearer ${reader}` })).statusCode).toBe(200);
    expect(server.sink.events.at(-1)).toMatchObject({
      action: 'codec.decode',
      decision: 'allow',
      workflowId: 'wf-alpha',
      detail: `origin="${UI_ORIGIN}" payloads=1`,
    });
    // Another workflow's payload added to the batch (a decoy) hides nothing: each workflow read has a
    // record of its own, besides the request's.
    const two = {
      payloads: [...one.payloads, ...(await encryptedBody('wf-beta')).payloads, ...one.payloads],
    };
    const before = server.sink.events.length;
    expect((await post('/decode', two, { authorization: `Bearer ${reader}` })).statusCode).toBe(200);
    const records = server.sink.events.slice(before);
    expect(records).toMatchObject([
      { decision: 'allow', detail: `origin="${UI_ORIGIN}" payloads=3 workflows=2` },
      { decision: 'allow', workflowId: 'wf-alpha', detail: `origin="${UI_ORIGIN}" batch of 2 workflows` },
      { decision: 'allow', workflowId: 'wf-beta', detail: `origin="${UI_ORIGIN}" batch of 2 workflows` },
    ]);
    expect(records[0]!.workflowId).toBeUndefined();
    // A plaintext payload passed through (an allow-listed encoding) names no workflow: its metadata is
    // nobody's word.
    const lenient = makeServer(idp, { codec: makeCodec({ allowPlaintextEncodings: ['json/plain'] }) });
    const decoy = {
      metadata: { encoding: b64('json/plain'), 'encryption-workflow-id': b64('wf-innocent') },
      data: b64('"decoy"'),
    };
    const res = await decodeOn(lenient, [decoy, await sealedFor(lenient, 'wf-target')]);
    expect(res.statusCode).toBe(200);
    expect(lenient.sink.events).toMatchObject([
      { decision: 'allow', workflowId: 'wf-target', detail: `origin="${UI_ORIGIN}" payloads=2` },
    ]);
    await lenient.app.close();
    // Past `maxDecodeWorkflows` distinct workflows a decode is refused before anything is decrypted.
    const narrow = makeServer(idp, { maxDecodeWorkflows: 1 });
    const tooMany = await decodeOn(narrow, [
      await sealedFor(narrow, 'wf-1'),
      await sealedFor(narrow, 'wf-2'),
    ]);
    expectRefusal(tooMany, 400, CodecServerCodes.BAD_REQUEST);
    expect(narrow.sink.events).toMatchObject([
      {
        decision: 'deny',
        reason: CodecServerCodes.BAD_REQUEST,
        detail: `origin="${UI_ORIGIN}" error="CODEC_TOO_MANY_WORKFLOWS" limit=1`,
      },
    ]);
    await narrow.app.close();
  });

  it('decodes for a non-browser caller (no Origin: CLI) with a token', async () => {
    server = makeServer(idp);
    const res = await post('/decode', await encryptedBody(), {
      origin: undefined,
      authorization: `Bearer ${reader}`,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('refuses a cross-origin call: 403, no ACAO header, audited', async () => {
    server = makeServer(idp);
    const res = await post('/decode', await encryptedBody(), {
      origin: 'https://evil.example',
      authorization: `Bearer ${reader}`,
    });
    expectRefusal(res, 403, CodecServerCodes.ORIGIN_FORBIDDEN);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    expect(server.sink.events.at(-1)).toMatchObject({
      decision: 'deny',
      reason: CodecServerCodes.ORIGIN_FORBIDDEN,
    });
  });

  it.each([
    'http://127.0.0.1:8234',
    'http://localhost:8233',
    'null',
    `${UI_ORIGIN}/`,
    'HTTP://127.0.0.1:8233',
  ])('refuses near-miss origin %s', async (origin) => {
    server = makeServer(idp);
    const res = await post('/decode', await encryptedBody(), { origin, authorization: `Bearer ${reader}` });
    expectRefusal(res, 403, CodecServerCodes.ORIGIN_FORBIDDEN);
  });

  it('answers the UI preflight with exactly the headers it needs, and refuses a foreign preflight', async () => {
    server = makeServer(idp);
    const ok = await server.app.inject({
      method: 'OPTIONS',
      url: '/decode?preserveStorageRefs=true',
      headers: {
        origin: UI_ORIGIN,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,x-namespace',
      },
    });
    expect(ok.statusCode).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe(UI_ORIGIN);
    expect(ok.headers['access-control-allow-methods']).toBe('POST');
    expect(ok.headers['access-control-allow-headers']).toBe(
      'authorization, authorization-extras, content-type, x-namespace',
    );
    expect(ok.headers['access-control-max-age']).toBe('600');
    expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
    const bad = await foreignPreflight('/decode');
    expectRefusal(bad, 403, CodecServerCodes.ORIGIN_FORBIDDEN);
    expect(bad.headers['access-control-allow-origin']).toBeUndefined();
    // A preflight without an origin is no browser's: 404, and on record like every refusal.
    const originless = await server.app.inject({ method: 'OPTIONS', url: '/decode' });
    expectRefusal(originless, 404, CodecServerCodes.NOT_FOUND);
    expect(server.sink.events.at(-1)).toMatchObject({
      action: 'codec.preflight',
      decision: 'deny',
      reason: CodecServerCodes.NOT_FOUND,
    });
  });

  it('with basePath serves the routes under it only, and with allowCredentials answers credentials', async () => {
    // Found by review: an endpoint given to the Web UI with a path (one per namespace behind one host)
    // got 404, and the UI's "include cross-origin credentials" requests were blocked by the browser.
    server = makeServer(idp, { basePath: '/prod/codec', allowCredentials: true });
    const prefixed = await post('/prod/codec/decode', await encryptedBody(), {
      authorization: `Bearer ${reader}`,
    });
    expect(prefixed.statusCode).toBe(200);
    expect(prefixed.headers['access-control-allow-credentials']).toBe('true');
    const preflight = await server.app.inject({
      method: 'OPTIONS',
      url: '/prod/codec/decode',
      headers: { origin: UI_ORIGIN, 'access-control-request-method': 'POST' },
    });
    expect(preflight.statusCode).toBe(204);
    expect(preflight.headers['access-control-allow-credentials']).toBe('true');
    expectRefusal(
      await post('/decode', await encryptedBody(), { authorization: `Bearer ${reader}` }),
      404,
      CodecServerCodes.NOT_FOUND,
    );
    // A foreign origin still learns nothing, credentials or not.
    const foreign = await foreignPreflight('/prod/codec/decode');
    expectRefusal(foreign, 403, CodecServerCodes.ORIGIN_FORBIDDEN);
    expect(foreign.headers['access-control-allow-credentials']).toBeUndefined();
    for (const basePath of ['prod', '/prod/', '/a b', '/../x', '/.', '/p?q'])
      expect(() => makeServer(idp, { basePath })).toThrowError(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
    expect(() => makeServer(idp, { allowCredentials: 'yes' as unknown as boolean })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('refuses without a token, before reading the body', async () => {
    server = makeServer(idp);
    // A body it cannot parse: authentication comes first, so an anonymous caller gets 401, not 400.
    const unread = await server.app.inject({
      method: 'POST',
      url: '/decode',
      headers: { 'content-type': 'application/json', 'x-namespace': 'default' },
      payload: '{"payloads":',
    });
    expectRefusal(unread, 401, CodecServerCodes.UNAUTHENTICATED);
    const res = await post('/decode', await encryptedBody());
    expectRefusal(res, 401, CodecServerCodes.UNAUTHENTICATED);
    expect(res.headers['www-authenticate']).toBe('Bearer');
    // The UI must be able to read the refusal: ACAO is present for the allowed origin.
    expect(res.headers['access-control-allow-origin']).toBe(UI_ORIGIN);
    expect(server.sink.events.at(-1)).toMatchObject({
      action: 'codec.decode',
      decision: 'deny',
      source: 'none',
    });
  });

  it.each<[string, string, string]>([
    // No bearer token at all: unauthenticated.
    ['Basic scheme', 'Basic YWxpY2U6cHc=', CodecServerCodes.UNAUTHENTICATED],
    ['empty bearer', 'Bearer ', CodecServerCodes.UNAUTHENTICATED],
    // A bearer token that is no JWT: invalid.
    ['garbage', 'Bearer not-a-jwt', CodecServerCodes.TOKEN_INVALID],
  ])('refuses a malformed Authorization header (%s)', async (_n, header, code) => {
    server = makeServer(idp);
    const res = await post('/decode', await encryptedBody(), { authorization: header });
    expect(res.json().code).toBe(code);
    expect(res.statusCode).toBe(401);
  });

  it.each([
    [
      'signed by another key',
      'bad-signature',
      () => idp.sign({ sub: 'eve', scope: 'codec:decode' }, { key: idp.otherKey }),
    ],
    ['expired', 'expired', () => idp.sign({ sub: 'eve', scope: 'codec:decode' }, { exp: '-1h' })],
    [
      'not yet valid',
      'not-yet-valid',
      () => idp.sign({ sub: 'eve', scope: 'codec:decode', nbf: Math.floor(Date.now() / 1000) + 3600 }),
    ],
    [
      'wrong issuer',
      'wrong-issuer-or-audience',
      () => idp.sign({ sub: 'eve', scope: 'codec:decode' }, { iss: 'https://evil' }),
    ],
    [
      'wrong audience',
      'wrong-issuer-or-audience',
      () => idp.sign({ sub: 'eve', scope: 'codec:decode' }, { aud: 'other' }),
    ],
    ['no subject', 'claim-missing', () => idp.sign({ scope: 'codec:decode' })],
    ['not a JWT', 'malformed', async () => 'not-a-jwt'],
    [
      'alg none',
      'algorithm-not-allowed',
      async () =>
        `${b64url({ alg: 'none' })}.${b64url({ sub: 'eve', scope: 'codec:decode', iss: 'https://idp.test', aud: 'temporal-codec', exp: 9e9 })}.`,
    ],
    [
      'tampered claims',
      'bad-signature',
      async () => {
        const [h, , s] = reader.split('.');
        return `${h}.${b64url({ sub: 'eve', scope: 'codec:decode codec:encode', iss: 'https://idp.test', aud: 'temporal-codec', exp: 9e9 })}.${s}`;
      },
    ],
  ])('refuses a bad token (%s), recording why as %s', async (_n, kind, token) => {
    server = makeServer(idp);
    const jwt = await token();
    const res = await post('/decode', await encryptedBody(), { authorization: `Bearer ${jwt}` });
    expectRefusal(res, 401, CodecServerCodes.TOKEN_INVALID);
    // The caller learns only the code; the record tells an operator an expired token from a forged one,
    // with a fixed word: neither the token nor jose's message (which may quote claims) is kept.
    expect(res.json().message).toBe('the bearer token is not valid');
    expect(server.sink.events).toHaveLength(1);
    expect(server.sink.events[0]).toMatchObject({
      action: 'codec.decode',
      decision: 'deny',
      reason: CodecServerCodes.TOKEN_INVALID,
      detail: `origin="${UI_ORIGIN}" token=${kind}`,
    });
  });

  it('records a custom verifier refusal as rejected, and a non-principal as bad-principal', async () => {
    const failing = new Error('upstream said: token abc.def.ghi is revoked');
    server = makeServer(idp, {
      jwt: undefined,
      verifyToken: async (token) => {
        if (token === 'weird') return { subject: 5 } as never;
        throw failing;
      },
    });
    const body = await encryptedBody();
    expectRefusal(
      await post('/decode', body, { authorization: 'Bearer abc.def.ghi' }),
      401,
      CodecServerCodes.TOKEN_INVALID,
    );
    expectRefusal(
      await post('/decode', body, { authorization: 'Bearer weird' }),
      401,
      CodecServerCodes.TOKEN_INVALID,
    );
    expect(server.sink.events.map((e) => e.detail)).toEqual([
      `origin="${UI_ORIGIN}" token=rejected`,
      `origin="${UI_ORIGIN}" token=bad-principal`,
    ]);
  });

  it('names the kind of token failure from jose error codes only, total for any thrown value', () => {
    const now = Math.floor(Date.now() / 1000);
    expect(tokenFailure(new joseErrors.JWKSTimeout())).toBe('key-set-unavailable');
    expect(tokenFailure(new joseErrors.JWKSInvalid())).toBe('key-set-unavailable');
    expect(tokenFailure(new joseErrors.JOSEError('Expected 200 OK'))).toBe('key-set-unavailable');
    expect(tokenFailure(Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }))).toBe(
      'key-set-unavailable',
    );
    expect(tokenFailure(Object.assign(new Error('x'), { code: 'custom' }))).toBe('rejected');
    // A custom verifier's own codes are refusals, whatever they look like; TLS failures of the fetch
    // are an identity provider out of reach.
    for (const code of ['EXPIRED', 'ERROR', 'EINVAL', 'EACCES'])
      expect(tokenFailure(Object.assign(new Error('x'), { code })), code).toBe('rejected');
    for (const code of ['CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'EAI_AGAIN'])
      expect(tokenFailure(Object.assign(new Error('x'), { code })), code).toBe('key-set-unavailable');
    expect(tokenFailure(new joseErrors.JWKSNoMatchingKey())).toBe('unknown-key');
    expect(
      tokenFailure(new joseErrors.JWTClaimValidationFailed('x', { iat: now + 60 }, 'iat', 'check_failed')),
    ).toBe('not-yet-valid');
    expect(tokenFailure(new joseErrors.JWTClaimValidationFailed('x', {}, 'exp', 'invalid'))).toBe(
      'malformed',
    );
    expect(tokenFailure(new joseErrors.JWTClaimValidationFailed('x', {}, 'typ', 'check_failed'))).toBe(
      'claims-rejected',
    );
    // Not jose's nor the network's: a fixed word, whatever the value carries.
    expect(tokenFailure(Object.assign(new Error('x'), { code: 'ERR_SOMETHING_ELSE' }))).toBe('rejected');
    expect(tokenFailure('a string')).toBe('rejected');
    expect(tokenFailure(null)).toBe('rejected');
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('boom');
        },
      },
    );
    expect(tokenFailure(hostile)).toBe('rejected');
  });

  it('refuses a wrong or missing namespace', async () => {
    server = makeServer(idp);
    const body = await encryptedBody();
    expectRefusal(
      await post('/decode', body, { authorization: `Bearer ${reader}`, 'x-namespace': 'prod' }),
      403,
      CodecServerCodes.NAMESPACE_FORBIDDEN,
    );
    expectRefusal(
      await post('/decode', body, { authorization: `Bearer ${reader}`, 'x-namespace': undefined }),
      403,
      CodecServerCodes.NAMESPACE_FORBIDDEN,
    );
    expect(server.sink.events.at(-1)).toMatchObject({
      reason: CodecServerCodes.NAMESPACE_FORBIDDEN,
      detail: expect.stringContaining('requested=none'),
    });
  });

  it('refuses a token without the decode scope', async () => {
    server = makeServer(idp);
    const nobody = await idp.sign({ sub: 'carol', scope: 'openid' });
    expectRefusal(
      await post('/decode', await encryptedBody(), { authorization: `Bearer ${nobody}` }),
      403,
      CodecServerCodes.SCOPE_FORBIDDEN,
    );
  });

  it('encode is disabled by default, even for a writer', async () => {
    server = makeServer(idp);
    const res = await post(
      '/encode',
      { payloads: [{ metadata: { encoding: b64('json/plain') }, data: b64('1') }] },
      {
        authorization: `Bearer ${writer}`,
      },
    );
    expectRefusal(res, 404, CodecServerCodes.ENCODE_DISABLED);
  });

  it('answers preflights, unknown paths and a disabled /encode before reading the body', async () => {
    server = makeServer(idp);
    // Anonymous callers must not make the server parse bodies of up to bodyLimit (8 MB of nested JSON
    // costs about a second): these are answered in onRequest, so a body that is not even JSON gets the
    // documented answer, and Fastify's parsing step never runs.
    const parsed: string[] = [];
    server.app.addHook('preParsing', async (req) => {
      parsed.push(`${req.method} ${req.url}`);
    });
    const unparsable = '{"payloads":' + '['.repeat(10_000);
    const send = (method: 'OPTIONS' | 'POST', url: string, headers: Record<string, string> = {}) =>
      server!.app.inject({
        method,
        url,
        headers: { 'content-type': 'application/json', origin: UI_ORIGIN, ...headers },
        payload: unparsable,
      });

    const preflight = await send('OPTIONS', '/decode', { 'access-control-request-method': 'POST' });
    expect(preflight.statusCode).toBe(204);
    expect(preflight.headers['access-control-allow-methods']).toBe('POST');
    expect(server.sink.events).toEqual([]);

    const unknown = await send('POST', '/nope');
    expectRefusal(unknown, 404, CodecServerCodes.NOT_FOUND);
    expect(unknown.headers['access-control-allow-origin']).toBe(UI_ORIGIN);
    const disabled = await send('POST', '/encode', { authorization: `Bearer ${writer}` });
    expectRefusal(disabled, 404, CodecServerCodes.ENCODE_DISABLED);
    const wrongMethod = await send('POST', '/decode/');
    expectRefusal(wrongMethod, 404, CodecServerCodes.NOT_FOUND);
    // One record per refusal.
    expect(server.sink.events.map((e) => [e.action, e.reason, e.detail])).toEqual([
      ['codec.request', CodecServerCodes.NOT_FOUND, `origin="${UI_ORIGIN}" path="/nope"`],
      ['codec.encode', CodecServerCodes.ENCODE_DISABLED, `origin="${UI_ORIGIN}"`],
      ['codec.request', CodecServerCodes.NOT_FOUND, `origin="${UI_ORIGIN}" path="/decode/"`],
    ]);
    expect(parsed).toEqual([]);

    // The spy works: an authorised /decode does reach parsing (and refuses the body there).
    expectRefusal(
      await send('POST', '/decode', { authorization: `Bearer ${reader}`, 'x-namespace': 'default' }),
      400,
      CodecServerCodes.BAD_REQUEST,
    );
    expect(parsed).toEqual(['POST /decode']);
  });

  it('refuses a URL it cannot decode in its own format, after the origin check, with one record', async () => {
    server = makeServer(idp);
    const bad = await server.app.inject({
      method: 'POST',
      url: '/decode%zz',
      headers: { origin: UI_ORIGIN, 'content-type': 'application/json' },
      payload: '{}',
    });
    expectRefusal(bad, 400, CodecServerCodes.BAD_REQUEST);
    // The UI can read the refusal like any other.
    expect(bad.headers['access-control-allow-origin']).toBe(UI_ORIGIN);
    expect(bad.headers.vary).toBe('Origin');
    expect(server.sink.events).toEqual([
      expect.objectContaining({
        action: 'codec.request',
        decision: 'deny',
        reason: CodecServerCodes.BAD_REQUEST,
        detail: `origin="${UI_ORIGIN}" error="FST_ERR_BAD_URL" path="/decode%zz"`,
      }),
    ]);

    server.sink.clear();
    const foreign = await foreignPreflight('/%c0%af');
    expectRefusal(foreign, 403, CodecServerCodes.ORIGIN_FORBIDDEN);
    expect(foreign.headers['access-control-allow-origin']).toBeUndefined();
    expect(server.sink.events.map((e) => [e.action, e.reason])).toEqual([
      ['codec.preflight', CodecServerCodes.ORIGIN_FORBIDDEN],
    ]);
  });

  it('answers what the HTTP parser refuses in its own format, with one record', async () => {
    server = makeServer(idp, {
      verifyToken: async () => ({ subject: 'alice', scopes: ['codec:decode'] }),
      jwt: undefined,
    });
    const serverSockets: Socket[] = [];
    server.app.server.on('connection', (s: Socket) => serverSockets.push(s));
    let reading = false;
    server.app.addHook('preParsing', async () => {
      reading = true;
    });
    const failures: unknown[] = [];
    server.app.addHook('onError', async (_req, _reply, err) => {
      failures.push(err.code);
    });
    await server.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = server.app.server.address() as AddressInfo;

    // Not HTTP at all: no request, so neither origin nor caller is known.
    const garbage = await rawExchange(port, 'HELLO\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4))).toEqual({
      code: CodecServerCodes.BAD_REQUEST,
      message: 'bad request',
    });
    expect(server.sink.events.map((e) => [e.action, e.reason, e.detail])).toEqual([
      ['codec.request', CodecServerCodes.BAD_REQUEST, 'origin=unknown error="HPE_INVALID_METHOD"'],
    ]);

    // A body still arriving when requestTimeoutMs passes. Node reports that as a clientError on the
    // socket (it checks deadlines every 30 s, too slow for a test); raised here the way Node raises it.
    server.sink.clear();
    const answer = rawExchange(
      port,
      'POST /decode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer t\r\n' +
        `x-namespace: default\r\norigin: ${UI_ORIGIN}\r\ncontent-length: 100\r\n\r\n{"pay`,
      { keepOpen: true },
    );
    // Authorised, and reading its body.
    await expect.poll(() => reading).toBe(true);
    const timeout = Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
    server.app.server.emit('clientError', timeout, serverSockets[1]);
    const timedOut = await answer;
    expect(timedOut).toMatch(/^HTTP\/1\.1 408 /);
    expect(timedOut.toLowerCase()).toContain(`access-control-allow-origin: ${UI_ORIGIN}`);
    // The connection's close then fails the body read (the error handler runs right after onError):
    // still one record, with the caller.
    await expect.poll(() => failures.length).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.sink.events.map((e) => [e.action, e.reason, e.userId, e.detail])).toEqual([
      [
        'codec.request',
        CodecServerCodes.BAD_REQUEST,
        'alice',
        `origin="${UI_ORIGIN}" error="ERR_HTTP_REQUEST_TIMEOUT"`,
      ],
    ]);
  });

  it('refuses a body nested deeper, or holding more values, than a codec request ever does before parsing it, and still decodes a real one', async () => {
    server = makeServer(idp);
    const send = (payload: string) => postText('/decode', payload, { authorization: `Bearer ${reader}` });
    // 100 000 levels: JSON.parse would build them all (8 MB of them took about a second).
    expectRefusal(await send('['.repeat(100_000) + ']'.repeat(100_000)), 400, CodecServerCodes.BAD_REQUEST);
    expect(server.sink.events.at(-1)).toMatchObject({
      decision: 'deny',
      reason: CodecServerCodes.BAD_REQUEST,
      userId: 'alice',
      detail: expect.stringContaining('error="CODEC_JSON_TOO_DEEP"'),
    });
    // Wide instead of deep: more arrays and objects than 1000 payloads (the default cap) ever have.
    expectRefusal(await send(`{"payloads":[${'[],'.repeat(5000)}[]]}`), 400, CodecServerCodes.BAD_REQUEST);
    expect(server.sink.events.at(-1)?.detail).toContain('error="CODEC_JSON_TOO_MANY_VALUES"');
    // Brackets inside strings are text, not nesting; prototype poisoning is still refused.
    const body = await encryptedBody();
    const withText = { ...body, note: '['.repeat(100) };
    expect((await send(JSON.stringify(withText))).statusCode).toBe(200);
    expectRefusal(await send('{"__proto__":{"x":1},"payloads":[]}'), 400, CodecServerCodes.BAD_REQUEST);
  });

  it('quotes request values in the audit detail, so that none can pose as another field', async () => {
    server = makeServer(idp);
    const forged = 'evil origin=http://x payloads=1000';
    expectRefusal(
      await post('/decode', await encryptedBody(), {
        authorization: `Bearer ${reader}`,
        'x-namespace': forged,
      }),
      403,
      CodecServerCodes.NAMESPACE_FORBIDDEN,
    );
    expectRefusal(
      await post('/decode', {}, { origin: 'https://evil requested="default"' }),
      403,
      CodecServerCodes.ORIGIN_FORBIDDEN,
    );
    const [nsRecord, originRecord] = server.sink.events.map((e) => detailFields(e.detail!));
    expect(nsRecord).toEqual([
      ['origin', UI_ORIGIN],
      ['requested', forged],
    ]);
    expect(originRecord).toEqual([['origin', 'https://evil requested=?default?']]);
    // A value longer than the record's detail may be is cut inside its quotes, so the closing quote
    // stays and the padding cannot push forged fields past it.
    const long = `https://evil requested=default payloads=7 pad=${'z'.repeat(300)}`;
    expectRefusal(await post('/decode', {}, { origin: long }), 403, CodecServerCodes.ORIGIN_FORBIDDEN);
    expect(detailFields(server.sink.events.at(-1)!.detail!)).toEqual([['origin', `${long.slice(0, 61)}...`]]);
  });

  it('a refusal whose reply does not finish (the client hangs up during an async onSend hook) stays one refusal', async () => {
    server = makeServer(idp);
    // A host app's hook (compression, metrics): while it waits, the client is gone, the reply never
    // finishes, and Fastify would go on to the route's own hook and the handler.
    server.app.addHook('onSend', async (_req, _reply, payload) => {
      await new Promise((r) => setTimeout(r, 50));
      return payload;
    });
    await server.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = server.app.server.address() as AddressInfo;
    for (const [path, origin, reason] of [
      ['/nope', UI_ORIGIN, CodecServerCodes.NOT_FOUND],
      ['/decode', 'https://evil', CodecServerCodes.ORIGIN_FORBIDDEN],
    ] as const) {
      server.sink.clear();
      await new Promise<void>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.write(
            `POST ${path} HTTP/1.1\r\nhost: x\r\norigin: ${origin}\r\ncontent-type: application/json\r\n` +
              'content-length: 2\r\n\r\n{}',
          );
          setTimeout(() => socket.destroy(), 10);
        });
        socket.on('close', () => resolve());
        socket.on('error', () => undefined);
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(server.sink.events.map((e) => e.reason)).toEqual([reason]);
    }
  });

  it('when enabled, a reader token asking to encode is refused and a writer may encode', async () => {
    server = makeServer(idp, { encode: true });
    const body = { payloads: [{ metadata: { encoding: b64('json/plain') }, data: b64('"x"') }] };
    expectRefusal(
      await post('/encode', body, { authorization: `Bearer ${reader}` }),
      403,
      CodecServerCodes.SCOPE_FORBIDDEN,
    );
    expect(server.sink.events.at(-1)).toMatchObject({
      action: 'codec.encode',
      decision: 'deny',
      userId: 'alice',
    });
    const ok = await post('/encode', body, { authorization: `Bearer ${writer}` });
    expect(ok.statusCode).toBe(200);
    const enc = ok.json().payloads[0];
    expect(Buffer.from(enc.metadata.encoding, 'base64').toString()).toBe('binary/encrypted');
    // And it decodes back.
    const back = await post('/decode', ok.json(), { authorization: `Bearer ${reader}` });
    expect(Buffer.from(back.json().payloads[0].data, 'base64').toString()).toBe('"x"');
  });

  it('reports codec refusals with the codec error code (tampered, plaintext, unknown key)', async () => {
    server = makeServer(idp);
    const auth = { authorization: `Bearer ${reader}` };
    const body = await encryptedBody();
    const tampered = structuredClone(body);
    const data = Buffer.from(tampered.payloads[0]!.data, 'base64');
    data[20]! ^= 1;
    tampered.payloads[0]!.data = data.toString('base64');
    expectRefusal(await post('/decode', tampered, auth), 422, ErrorCodes.PAYLOAD_TAMPERED);
    const moved = structuredClone(body);
    moved.payloads[0]!.metadata['encryption-workflow-id'] = b64('wf-2');
    expectRefusal(await post('/decode', moved, auth), 422, ErrorCodes.PAYLOAD_TAMPERED);
    expectRefusal(
      await post(
        '/decode',
        { payloads: [{ metadata: { encoding: b64('json/plain') }, data: b64('1') }] },
        auth,
      ),
      422,
      ErrorCodes.PLAINTEXT_PAYLOAD,
    );
    const hostile = structuredClone(body);
    hostile.payloads[0]!.metadata['encryption-key-id'] = b64('../'.repeat(5000));
    expectRefusal(await post('/decode', hostile, auth), 422, ErrorCodes.KEY_UNKNOWN);
  });

  it.each([
    ['not an object', [1, 2]],
    ['payloads not an array', { payloads: 'x' }],
    ['non-base64 data', { payloads: [{ data: '***' }] }],
    ['non-string metadata', { payloads: [{ metadata: { encoding: 5 } }] }],
  ])('refuses a malformed body (%s)', async (_n, body) => {
    server = makeServer(idp);
    expectRefusal(
      await post('/decode', body, { authorization: `Bearer ${reader}` }),
      400,
      CodecServerCodes.BAD_REQUEST,
    );
  });

  it('refuses invalid JSON, prototype poisoning and too many payloads with stable codes', async () => {
    server = makeServer(idp, { maxPayloads: 2 });
    const auth = `Bearer ${reader}`;
    const raw = (payload: string) => postText('/decode', payload, { authorization: auth });
    expectRefusal(await raw('{"payloads":'), 400, CodecServerCodes.BAD_REQUEST);
    expectRefusal(await raw('{"__proto__":{"polluted":1},"payloads":[]}'), 400, CodecServerCodes.BAD_REQUEST);
    expectRefusal(
      await post('/decode', { payloads: [{}, {}, {}] }, { authorization: auth }),
      400,
      CodecServerCodes.BAD_REQUEST,
    );
  });

  it('unknown paths are 404 with a stable code', async () => {
    server = makeServer(idp);
    expectRefusal(
      await post('/download', {}, { authorization: `Bearer ${reader}` }),
      404,
      CodecServerCodes.NOT_FOUND,
    );
  });

  it('refuses to start misconfigured', () => {
    // A codec that cannot be rebound to the server's namespace (no forNamespace) and falls back to
    // another one would bind every payload to the wrong namespace.
    const fixed = makeCodec();
    const unbindable = {
      namespace: fixed.namespace,
      encode: fixed.encode.bind(fixed),
      decode: fixed.decode.bind(fixed),
    };
    expect(() => makeServer(idp, { namespace: 'other', codec: unbindable })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(() => makeServer(idp, { namespace: '' })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(() => makeServer(idp, { allowedOrigin: '*' })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(() => makeServer(idp, { jwt: undefined })).toThrowError(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    // `plugin.codec` while the plugin's codec is off (found by review: a TypeError).
    const codecOff = new UserContextPlugin({
      keys: KeyRing.fromJSON(generateKeySet('off').worker),
      codec: false,
    });
    expect(codecOff.codec).toBeUndefined();
    for (const codec of [codecOff.codec, {}, null])
      expect(() => makeServer(idp, { codec: codec as never })).toThrowError(
        expect.objectContaining({
          code: ErrorCodes.MISCONFIGURED,
          message: expect.stringContaining('codec is required'),
        }),
      );
    for (const algorithms of [['HS256'], ['ES256', 'hs512'], ['none'], ['ES256', 7 as never]]) {
      const err = catchError(() =>
        makeServer(idp, { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', algorithms } }),
      );
      expect(err, String(algorithms)).toBeInstanceOf(UserContextError);
      expect((err as UserContextError).code).toBe(ErrorCodes.MISCONFIGURED);
    }
    // A cap that is not a number in range would be off, not at its default: NaN fails every comparison.
    for (const over of [
      { maxPayloads: Number.NaN },
      { maxPayloads: 0 },
      { maxPayloads: 1.5 },
      { bodyLimit: Number.POSITIVE_INFINITY },
      { bodyLimit: '8mb' as never },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', clockToleranceSeconds: Number.NaN } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', clockToleranceSeconds: -1 } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', maxTokenAgeSeconds: 0 } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', maxTokenAgeSeconds: Number.NaN } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', maxTokenAgeSeconds: null as never } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: 'y', maxTokenAgeSeconds: 32 * 24 * 3600 } },
      { maxDecodeWorkflows: 0 },
      { maxDecodeWorkflows: 10_001 },
      { maxDecodeWorkflows: Number.NaN },
      { requestTimeoutMs: Number.NaN },
      { requestTimeoutMs: 0 },
      { requestTimeoutMs: 999 },
      { requestTimeoutMs: 600_001 },
      { requestTimeoutMs: '30s' as never },
      { connectionTimeoutMs: Number.POSITIVE_INFINITY },
      { connectionTimeoutMs: 0 },
      { connectionTimeoutMs: 1500.5 },
      // Served /encode when checked for truthiness.
      { encode: 'no' as never },
      { encode: 'false' as never },
      { encode: 1 as never },
      { encode: null as never },
      // jose skips the iss/aud checks for a falsy option: any token of the key set would pass.
      { jwt: { jwks: idp.jwks, issuer: '', audience: 'y' } },
      { jwt: { jwks: idp.jwks, issuer: undefined as never, audience: 'y' } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: undefined as never } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: '' } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: [] } },
      { jwt: { jwks: idp.jwks, issuer: 'x', audience: ['y', ''] } },
      // A key set fetched in clear could be replaced in transit.
      { jwt: { jwks: new URL('http://idp.example.com/jwks.json'), issuer: 'x', audience: 'y' } },
      { jwt: { jwks: new URL('http://10.0.0.8/jwks.json'), issuer: 'x', audience: 'y' } },
      { jwt: { jwks: new URL('ftp://idp.example.com/jwks.json'), issuer: 'x', audience: 'y' } },
      // Every request would fail in the audit call, unrecorded.
      { auditor: undefined as never },
      { auditor: {} as never },
    ]) {
      const err = catchError(() => makeServer(idp, over));
      expect(err, JSON.stringify(over)).toBeInstanceOf(UserContextError);
      expect((err as UserContextError).code).toBe(ErrorCodes.MISCONFIGURED);
    }
    for (const jwks of [
      'https://idp.example.com/jwks.json',
      'http://127.0.0.1:8080/jwks',
      'http://[::1]/jwks',
    ])
      expect(() =>
        makeServer(idp, { jwt: { jwks: new URL(jwks), issuer: 'x', audience: ['y', 'z'] } }),
      ).not.toThrow();
    const badJwks = catchError(() =>
      makeServer(idp, { jwt: { jwks: { keys: 'none' } as never, issuer: 'x', audience: 'y' } }),
    );
    expect(badJwks).toBeInstanceOf(UserContextError);
    expect((badJwks as UserContextError).code).toBe(ErrorCodes.MISCONFIGURED);
  });
});

describe('jwt.maxTokenAgeSeconds', () => {
  // Found by review: a reader disabled at the identity provider kept decoding with a long-lived token.
  it('refuses a token issued longer ago than the bound, however far its expiry; without it, exp decides', async () => {
    const hoursAgo = (h: number) => Math.floor(Date.now() / 1000) - h * 3600;
    const old = await idp.sign({ sub: 'reader', scope: 'codec:decode' }, { iat: hoursAgo(2), exp: '1y' });
    const young = await idp.sign({ sub: 'reader', scope: 'codec:decode' }, { iat: hoursAgo(0.5), exp: '1y' });
    const jwt = { jwks: idp.jwks, issuer: ISSUER, audience: AUDIENCE };
    const bounded = jwtVerifier({ ...jwt, maxTokenAgeSeconds: 3600 });
    await expect(bounded(old)).rejects.toBeInstanceOf(joseErrors.JWTExpired);
    await expect(bounded(young)).resolves.toMatchObject({ subject: 'reader' });
    await expect(jwtVerifier(jwt)(old)).resolves.toMatchObject({ subject: 'reader' });
    // Through the server: 401, on record.
    server = makeServer(idp, { jwt: { ...jwt, maxTokenAgeSeconds: 3600 } });
    const res = await post('/decode', { payloads: [] }, { authorization: `Bearer ${old}` });
    expect(res.statusCode).toBe(401);
    expect(server.sink.events.map((e) => e.decision)).toEqual(['deny']);
  });
});

describe("the identity provider's key set out of reach", () => {
  it('answers 503 CODEC_UNAVAILABLE, not 401: the same token may pass later; audited with its kind', async () => {
    const idp = await makeIdp();
    // A loopback port nothing listens on (bound, then closed): the fetch is refused at once.
    const probe = createNetServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));
    const { app, sink } = makeServer(idp, {
      jwt: { jwks: new URL(`http://127.0.0.1:${port}/jwks.json`), issuer: ISSUER, audience: AUDIENCE },
    });
    const token = await idp.sign({ sub: 'reader', scope: 'codec:decode' });
    const res = await app.inject({
      method: 'POST',
      url: '/decode',
      headers: {
        origin: UI_ORIGIN,
        authorization: `Bearer ${token}`,
        'x-namespace': 'default',
        'content-type': 'application/json',
      },
      payload: { payloads: [] },
    });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: CodecServerCodes.UNAVAILABLE });
    expect(sink.events.map((e) => [e.decision, e.reason, e.detail])).toEqual([
      ['deny', CodecServerCodes.UNAVAILABLE, `origin="${UI_ORIGIN}" token=key-set-unavailable`],
    ]);
    await app.close();
  });
});

describe('codec server timeouts', () => {
  // Fastify keeps requestTimeout in initialConfig but leaves it out of the type.
  const initialConfig = () =>
    server!.app.initialConfig as { requestTimeout?: number; connectionTimeout?: number };

  // Fastify's defaults are 0: no deadline at all. headersTimeout larger than requestTimeout would make
  // Node swap them and give a body 60 s.
  it.each([
    ['by default', {}, 30_000, 30_000],
    ['as given', { requestTimeoutMs: 5000, connectionTimeoutMs: 120_000 }, 5000, 120_000],
  ])('has request and connection deadlines %s', (_name, given, request, connection) => {
    server = makeServer(idp, given);
    expect(initialConfig()).toMatchObject({ requestTimeout: request, connectionTimeout: connection });
    const { requestTimeout, headersTimeout, timeout } = server.app.server;
    expect({ requestTimeout, headersTimeout, timeout }).toEqual({
      requestTimeout: request,
      headersTimeout: request,
      timeout: connection,
    });
  });
});

describe('codec server namespace', () => {
  // A codec-server process builds the plugin without a client or worker: its codec falls back to
  // 'default'. The server's own namespace must still be the one payloads are bound to.
  const plugin = new UserContextPlugin({
    keys: KeyRing.fromJSON(generateKeySet('cs').worker),
    audit: memoryAuditSink(),
  });

  async function bodyFor(namespace: string) {
    const [p] = await plugin.codec!.encode([json('for prod')], wf('wf-1', namespace));
    const metadata = Object.fromEntries(Object.entries(p!.metadata!).map(([k, v]) => [k, b64(v)]));
    return { payloads: [{ metadata, data: b64(p!.data!) }] };
  }

  it("createCodecServer({ codec: plugin.codec, namespace }) serves that namespace, whatever the codec's fallback", async () => {
    expect(plugin.codec?.namespace).toBe('default');
    server = makeServer(idp, { codec: plugin.codec!, namespace: 'prod' });
    const auth = { authorization: `Bearer ${reader}`, 'x-namespace': 'prod' };
    const res = await post('/decode', await bodyFor('prod'), auth);
    expect(res.statusCode).toBe(200);
    expect(Buffer.from(res.json().payloads[0].data, 'base64').toString()).toBe('"for prod"');
    // Ciphertext of another namespace stays bound to it.
    expectRefusal(await post('/decode', await bodyFor('default'), auth), 422, ErrorCodes.PAYLOAD_TAMPERED);
    expectRefusal(
      await post('/decode', await bodyFor('prod'), { ...auth, 'x-namespace': 'default' }),
      403,
      CodecServerCodes.NAMESPACE_FORBIDDEN,
    );
  });

  it("records each refusal once, with the caller: the plugin codec's own refusal hook stays out of it", async () => {
    const pluginSink = memoryAuditSink();
    const audited = new UserContextPlugin({
      keys: KeyRing.fromJSON(generateKeySet('cs').worker),
      audit: [pluginSink],
    });
    server = makeServer(idp, { codec: audited.codec!, namespace: 'prod' });
    const auth = { authorization: `Bearer ${reader}`, 'x-namespace': 'prod' };
    const plain = { payloads: [{ metadata: { encoding: b64('json/plain') }, data: b64('1') }] };
    expectRefusal(await post('/decode', plain, auth), 422, ErrorCodes.PLAINTEXT_PAYLOAD);
    expect(server.sink.events.map((e) => [e.action, e.decision, e.reason, e.userId, e.detail])).toEqual([
      [
        'codec.decode',
        'deny',
        ErrorCodes.PLAINTEXT_PAYLOAD,
        'alice',
        `origin="${UI_ORIGIN}" reason="payload is not encrypted"`,
      ],
    ]);
    expect(pluginSink.events).toEqual([]);
    // The plugin's codec itself, on a worker or client, still records its refusals.
    await expect(audited.codec!.decode([json('1')], wf('wf-1', 'prod'))).rejects.toThrow(
      ErrorCodes.PLAINTEXT_PAYLOAD,
    );
    expect(pluginSink.events.map((e) => [e.action, e.reason, e.workflowId])).toEqual([
      ['codec.decode', ErrorCodes.PLAINTEXT_PAYLOAD, 'wf-1'],
    ]);
    // A body refused after authorization names the caller too.
    const badJson = await server.app.inject({
      method: 'POST',
      url: '/decode',
      headers: { 'content-type': 'application/json', origin: UI_ORIGIN, ...auth },
      payload: '{"payloads":',
    });
    expect(badJson.statusCode).toBe(400);
    expect(server.sink.events.at(-1)).toMatchObject({ action: 'codec.request', userId: 'alice' });
  });

  it('the rebound codec follows key rotation of the original', async () => {
    const codec = makeCodec();
    server = makeServer(idp, { codec, namespace: 'prod', encode: true });
    const auth = { authorization: `Bearer ${writer}`, 'x-namespace': 'prod' };
    codec.rotate({ keys: [{ ...K2 }, { ...K1, status: 'decrypt-only' }] });
    const encoded = await post(
      '/encode',
      { payloads: [{ metadata: { encoding: b64('json/plain') }, data: b64('1') }] },
      auth,
    );
    expect(encoded.statusCode).toBe(200);
    expect(Buffer.from(encoded.json().payloads[0].metadata['encryption-key-id'], 'base64').toString()).toBe(
      'k2',
    );
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

function b64url(obj: unknown): string {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

/** `key=value` fields of an audit detail: a value is a bare word or a JSON string (which may hold spaces). */
function detailFields(detail: string): [string, string][] {
  const out: [string, string][] = [];
  // A quoted value holds no quote and no escape; a bare one no space or quote. The whole detail must
  // parse: a value cut before its closing quote does not.
  const field = /([a-z]+)=("[^"]*"|[^\s"]+)(?: |$)/gy;
  let consumed = 0;
  let match: RegExpExecArray | null;
  while ((match = field.exec(detail)) !== null) {
    const value = match[2]!;
    out.push([match[1]!, value.startsWith('"') ? value.slice(1, -1) : value]);
    consumed = field.lastIndex;
  }
  expect(consumed, detail).toBe(detail.length);
  return out;
}

/** Sends `text` on a fresh connection and resolves with everything the server wrote before closing. */
function rawExchange(port: number, text: string, opts: { keepOpen?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      if (opts.keepOpen) socket.write(text, 'latin1');
      else socket.end(text, 'latin1');
    });
    let out = '';
    socket.on('data', (chunk: Buffer) => (out += chunk.toString('latin1')));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}
