import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { BodyTooLargeError, readCapped, send, startDeadline } from '../../src/httpClient.js';

describe('readCapped', () => {
  test('reads a body up to the cap', async () => {
    expect((await readCapped(Readable.from([Buffer.from('ab'), Buffer.from('cd')]), 4)).toString()).toBe('abcd');
  });

  test('stops reading an endless body as soon as it passes the cap', async () => {
    let produced = 0;
    const endless = new Readable({
      read() {
        produced += 1024;
        this.push(Buffer.alloc(1024));
      },
    });
    await expect(readCapped(endless, 10_000)).rejects.toBeInstanceOf(BodyTooLargeError);
    expect(produced).toBeLessThan(100 * 1024);
    expect(endless.destroyed).toBe(true);
  });
});

describe('startDeadline', () => {
  test('fires with a TimeoutError when its time is up', async () => {
    const deadline = startDeadline(new AbortController().signal, 20);
    await new Promise((resolve) => deadline.signal.addEventListener('abort', resolve));
    expect((deadline.signal.reason as Error).name).toBe('TimeoutError');
  });

  test("fires with the parent's reason when the parent aborts first", () => {
    const parent = new AbortController();
    const deadline = startDeadline(parent.signal, 10_000);
    parent.abort(new Error('client gone'));
    expect((deadline.signal.reason as Error).message).toBe('client gone');
  });

  test('does not fire once cleared', async () => {
    const deadline = startDeadline(new AbortController().signal, 10);
    deadline.clear();
    await sleep(30);
    expect(deadline.signal.aborted).toBe(false);
  });
});

describe('send', () => {
  // A server that answers the first request on each connection and keeps the connection open,
  // then resets it when a second request comes: what an upstream does that closes idle
  // connections just as a request is sent.
  const resetOnSecondRequest = () => {
    let connections = 0;
    const server = createServer((socket: Socket) => {
      connections += 1;
      let requests = 0;
      socket.on('data', () => {
        requests += 1;
        if (requests === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
        else socket.resetAndDestroy();
      });
    });
    return { server, connections: () => connections };
  };
  // A raw TCP server on loopback; close() drops its connections too.
  const listen = async (server: Server) => {
    const sockets = new Set<Socket>();
    server.on('connection', (socket) => sockets.add(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
      close: () => {
        for (const socket of sockets) socket.destroy();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  };
  const body = async (url: string, keepAlive: boolean) => {
    const response = await send(url, { method: 'GET', signal: new AbortController().signal, keepAlive });
    return (await readCapped(response, 100)).toString();
  };

  test('a kept-alive connection the upstream reset is tried once more on a new one', async () => {
    const { server, connections } = resetOnSecondRequest();
    const running = await listen(server);
    try {
      expect(await body(running.url, true)).toBe('ok');
      expect(await body(running.url, true)).toBe('ok');
      expect(connections()).toBe(2);
    } finally {
      await running.close();
    }
  });

  test('a reset on a new connection is not retried', async () => {
    let connections = 0;
    const server = createServer((socket: Socket) => {
      connections += 1;
      socket.on('data', () => socket.resetAndDestroy());
    });
    const running = await listen(server);
    try {
      await expect(body(running.url, true)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(connections).toBe(1);
    } finally {
      await running.close();
    }
  });
});
