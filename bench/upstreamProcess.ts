// The development attestation and storage servers (node dist/src/dev/main.js) in a process of their
// own, on free loopback ports, so their work lands on neither the service's nor the load
// generator's CPU account.
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { projectRoot } from '../src/dev/projectRoot.js';
import { startNodeChild } from './child.js';
import type { Cleanup } from './cleanup.js';
import { countsRequest, type UpstreamCounts } from './requestCounter.js';

const devServersScript = path.join(projectRoot, 'dist/src/dev/main.js');
const requestCounter = pathToFileURL(path.resolve(import.meta.dirname, 'requestCounter.js')).href;
const stopGraceMs = 2_000;
const countsTimeoutMs = 5_000;

/** Where the development attestation and storage servers listen. */
export interface Upstreams {
  readonly attestationUrl: string;
  readonly storageUrl: string;
  readonly pid: number;
  /** Requests each server has answered so far. */
  counts(): Promise<UpstreamCounts>;
  stop(): Promise<void>;
}

/**
 * Runs the development upstream servers on loopback; port 0 in their URLs lets the kernel pick.
 * They serve the examples and the code in codeDirs.
 */
export async function startUpstreams(cleanup: Cleanup, codeDirs: readonly string[] = []): Promise<Upstreams> {
  const { child, match, subprocess } = await startNodeChild({
    name: 'development upstream servers',
    nodeArgs: ['--import', requestCounter],
    script: devServersScript,
    // Not the project directory: a developer's .env there must not change the bench.
    cwd: os.tmpdir(),
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ATTESTATION_URL: 'http://127.0.0.1:0',
      STORAGE_URL: 'http://127.0.0.1:0/load',
      DEV_CODE_DIRS: codeDirs.join(':'),
    },
    ready: /attestation server (http:\/\/127\.0\.0\.1:\d+)\S*, storage server (http:\/\/127\.0\.0\.1:\d+\/load)/,
    ipc: true,
    cleanup,
  });
  return {
    attestationUrl: match[1]!,
    storageUrl: match[2]!,
    pid: child.pid,
    counts: () =>
      new Promise<UpstreamCounts>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('the upstream servers did not report their request counts')),
          countsTimeoutMs,
        );
        subprocess.once('message', (counts: UpstreamCounts) => {
          clearTimeout(timer);
          resolve(counts);
        });
        subprocess.send(countsRequest);
      }),
    stop: () => child.stop(stopGraceMs),
  };
}
