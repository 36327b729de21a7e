import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, test } from 'vitest';
import { connectionCap, holdConnections } from '../../src/http/connectionRoom.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { connect, type RawClient, stalledHead } from '../helpers/rawClient.js';

describe('the connection cap', () => {
  test('is MAX_CONNECTIONS while the open-file limit leaves room for it', () => {
    expect(connectionCap(1000, 4, 65_536)).toEqual({ connections: 1000, by: 'MAX_CONNECTIONS' });
    expect(connectionCap(1000, 4, undefined)).toEqual({ connections: 1000, by: 'MAX_CONNECTIONS' });
  });

  test("is the open-file limit less the service's own descriptors and its cgroups' when that is lower", () => {
    const small = connectionCap(10_000, 4, 4096);
    expect(small.by).toBe('open-file limit');
    // 128 for the service, 16 for each of its 4 cgroups.
    expect(small.connections).toBe(4096 - 128 - 4 * 16);
    expect(connectionCap(10_000, 40, 4096).connections).toBe(small.connections - 36 * 16);
  });

  test("reads the process's own soft limit on open files", () => {
    const module = pathToFileURL(path.join(projectRoot, 'dist', 'src', 'http', 'connectionRoom.js')).href;
    const printed = execFileSync('prlimit', [
      '--nofile=777:777',
      '--',
      process.execPath,
      '--input-type=module',
      '-e',
      `import { readOpenFileLimit } from ${JSON.stringify(module)}; console.log(readOpenFileLimit());`,
    ]);
    expect(printed.toString().trim()).toBe('777');
  });
});

// A plain HTTP server on loopback with the cap: GET /slow is answered when `release` is called,
// anything else at once.
describe('connections held at the cap', () => {
  let server: Server | undefined;
  let clients: RawClient[] = [];
  let release = () => {};
  let closedForRoom = 0;
  afterEach(async () => {
    release();
    for (const client of clients) client.socket.destroy();
    clients = [];
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });

  const serve = async (cap: number) => {
    closedForRoom = 0;
    const released = new Promise<void>((resolve) => (release = resolve));
    server = createServer((request, response) => {
      if (request.url === '/slow') void released.then(() => response.end('slow'));
      else response.end('ok');
    });
    holdConnections(server, cap, () => (closedForRoom += 1));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  };
  const open = async (port: number, firstBytes: string) => {
    const client = await connect(port, firstBytes);
    clients.push(client);
    // The server has taken the bytes before the next connection comes.
    await sleep(20);
    return client;
  };
  const get = (route: string) => `GET ${route} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const answered = async (client: RawClient) => {
    for (let i = 0; i < 100 && !client.received().includes('\r\n\r\n'); i += 1) await sleep(10);
    return client.received().split('\r\n')[0];
  };
  const closed = (all: RawClient[]) => all.map((client) => client.socket.closed);

  test('a new client is answered: the connection stalled longest is closed to make room', async () => {
    const port = await serve(3);
    const stalled = [await open(port, stalledHead), await open(port, stalledHead), await open(port, stalledHead)];
    const newcomer = await open(port, get('/'));
    expect(await answered(newcomer)).toBe('HTTP/1.1 200 OK');
    await stalled[0]!.closed;
    expect(closed(stalled)).toEqual([true, false, false]);
    expect(closedForRoom).toBe(1);
  });

  test('a connection that keeps sending outlives one that stalled after it', async () => {
    const port = await serve(2);
    const dripping = await open(port, stalledHead);
    const stalled = await open(port, stalledHead);
    dripping.socket.write('{');
    await sleep(20);
    const newcomer = await open(port, get('/'));
    expect(await answered(newcomer)).toBe('HTTP/1.1 200 OK');
    await stalled.closed;
    expect(closed([dripping, stalled])).toEqual([false, true]);
  });

  test('an idle kept-alive connection is closed before one that is sending', async () => {
    const port = await serve(2);
    const idle = await open(port, get('/'));
    expect(await answered(idle)).toBe('HTTP/1.1 200 OK');
    const sending = await open(port, stalledHead);
    await sleep(20);
    sending.socket.write('{');
    await open(port, get('/'));
    await idle.closed;
    expect(closed([idle, sending])).toEqual([true, false]);
  });

  test('a connection being answered is never closed; when every one is, the new one is', async () => {
    const port = await serve(2);
    const busy = await open(port, get('/slow'));
    const stalled = await open(port, stalledHead);
    const second = await open(port, get('/slow'));
    await stalled.closed;
    expect(closed([busy, stalled, second])).toEqual([false, true, false]);
    const turnedAway = await open(port, get('/'));
    await turnedAway.closed;
    expect(turnedAway.received()).toBe('');
    release();
    expect([await answered(busy), await answered(second)]).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
    expect(closedForRoom).toBe(2);
  });
});
