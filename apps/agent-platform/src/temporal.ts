import { Client, Connection } from '@temporalio/client';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import { NativeConnection } from '@temporalio/worker';
import type { UserContextPlugin } from 'temporal-user-context';

/**
 * Connection settings from the Temporal environment configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_API_KEY, TLS variables, TEMPORAL_PROFILE and the TOML config file), defaulting to localhost.
 */
export function temporalConnectConfig(): {
  connectionOptions: ReturnType<typeof loadClientConnectConfig>['connectionOptions'];
  namespace: string;
} {
  const config = loadClientConnectConfig();
  return {
    connectionOptions: { address: 'localhost:7233', ...config.connectionOptions },
    namespace: config.namespace ?? 'default',
  };
}

export async function connectWorker(): Promise<{ connection: NativeConnection; namespace: string }> {
  const { connectionOptions, namespace } = temporalConnectConfig();
  return { connection: await NativeConnection.connect(connectionOptions), namespace };
}

export async function connectClient(
  plugin: UserContextPlugin,
): Promise<{ client: Client; connection: Connection }> {
  const { connectionOptions, namespace } = temporalConnectConfig();
  // On the Connection, the plugin also audits schedule changes (update, delete, trigger, pause), which
  // no client interceptor sees; the Connection passes it on to the Client.
  const connection = await Connection.connect({ ...connectionOptions, plugins: [plugin] });
  return { client: new Client({ connection, namespace }), connection };
}
