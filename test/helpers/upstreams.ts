import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';
import { type AttestationServerOptions, startAttestationServer } from '../../src/dev/attestationServer.js';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import type { RunningServer } from '../../src/dev/listen.js';
import { type StorageServerOptions, startStorageServer } from '../../src/dev/storageServer.js';

/** The development attestation and storage servers, on loopback. */
export interface Upstreams {
  readonly attestation: RunningServer;
  readonly storage: RunningServer;
}

/** How the storage server checks a document, where a test changes it. */
export type StorageChecks = Partial<Pick<StorageServerOptions, 'attestationRoot' | 'maxDocumentAgeMs'>>;

/**
 * Starts both development servers: the storage server serves codeDirs to requests whose document
 * verifies against the development root, as the real one checks AWS's.
 */
export async function startUpstreams(
  codeDirs: readonly string[],
  attestationOptions: AttestationServerOptions = {},
  storageOptions: StorageChecks = {},
): Promise<Upstreams> {
  const attestation = await startAttestationServer(attestationOptions);
  const storage = await startStorageServer({ codeDirs, attestationRoot: devRootPem, ...storageOptions });
  return { attestation, storage };
}

/** How many requests each development server has served since counting began. */
export interface RequestCounts {
  readonly attestation: number;
  readonly storage: number;
  /** Stops counting. */
  stop(): void;
}

/** Counts the requests the two servers of a stack serve, told apart by the port they came in on. */
export function countRequests(upstreams: Upstreams): RequestCounts {
  const portOf = (server: RunningServer) => Number(new URL(server.url).port);
  const ports = { attestation: portOf(upstreams.attestation), storage: portOf(upstreams.storage) };
  const counts = { attestation: 0, storage: 0 };
  const onRequest = (message: unknown) => {
    const port = (message as { request: IncomingMessage }).request.socket.localPort;
    if (port === ports.attestation) counts.attestation += 1;
    if (port === ports.storage) counts.storage += 1;
  };
  // Node's own channel sees every request of every http.Server in this process.
  subscribe('http.server.request.start', onRequest);
  return {
    get attestation() {
      return counts.attestation;
    },
    get storage() {
      return counts.storage;
    },
    stop: () => unsubscribe('http.server.request.start', onRequest),
  };
}
