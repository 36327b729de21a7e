import { createServer } from 'node:http';
import { listen, type RunningServer } from '../../src/dev/listen.js';

// How an upstream misbehaves.
export type Fault =
  /** Accepts the request and never answers. */
  | 'silent'
  /** Answers 503. */
  | 'error'
  /** Sends a 200 header promising a body, half of it, then drops the connection. */
  | 'cut'
  /** Sends a 200 body that never ends. */
  | 'endless';

// An upstream that misbehaves in one way, counting the requests it got.
export interface FaultyServer extends RunningServer {
  readonly requests: number;
}

// Starts a loopback server that answers every request with the given fault.
export async function startFaultyServer(fault: Fault): Promise<FaultyServer> {
  let requests = 0;
  const server = createServer((request, response) => {
    requests += 1;
    request.resume();
    switch (fault) {
      case 'silent':
        return;
      case 'error':
        response.writeHead(503).end('unavailable');
        return;
      case 'cut':
        response.writeHead(200, { 'content-length': '1000' });
        response.write('x'.repeat(500), () => response.destroy());
        return;
      case 'endless': {
        response.writeHead(200);
        const chunk = Buffer.alloc(64 * 1024, 'x');
        const pump = () => {
          while (!response.destroyed && response.write(chunk));
          if (!response.destroyed) response.once('drain', pump);
        };
        pump();
        return;
      }
    }
  });
  const running = await listen(server, '127.0.0.1', 0);
  return {
    ...running,
    get requests() {
      return requests;
    },
  };
}
