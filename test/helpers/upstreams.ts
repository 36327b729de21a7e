import { type AttestationServerOptions, startAttestationServer } from '../../src/dev/attestationServer.js';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import type { RunningServer } from '../../src/dev/listen.js';
import { startStorageServer } from '../../src/dev/storageServer.js';

/** The development attestation and storage servers, on loopback. */
export interface Upstreams {
  readonly attestation: RunningServer;
  readonly storage: RunningServer;
}

/**
 * Starts both development servers: the storage server serves codeDirs to requests whose document
 * verifies against the development root, as the real one checks AWS's.
 */
export async function startUpstreams(
  codeDirs: readonly string[],
  attestationOptions: AttestationServerOptions = {},
): Promise<Upstreams> {
  const attestation = await startAttestationServer(attestationOptions);
  const storage = await startStorageServer({ codeDirs, attestationRoot: devRootPem });
  return { attestation, storage };
}
