// Runs the development attestation and storage servers as one program (`node dist/src/dev/main.js`),
// where the enclave's attestation server and the real code store are not available: under
// supervisord on an ordinary machine (deploy/supervisord-dev.conf). They listen on loopback at the
// ports of the service's own ATTESTATION_URL and STORAGE_URL, so both read the same environment.
import path from 'node:path';
import 'dotenv/config';
import { parseConfig } from '../config.js';
import { devAttestationDocument, startAttestationServer } from './attestationServer.js';
import { startStorageServer } from './storageServer.js';

const examplesDir = path.resolve(import.meta.dirname, '../../../examples');
const defaultHttpPort = 80;

// The port a URL names, or HTTP's own when it names none.
function portOf(url: string): number {
  const { port } = new URL(url);
  return port === '' ? defaultHttpPort : Number(port);
}

const usage = `node dist/src/dev/main.js
Runs the development attestation and storage servers on 127.0.0.1, at the ports of ATTESTATION_URL
and STORAGE_URL (from the environment or .env), serving the functions in examples/. Stops on SIGTERM.`;

async function main(): Promise<void> {
  if (process.argv.length > 2) {
    console.log(usage);
    process.exit(process.argv.includes('--help') || process.argv.includes('-h') ? 0 : 2);
  }
  const config = parseConfig(process.env);
  const attestation = await startAttestationServer({ port: portOf(config.attestationUrl) });
  const storage = await startStorageServer({
    codeDirs: [examplesDir],
    attestation: devAttestationDocument,
    port: portOf(config.storageUrl),
  });
  console.log(`development attestation server ${attestation.url}, storage server ${storage.url}/load serving ${examplesDir}`);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      void Promise.all([attestation.close(), storage.close()]).then(() => process.exit(0));
    });
  }
}

main().catch((error: unknown) => {
  console.error(`development servers cannot start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
