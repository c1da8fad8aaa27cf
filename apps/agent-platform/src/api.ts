// `npm run api`: the HTTP API alone (a worker runs elsewhere: `npm run worker`).
import { UserContextPlugin, pinoAuditSink, stdoutLogger } from 'temporal-user-context';
import { postgresAuditSink } from 'temporal-user-context/postgres';
import { createApi } from './api/app.js';
import { edgeDatabaseAudit } from './api/edge-audit.js';
import { loadDevIssuer } from './auth/dev-issuer.js';
import { createVerifier, type AuthOptions } from './auth/verify.js';
import {
  AUDIT_FLUSH_TIMEOUT_MS,
  actorWindowSeconds,
  assertPlatformIsolation,
  platformKeyRing,
  openDatabase,
  searchAttributeMirror,
  taskQueue,
} from './config.js';
import { quotasFromEnv } from './api/quotas.js';
import { migrate } from './data/migrate.js';
import { connectClient } from './temporal.js';

export { createApi } from './api/app.js';

/**
 * AUTH_MAX_TOKEN_AGE_SECONDS, AUTH_TOKEN_TYPE and AUTH_JWKS_CACHE_SECONDS; empty means unset, as for
 * the other variables. A value that is not what it should be is refused rather than read as the
 * default.
 */
export function tokenChecksFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): Pick<AuthOptions, 'maxTokenAgeSeconds' | 'tokenType' | 'jwksCacheSeconds'> {
  const age = env.AUTH_MAX_TOKEN_AGE_SECONDS;
  const type = env.AUTH_TOKEN_TYPE;
  const cache = env.AUTH_JWKS_CACHE_SECONDS;
  if (age && !/^[1-9][0-9]{0,8}$/.test(age))
    throw new Error('AUTH_MAX_TOKEN_AGE_SECONDS must be a positive whole number of seconds');
  if (type && type.toLowerCase() !== 'any' && !/^[A-Za-z0-9][A-Za-z0-9.+/-]{0,63}$/.test(type))
    throw new Error('AUTH_TOKEN_TYPE must be a media type such as at+jwt or JWT, or any');
  if (cache && !/^[1-9][0-9]{0,5}$/.test(cache))
    throw new Error('AUTH_JWKS_CACHE_SECONDS must be a positive whole number of seconds');
  return {
    ...(age ? { maxTokenAgeSeconds: Number(age) } : {}),
    ...(type && type.toLowerCase() !== 'any' ? { tokenType: type } : {}),
    ...(cache ? { jwksCacheSeconds: Number(cache) } : {}),
  };
}

/** AUTH_JWKS_URL / AUTH_ISSUER / AUTH_AUDIENCE, else the local development issuer. */
export async function authFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<AuthOptions> {
  const checks = tokenChecksFromEnv(env);
  if (env.AUTH_JWKS_URL) {
    if (!env.AUTH_ISSUER || !env.AUTH_AUDIENCE)
      throw new Error('AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE');
    // Found by review: with no `typ` check, any token the provider signs for the audience passes, an
    // OpenID Connect ID token among them (a common mistake sets the audience to the client id, which
    // is what ID tokens name). In production the choice is made out loud.
    if (env.NODE_ENV === 'production' && !env.AUTH_TOKEN_TYPE)
      throw new Error(
        "set AUTH_TOKEN_TYPE to the `typ` of your provider's access tokens (at+jwt for RFC 9068 ones), or to any to take every token it signs for AUTH_AUDIENCE",
      );
    return { jwks: env.AUTH_JWKS_URL, issuer: env.AUTH_ISSUER, audience: env.AUTH_AUDIENCE, ...checks };
  }
  if (env.NODE_ENV === 'production') throw new Error('set AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE');
  console.warn('api: AUTH_JWKS_URL unset: trusting the local dev issuer (.data/auth), for development only');
  const dev = await loadDevIssuer();
  // The dev issuer always sets `typ: JWT`, so its tokens can be held to it.
  return { jwks: dev.jwks, issuer: dev.issuer, audience: dev.audience, tokenType: 'JWT', ...checks };
}

async function main(): Promise<void> {
  const database = await openDatabase();
  if (database.kind === 'pglite') await migrate(database.db);
  await assertPlatformIsolation(database.db);
  // Refusals of anonymous requests, and of a removed member's, reach the table once per kind and
  // minute, with a count (edgeDatabaseAudit); the pino sink logs every record, as in main.ts.
  const dbAudit = edgeDatabaseAudit(postgresAuditSink(database.auditDb));
  const plugin = new UserContextPlugin({
    keys: platformKeyRing('edge'),
    audit: [dbAudit, pinoAuditSink()],
    mirror: { searchAttributes: searchAttributeMirror('off') },
    actorWindowSeconds: actorWindowSeconds(),
  });
  const { client, connection } = await connectClient(plugin);
  const app = await createApi({
    db: database.db,
    client,
    verify: createVerifier(await authFromEnv()),
    logger: stdoutLogger(),
    scope: { auditor: plugin.auditor },
    ...(plugin.searchAttributeMirror === 'off' ? {} : { mirrorQuery: (ids) => plugin.mirrorQuery(ids) }),
    quotas: quotasFromEnv(),
    taskQueue: taskQueue(),
  });
  const port = Number(process.env.PORT ?? 3000);
  await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' });
  const stop = async () => {
    try {
      await app.close();
      await connection.close();
    } finally {
      // Records still being written need the pool: once it ends, they would never settle. close(), not
      // flush(): a record emitted after it is not held in a window the process exits before writing.
      await dbAudit.close({ timeoutMs: AUDIT_FLUSH_TIMEOUT_MS });
      await database.close();
    }
  };
  // Exits once stopped (see worker.ts): the stdout audit sink's lines are written within a bound.
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () =>
      stop().then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      ),
    );
}

if (process.argv[1]?.endsWith('api.ts') || process.argv[1]?.endsWith('api.js')) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
