import { randomInt } from 'node:crypto';
import { createServer } from 'node:net';

/**
 * Ports below the ephemeral range of Linux (32768–60999), macOS and Windows (49152–65535), from which
 * every outgoing connection takes its local port. A port the kernel picks for `listen(0)` comes from
 * that range, and between the pick and the server's own bind any of the tests' outgoing connections
 * (to Temporal, to PostgreSQL) could take it (found by a flakiness review); one below it is taken only
 * by another listener.
 */
const LOWEST = 20_000;
const HIGHEST = 32_767;

/** Whether a listener can bind `port` on 127.0.0.1 now (`0`: any; resolves to the port bound). */
function bindable(port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(undefined) : reject(err),
    );
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as { port: number }).port;
      server.close(() => resolve(bound));
    });
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for servers started with a port flag). */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = await bindable(randomInt(LOWEST, HIGHEST + 1));
    if (port !== undefined) return port;
  }
  // Every try was taken: the kernel's choice, as before.
  const port = await bindable(0);
  if (port === undefined) throw new Error('no free port');
  return port;
}
