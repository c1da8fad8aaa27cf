// `npm run api`: the HTTP API alone (a worker runs elsewhere: `npm run worker`).
import { UserContextPlugin } from 'temporal-user-context';
import { assertIsolation, postgresAuditSink } from 'temporal-user-context/postgres';
import { createApi } from './api/app.js';
import { loadDevIssuer } from './auth/dev-issuer.js';
import { createVerifier, type AuthOptions } from './auth/verify.js';
import { ensureKeyFiles, keyRingFromEnv, openDatabase, searchAttributeMirror } from './config.js';
import { migrate } from './data/migrate.js';
import { connectClient } from './temporal.js';

export { createApi } from './api/app.js';

/** AUTH_JWKS_URL / AUTH_ISSUER / AUTH_AUDIENCE, else the local development issuer. */
export async function authFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<AuthOptions> {
  if (env.AUTH_JWKS_URL) {
    if (!env.AUTH_ISSUER || !env.AUTH_AUDIENCE)
      throw new Error('AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE');
    return { jwks: env.AUTH_JWKS_URL, issuer: env.AUTH_ISSUER, audience: env.AUTH_AUDIENCE };
  }
  if (env.NODE_ENV === 'production') throw new Error('set AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE');
  const dev = await loadDevIssuer();
  return { jwks: dev.jwks, issuer: dev.issuer, audience: dev.audience };
}

async function main(): Promise<void> {
  const database = await openDatabase();
  if (database.kind === 'pglite') await migrate(database.db);
  await assertIsolation(database.db);
  const plugin = new UserContextPlugin({
    keys: keyRingFromEnv(ensureKeyFiles().edge),
    audit: postgresAuditSink(database.db),
    mirror: { searchAttributes: searchAttributeMirror('off') },
  });
  const { client, connection } = await connectClient(plugin);
  const app = await createApi({
    db: database.db,
    client,
    verify: createVerifier(await authFromEnv()),
    logger: true,
    scope: { auditor: plugin.auditor },
  });
  const port = Number(process.env.PORT ?? 3000);
  await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' });
  const stop = async () => {
    await app.close();
    await connection.close();
    await database.close();
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void stop());
}

if (process.argv[1]?.endsWith('api.ts') || process.argv[1]?.endsWith('api.js')) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
