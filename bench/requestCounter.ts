// Preloaded (node --import) into the development upstream servers' process: counts the requests
// they serve and tells the bench over IPC, so the bench can check whether a warm request still
// reaches them. Ends the process when the bench goes away.
import { subscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';

/** How many requests each upstream server has answered so far. */
export interface UpstreamCounts {
  /** GETs: the attestation server's only kind of request. */
  readonly attestation: number;
  /** POST /load: the storage server's. */
  readonly storage: number;
}

/** The message the bench sends to ask for the counts. */
export const countsRequest = 'counts';

const counts = { attestation: 0, storage: 0 };

// Node's own channel sees every request of every http.Server in this process.
subscribe('http.server.request.start', (message) => {
  const request = (message as { request: IncomingMessage }).request;
  if (request.method === 'GET') counts.attestation += 1;
  else if (request.method === 'POST' && request.url?.startsWith('/load')) counts.storage += 1;
});

if (process.send) {
  process.on('message', (message) => {
    if (message === countsRequest) process.send?.({ ...counts } satisfies UpstreamCounts);
  });
  // The channel closes when the bench exits, however it exits.
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
