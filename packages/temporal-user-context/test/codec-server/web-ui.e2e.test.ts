/**
 * End to end with the real Temporal Web UI: a dev server whose UI points at our codec server, a
 * workflow whose input the codec encrypted, and headless Chromium opening the workflow page.
 *
 * How the UI passes a token (temporalio/ui `src/lib/services/data-encoder.ts`): when "pass access
 * token" is on AND the endpoint is `https://`, it sends `Authorization: Bearer <AuthUser.accessToken>`
 * (localStorage `AuthUser`, filled by the UI's OIDC login). The dev server cannot enable UI auth or
 * "pass access token" (`--ui-codec-endpoint` only sets the endpoint), and with auth off the UI clears
 * `AuthUser` on every load. So the browser sees the dev server's real settings with two flags flipped
 * — `Auth.Enabled` and `Codec.PassAccessToken`, as a production ui-server with OIDC would serve them —
 * and `AuthUser` seeded as the login would leave it. Everything else is the real UI and server.
 *
 * Skipped when Chromium is absent, except under `CI`, where it must run (install: `apt-get install -y
 * chromium`).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Auditor, memoryAuditSink } from '../../src/audit/index.js';
import { createCodecServer } from '../../src/codec-server/index.js';
import { freePort } from '../../../../test-support/net.js';
import { makeCodec } from '../crypto/codec-helpers.js';
import { AUDIENCE, ISSUER, makeIdp, type Idp } from './helpers.js';
import { CHILD_TIMEOUT } from '../../../../test-support/child.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(
    `CI: Chromium is required for the Web UI e2e test (${CHROMIUM}); apt-get install -y chromium`,
  );
}

const cliScript = fileURLToPath(new URL('../../../../scripts/temporal-cli.mjs', import.meta.url));
const SECRET = `decoded-by-codec-${Math.random().toString(36).slice(2, 10)}`;

describe.skipIf(!haveChromium)('Web UI + codec server (e2e, case 23)', () => {
  const sink = memoryAuditSink();
  const codec = makeCodec();
  let idp: Idp;
  let tmp: string;
  let temporal: ChildProcess | undefined;
  let browser: Browser | undefined;
  let codecServer: ReturnType<typeof createCodecServer> | undefined;
  let connection: Connection | undefined;
  let uiOrigin: string;
  let codecUrl: string;
  const workflowId = `e2e-codec-${Date.now()}`;

  beforeAll(async () => {
    idp = await makeIdp();
    tmp = mkdtempSync(join(tmpdir(), 'codec-e2e-'));

    // The UI sends the access token to https endpoints only: serve the codec over TLS (self-signed).
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(tmp, 'key.pem'),
        '-out',
        join(tmp, 'cert.pem'),
      ],
      { stdio: 'ignore', timeout: CHILD_TIMEOUT },
    );
    const bin = execFileSync(process.execPath, [cliScript, '--print-path'], {
      encoding: 'utf8',
      timeout: CHILD_TIMEOUT,
    }).trim();
    // The dev server picks its other services' ports itself, after we picked ours: on a busy machine
    // one of them can be taken by the time it binds, and it exits. Start again on fresh ports then.
    const failures: string[] = [];
    for (let attempt = 1; connection === undefined; attempt++) {
      const [grpcPort, uiPort] = await Promise.all([freePort(), freePort()]);
      uiOrigin = `http://127.0.0.1:${uiPort}`;
      codecServer = createCodecServer({
        codec,
        namespace: 'default',
        allowedOrigin: uiOrigin,
        jwt: { jwks: idp.jwks, issuer: ISSUER, audience: AUDIENCE },
        auditor: new Auditor([sink]),
        https: { key: readFileSync(join(tmp, 'key.pem')), cert: readFileSync(join(tmp, 'cert.pem')) },
      });
      await codecServer.listen({ host: '127.0.0.1', port: 0 });
      const address = codecServer.server.address();
      codecUrl = `https://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
      const dbFile = join(tmp, `temporal-${attempt}.db`);
      temporal = spawn(bin, devServerArgs({ grpcPort, uiPort, codecUrl, dbFile }), {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const output = tail(temporal);
      try {
        connection = await connectWhileRunning(temporal, `127.0.0.1:${grpcPort}`, 90_000);
      } catch (err) {
        failures.push(`attempt ${attempt}: ${(err as Error).message}\n${output()}`);
        await stop(temporal);
        await codecServer.close();
        if (attempt === 3) {
          throw new Error(`dev server did not start:\n${failures.join('\n')}`, { cause: err });
        }
      }
    }
    const client = new Client({
      connection,
      namespace: 'default',
      dataConverter: { payloadCodecs: [codec] },
    });
    // No worker: the workflow never runs, its encrypted input just sits in history.
    await retry(
      () => client.workflow.start('e2eWorkflow', { taskQueue: 'no-worker', workflowId, args: [SECRET] }),
      30_000,
    );
    await retry(async () => {
      const res = await fetch(uiOrigin);
      if (!res.ok) throw new Error(`UI ${res.status}`);
    }, 60_000);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await connection?.close();
    await codecServer?.close();
    if (temporal) await stop(temporal);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** Opens the workflow page with the UI's codec override and the given access token. */
  async function openWorkflowPage(accessToken: string) {
    const context = await browser!.newContext({ ignoreHTTPSErrors: true });
    // What a ui-server configured with `auth.enabled` (OIDC) and `codec.passAccessToken: true` would
    // serve. The dev server's UI has auth off, and the UI then wipes `AuthUser` on load; everything
    // else (the codec endpoint from --ui-codec-endpoint included) is the server's real answer.
    await context.route('**/api/v1/settings*', async (route) => {
      const res = await route.fetch();
      const settings = (await res.json()) as {
        Auth?: { Enabled?: boolean };
        Codec?: Record<string, unknown>;
      };
      settings.Auth = { ...settings.Auth, Enabled: true };
      settings.Codec = { ...settings.Codec, PassAccessToken: true };
      await route.fulfill({ response: res, json: settings });
    });
    // The UI's login stores the IdP access token here (from the ui-server's `user*` cookies).
    // (Runs in the page; the test's TypeScript has no DOM lib, hence the cast.)
    await context.addInitScript((token) => {
      const { localStorage } = globalThis as unknown as {
        localStorage: { setItem(k: string, v: string): void };
      };
      localStorage.setItem('AuthUser', JSON.stringify({ accessToken: token }));
    }, accessToken);
    const page = await context.newPage();
    const codecResponses: number[] = [];
    page.on('response', (res) => {
      if (res.url().startsWith(`${codecUrl}/decode`)) codecResponses.push(res.status());
    });
    await page.goto(`${uiOrigin}/namespaces/default/workflows/${encodeURIComponent(workflowId)}`);
    return { context, page, codecResponses };
  }

  it('shows the decoded input when the codec server accepts the token', async () => {
    const token = await idp.sign({ sub: 'ui-reader', scope: 'codec:decode' });
    sink.clear();
    const { context, page, codecResponses } = await openWorkflowPage(token);
    const name = 'accepted';
    try {
      await expect
        .poll(() => page.getByText(SECRET).count(), { timeout: 45_000, interval: 500 })
        .toBeGreaterThan(0);
      expect(codecResponses).toContain(200);
      expect(sink.events).toContainEqual(
        expect.objectContaining({ action: 'codec.decode', decision: 'allow', userId: 'ui-reader' }),
      );
      // The browser really sent the token and the UI origin.
      expect(sink.events.find((e) => e.decision === 'allow')?.detail).toContain(
        `origin=${JSON.stringify(uiOrigin)}`,
      );
    } catch (err) {
      await page
        .screenshot({ path: join(tmpdir(), 'codec-e2e-accepted.png'), fullPage: true })
        .catch(() => {});
      throw err;
    } finally {
      // Set CODEC_E2E_SCREENSHOTS=<dir> to keep a picture of what the UI showed.
      const dir = process.env.CODEC_E2E_SCREENSHOTS;
      if (dir) await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
      await context.close();
    }
  });

  it('does not show the input when the codec server refuses the token', async () => {
    const forged = await idp.sign({ sub: 'ui-forger', scope: 'codec:decode' }, { key: idp.otherKey });
    sink.clear();
    const { context, page, codecResponses } = await openWorkflowPage(forged);
    const name = 'refused';
    try {
      // Wait until the UI has asked the codec server and rendered the workflow page.
      await expect.poll(() => codecResponses.length, { timeout: 45_000, interval: 500 }).toBeGreaterThan(0);
      await expect.poll(() => page.getByText(workflowId).count(), { timeout: 30_000 }).toBeGreaterThan(0);
      await sleep(2_000);
      expect(codecResponses.every((s) => s === 401)).toBe(true);
      expect(await page.getByText(SECRET).count()).toBe(0);
      expect(await page.content()).not.toContain(SECRET);
      // The UI says so, and shows the input still encoded.
      await expect
        .poll(() => page.getByText('Codec Server could not connect').count(), { timeout: 15_000 })
        .toBeGreaterThan(0);
      expect(sink.events).toContainEqual(
        expect.objectContaining({ action: 'codec.decode', decision: 'deny', reason: 'CODEC_TOKEN_INVALID' }),
      );
    } catch (err) {
      await page
        .screenshot({ path: join(tmpdir(), 'codec-e2e-refused.png'), fullPage: true })
        .catch(() => {});
      throw err;
    } finally {
      // Set CODEC_E2E_SCREENSHOTS=<dir> to keep a picture of what the UI showed.
      const dir = process.env.CODEC_E2E_SCREENSHOTS;
      if (dir) await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
      await context.close();
    }
  });
});

function devServerArgs(o: { grpcPort: number; uiPort: number; codecUrl: string; dbFile: string }) {
  return [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(o.grpcPort),
    '--ui-port',
    String(o.uiPort),
    '--ui-codec-endpoint',
    o.codecUrl,
    '--db-filename',
    o.dbFile,
    '--log-level',
    'error',
    '--ui-disable-news-fetch',
  ];
}

/** The last 4 KiB the process wrote to stderr (why a dev server exited). */
function tail(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    text = (text + chunk).slice(-4096);
  });
  return () => text;
}

/** Connects to the dev server; gives up at once if it exits, else at the deadline. */
async function connectWhileRunning(
  child: ChildProcess,
  address: string,
  timeoutMs: number,
): Promise<Connection> {
  const exited = new Promise<never>((_, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`dev server exited (${code ?? signal})`)));
  });
  exited.catch(() => undefined); // observed by the race below, or moot once connected
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) return exited;
    try {
      return await Promise.race([Connection.connect({ address, connectTimeout: 5_000 }), exited]);
    } catch (err) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

async function retry<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
