import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A development server that is listening, and how to stop it. */
export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:1300 */
  readonly url: string;
  close(): Promise<void>;
}

/** Listens on host:port (port 0 picks a free one) and reports the URL it got. */
export async function listen(server: Server, host: string, port: number): Promise<RunningServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
