// Runs the development attestation and storage servers as one program (`node dist/src/dev/main.js`),
// where the enclave's attestation server and the real code store are not available: under
// supervisord on an ordinary machine (deploy/supervisord-dev.conf). They listen on loopback at the
// ports of the service's own ATTESTATION_URL and STORAGE_URL, so both read the same environment.
import 'dotenv/config';
import { parseConfig } from '../config.js';
import { startDevServers } from './devServers.js';

const usage = `node dist/src/dev/main.js
Runs the development attestation and storage servers on 127.0.0.1, at the ports of ATTESTATION_URL
and STORAGE_URL (from the environment or .env), serving the functions in examples/ and in the
folders DEV_CODE_DIRS names (colon-separated, searched first). Stops on SIGTERM.`;

async function main(): Promise<void> {
  if (process.argv.length > 2) {
    console.log(usage);
    process.exit(process.argv.includes('--help') || process.argv.includes('-h') ? 0 : 2);
  }
  const moreCodeDirs = (process.env.DEV_CODE_DIRS ?? '').split(':').filter((dir) => dir !== '');
  const servers = await startDevServers(parseConfig(process.env), moreCodeDirs);
  console.log(
    `development attestation server ${servers.attestation.url}, storage server ${servers.storage.url}/load serving ${servers.codeDir}`,
  );
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      void servers.close().then(() => process.exit(0));
    });
  }
}

main().catch((error: unknown) => {
  console.error(`development servers cannot start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
