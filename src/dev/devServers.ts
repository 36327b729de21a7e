import path from 'node:path';
import type { Config } from '../config.js';
import { loadSigner } from '../signing.js';
import { devPcrs, startAttestationServer } from './attestationServer.js';
import { devRootPem } from './devAttestationChain.js';
import { startKmsServer } from './kmsServer.js';
import type { RunningServer } from './listen.js';
import { projectRoot } from './projectRoot.js';
import { startStorageServer } from './storageServer.js';

const examplesDir = path.join(projectRoot, 'examples');
const defaultHttpPort = 80;

/** Both development servers, running. */
export interface DevServers {
  readonly attestation: RunningServer;
  readonly storage: RunningServer;
  /** The development KMS, where SEALING_KMS_ENDPOINT names a port for it. */
  readonly kms: RunningServer | undefined;
  /** Where the served functions come from. */
  readonly codeDir: string;
  close(): Promise<void>;
}

/**
 * Starts the development attestation and storage servers on loopback at the ports of the
 * service's own ATTESTATION_URL and STORAGE_URL, serving the functions in examples/ (and in
 * moreCodeDirs, searched first) to requests whose document verifies against the development root.
 */
export async function startDevServers(
  config: Pick<Config, 'attestationUrl' | 'storageUrl' | 'signerKeyPath' | 'sealingKmsEndpoint'>,
  moreCodeDirs: readonly string[] = [],
): Promise<DevServers> {
  // With a signer, a document asked for no key attests the signer's, as the enclave's attestation server does.
  const publicKey = config.signerKeyPath === undefined ? undefined : (await loadSigner(config.signerKeyPath)).publicKey;
  const attestation = await startAttestationServer({ port: portOf(config.attestationUrl), publicKey });
  const storage = await startStorageServer({
    codeDirs: [...moreCodeDirs, examplesDir],
    attestationRoot: devRootPem,
    port: portOf(config.storageUrl),
  });
  // It releases data keys to the development image: documents with its PCR0 to PCR2.
  const kms =
    config.sealingKmsEndpoint === undefined
      ? undefined
      : await startKmsServer({
          port: portOf(config.sealingKmsEndpoint),
          attestationRootPem: devRootPem,
          policyPcrs: new Map([0, 1, 2].map((index) => [index, devPcrs.get(index)!])),
        });
  return {
    attestation,
    storage,
    kms,
    codeDir: examplesDir,
    close: async () => {
      await Promise.all([attestation.close(), storage.close(), kms?.close()]);
    },
  };
}

// The port a URL names, or HTTP's own when it names none.
function portOf(url: string): number {
  const { port } = new URL(url);
  return port === '' ? defaultHttpPort : Number(port);
}
