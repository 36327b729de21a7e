import net from 'node:net';

/** A raw client connection: what it received, and when the server closed it. */
export interface RawClient {
  readonly socket: net.Socket;
  received(): string;
  /** Resolves with the milliseconds from connecting until the server closed the connection. */
  readonly closed: Promise<number>;
}

/** Connects to a port on loopback and sends the first bytes of a request. */
export function connect(port: number, firstBytes: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    // A reset is the server closing too.
    socket.on('error', () => undefined);
    const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
    socket.once('connect', () => {
      socket.write(firstBytes);
      resolve({ socket, received: () => received, closed });
    });
    socket.once('error', reject);
  });
}

/** A request's headers, saying a body follows that never comes. */
export const stalledHead =
  'POST /api/serverless HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n';
