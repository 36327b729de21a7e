// The operator's one-time step for an image's sealed secrets (`npm run sealing-blob -- …`): asks
// KMS for the master secret's CiphertextBlob and prints it (base64). Keep it where SEALING_KMS_BLOB
// points; it may be stored anywhere, as only an attested enclave of the release gets it decrypted.
import { parseArgs } from 'node:util';
import { generateSealingBlob } from '../src/secrets/blob.js';

const usage = `Usage: npm run -s sealing-blob -- --key-id <KMS key id or ARN> --region <region> [--endpoint <url>] > sealing.blob`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { 'key-id': { type: 'string' }, region: { type: 'string' }, endpoint: { type: 'string' } },
  });
  if (values['key-id'] === undefined || values.region === undefined) {
    console.error(usage);
    process.exit(2);
  }
  console.log(await generateSealingBlob({ keyId: values['key-id'], region: values.region, endpoint: values.endpoint }));
}

main().catch((error: unknown) => {
  console.error(`sealing-blob: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
