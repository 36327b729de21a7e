import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';

/** File descriptors the service keeps for itself whatever its pool: listeners, logs, the ledger, upstreams. */
const fdsForTheService = 128;
/** File descriptors an invocation or a standby can hold: workerd's pipes and socket, its files, upstream connections. */
const fdsPerCgroup = 16;

/** What limits the client connections held at once, and to how many. */
export interface ConnectionCap {
  readonly connections: number;
  /** MAX_CONNECTIONS, or the process's open-file limit less what the service needs besides. */
  readonly by: 'MAX_CONNECTIONS' | 'open-file limit';
}

/**
 * The most client connections the service holds: MAX_CONNECTIONS, or fewer when the open-file
 * limit would run out first. Past that limit the kernel refuses accept() and Node resets every
 * new connection, so the cap keeps the descriptors that the pool's workerd need.
 */
export function connectionCap(
  maxConnections: number,
  poolSize: number,
  openFileLimit: number | undefined,
): ConnectionCap {
  const left =
    openFileLimit === undefined ? Number.POSITIVE_INFINITY : openFileLimit - fdsForTheService - fdsPerCgroup * poolSize;
  return left < maxConnections
    ? { connections: Math.max(1, left), by: 'open-file limit' }
    : { connections: maxConnections, by: 'MAX_CONNECTIONS' };
}

/**
 * This process's soft limit on open files (RLIMIT_NOFILE), from /proc; undefined where it cannot
 * be read. Node raises its soft limit to the hard one as it starts, so this is the hard limit.
 */
export function readOpenFileLimit(): number | undefined {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return line?.[1] === undefined || line[1] === 'unlimited' ? undefined : Number(line[1]);
  } catch {
    return undefined;
  }
}

// One client connection, and what it has done.
interface Held {
  readonly socket: Socket;
  /** Bytes it had sent when it was last seen to make progress. */
  bytesRead: number;
  /** The request on it whose answer has not gone yet. */
  request: IncomingMessage | undefined;
}

/**
 * Holds at most `cap` client connections on a server. When one more comes, it makes room by
 * closing the connection that has made no progress for longest and is not being answered (one
 * idle between requests, or still sending its headers or body); only when every other one is
 * being answered is the new one closed instead. The connections are kept in the order of their
 * last progress: a request's headers arriving and its answer going are seen as they happen, and
 * bytes in between (headers or a body sent slowly) are looked at lazily: one found at the front
 * that has sent bytes since it was last seen goes to the back, so each step of a search is paid
 * for by the client's bytes.
 */
export function holdConnections(server: Server, cap: number, onClosedForRoom: () => void): void {
  const held = new Map<Socket, Held>();
  // A connection's first bytes count as sent when it connected, as clients send at once: only what
  // comes after them moves it back.
  const progressed = (connection: Held) => {
    if (connection.bytesRead === 0) connection.bytesRead = connection.socket.bytesRead;
    return connection.socket.bytesRead !== connection.bytesRead;
  };
  const toBack = (connection: Held) => {
    connection.bytesRead = connection.socket.bytesRead;
    held.delete(connection.socket);
    held.set(connection.socket, connection);
  };
  // A request wholly received and not yet answered is being served; anything else can be closed.
  const closable = (connection: Held) => !connection.request?.complete;

  const makeRoom = (newcomer: Socket) => {
    const moved: Held[] = [];
    let victim: Held | undefined;
    for (const connection of held.values()) {
      if (connection.socket === newcomer || !closable(connection)) continue;
      if (!progressed(connection)) {
        victim = connection;
        break;
      }
      moved.push(connection);
    }
    victim ??= moved.shift();
    for (const connection of moved) toBack(connection);
    const closing = victim?.socket ?? newcomer;
    held.delete(closing);
    closing.destroy();
    onClosedForRoom();
  };

  server.on('connection', (socket: Socket) => {
    held.set(socket, { socket, bytesRead: 0, request: undefined });
    socket.once('close', () => held.delete(socket));
    if (held.size > cap) makeRoom(socket);
  });
  server.on('request', (request: IncomingMessage, response) => {
    const connection = held.get(request.socket as Socket);
    if (connection === undefined) return;
    connection.request = request;
    toBack(connection);
    response.once('finish', () => {
      if (connection.request !== request) return;
      connection.request = undefined;
      if (held.has(connection.socket)) toBack(connection);
    });
  });
}
