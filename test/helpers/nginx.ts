import { spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import getPort from 'get-port';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { statusOf } from './http.js';
import { descendantPids, exitedWithin, signal } from './processes.js';
import { findProgram } from './programs.js';
import { projectRoot } from './projectRoot.js';
import { waitFor } from './wait.js';

// The shipped example, used as it is except for the addresses below.
export const nginxExample = path.join(projectRoot, 'deploy/nginx/oyster-serverless.conf');
// The example's two instances (named in each of its two upstream blocks) and its listen directive,
// in the example's own words.
const exampleServers = '    server 127.0.0.1:6001 max_fails=0;\n    server 127.0.0.1:6002 max_fails=0;\n';
const exampleListen = 'listen 8080;';
const startTimeoutMs = 10_000;
const stopTimeoutMs = 5_000;

// One line of the access log: what the client got, and each instance nginx tried in turn.
export interface AccessEntry {
  readonly status: number;
  /** host:port of each instance tried, in order. */
  readonly upstreams: string[];
  /** What each of them answered ('502' for a refused connection), in the same order. */
  readonly upstreamStatuses: string[];
}

// nginx running the shipped example on loopback.
export interface Nginx {
  readonly url: string;
  accessLog(): Promise<AccessEntry[]>;
  /** Stops nginx (gracefully, then by force) and removes its files. Safe to repeat. */
  stop(): Promise<void>;
}

// The example with its instances replaced by the given host:port addresses and its listen
// address by a loopback port; fails when the example no longer reads as expected.
export async function renderExample(upstreams: readonly string[], listenPort: number): Promise<string> {
  let text = await readFile(nginxExample, 'utf8');
  const servers = upstreams.map((upstream) => `    server ${upstream} max_fails=0;\n`).join('');
  const replacements: [from: string, to: string, times: number][] = [
    [exampleServers, servers, 2],
    [exampleListen, `listen 127.0.0.1:${listenPort};`, 1],
  ];
  for (const [from, to, times] of replacements) {
    const parts = text.split(from);
    if (parts.length !== times + 1) throw new Error(`${nginxExample} should name ${from} ${times} time(s)`);
    text = parts.join(to);
  }
  return text;
}

// The smallest nginx.conf around the example: one worker (so the upstream state is easy to
// reason about), every file in dir, an access log that names the instances each request tried.
function mainConfig(dir: string): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
    log_format upstreams '$status "$upstream_addr" "$upstream_status"';
    access_log ${dir}/access.log upstreams;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${dir}/oyster-serverless.conf;
}
`;
}

// Starts nginx with the example in front of service instances (host:port each) and resolves once
// a request through it reaches one of them.
export async function startNginx(upstreams: readonly string[]): Promise<Nginx> {
  const nginx = await findProgram('nginx');
  if (!nginx) throw new Error('nginx is not installed');
  const dir = await makeTempDir('oyster-nginx-');
  // The worker processes run as nobody and need to reach their temporary directories.
  await chmod(dir, 0o755);
  const port = await getPort({ host: '127.0.0.1' });
  await writeFile(path.join(dir, 'oyster-serverless.conf'), await renderExample(upstreams, port));
  await writeFile(path.join(dir, 'nginx.conf'), mainConfig(dir));

  const child = spawn(nginx, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let done = false;
  void exited.then(() => (done = true));
  const url = `http://127.0.0.1:${port}`;

  const stop = async () => {
    if (!done && child.pid !== undefined) {
      const everything = [child.pid, ...(await descendantPids(child.pid))];
      signal(child.pid, 'SIGQUIT');
      if (!(await exitedWithin(exited, stopTimeoutMs))) for (const pid of everything) signal(pid, 'SIGKILL');
      await exited;
    }
    await removeTempDir(dir);
  };

  try {
    await waitFor(
      'nginx to pass a request to an instance',
      async () => !done && (await statusOf(`${url}/health`)) === 200,
      startTimeoutMs,
    );
  } catch (error) {
    const log = await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
    await stop();
    throw new Error(`${(error as Error).message}\n${stderr}${log}`);
  }
  return {
    url,
    accessLog: async () => parseAccessLog(await readFile(path.join(dir, 'access.log'), 'utf8')),
    stop,
  };
}

function parseAccessLog(text: string): AccessEntry[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const match = /^(\d+) "([^"]*)" "([^"]*)"$/.exec(line);
      if (!match) throw new Error(`unexpected access log line: ${line}`);
      return {
        status: Number(match[1]),
        upstreams: match[2]!.split(', '),
        upstreamStatuses: match[3]!.split(', '),
      };
    });
}
