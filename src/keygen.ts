// Generates the enclave's signing key at every start (scripts/enclave-start.sh):
//   node dist/src/keygen.js --secret <path> --public <path>
// The secret (32 raw bytes, mode 0600) is SIGNER_KEY_PATH's; the public key (64 bytes, x || y) is
// what the attestation server puts in every document, so the key that signs answers is the
// attested one. Made here, inside the enclave, so its secret half exists nowhere else.
import { parseArgs } from 'node:util';
import { writeKeyPair } from './keyFiles.js';

const usage = 'Usage: node dist/src/keygen.js --secret <path> --public <path>';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { secret: { type: 'string' }, public: { type: 'string' } } });
  if (values.secret === undefined || values.public === undefined) {
    console.error(usage);
    process.exit(2);
  }
  const address = await writeKeyPair(values.secret, values.public);
  console.log(`generated the signing key ${address}: secret ${values.secret}, public key ${values.public}`);
}

main().catch((error: unknown) => {
  console.error(`keygen: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
