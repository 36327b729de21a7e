// Seals secrets for an image (`npm run seal -- …`): verifies the attestation document first, then
// encrypts each value to the sealing key it attests, and prints NAME=sealed:v1:… lines for
// wrangler's secrets file. `wrangler deploy --secrets-file` uploads them as secret_text bindings,
// which only an instance of the attested image can open.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { AttestationError, maxDocumentBytes, verifyAttestation } from '../src/attestation/verify.js';
import { seal } from '../src/secrets/sealedValue.js';
import { sealingKeyOf } from '../src/secrets/sealing.js';
import { UsageError, verifyOptions } from './attestationOptions.js';

const usage = `Usage: npm run -s seal -- --attestation <file | service URL> --pcr <index>=<hex>... [--root <pem>] [--at <time>] NAME=value...

  --attestation  a document saved from GET /attestation, or the service's URL: then a document is
                 fetched for a fresh nonce of this command's and checked against it
  --pcr          the image's PCRs the document must have (at least one; PCR0 to PCR2 of a release)
  --root, --at   as for npm run verify
Prints one NAME=sealed:v1:<key id>:<base64> line for each NAME=value, for wrangler's secrets file.`;
const failedExit = 1;
const usageExit = 2;
const nonceBytes = 32;
const fetchTimeoutMs = 10_000;
const binding = /^([A-Za-z_$][\w$]*)=([\s\S]*)$/;

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      attestation: { type: 'string' },
      pcr: { type: 'string', multiple: true },
      root: { type: 'string' },
      at: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return console.log(usage);
  if (values.attestation === undefined) throw new UsageError('give --attestation');
  if ((values.pcr ?? []).length === 0) throw new UsageError('give the PCRs of the image to seal for (--pcr 0=…)');
  const secrets = positionals.map((pair) => {
    const match = binding.exec(pair);
    if (!match) throw new UsageError(`${pair.split('=')[0]} is not NAME=value with a JavaScript identifier for NAME`);
    return { name: match[1]!, value: match[2]! };
  });
  if (secrets.length === 0) throw new UsageError('give at least one NAME=value');

  const { document, nonce } = await documentFrom(values.attestation);
  const attested = verifyAttestation(document, { ...(await verifyOptions(values)), nonce });
  const key = sealingKeyOf(attested.userData);
  if (!key) {
    console.error('seal: the document names no sealing key: sealed secrets are off on that instance');
    process.exit(failedExit);
  }
  for (const { name, value } of secrets) console.log(`${name}=${seal(key.publicKey, key.keyId, name, value)}`);
}

// A saved document, or one fetched from the service for a nonce of ours.
async function documentFrom(source: string): Promise<{ document: Uint8Array; nonce?: Uint8Array }> {
  if (!/^https?:\/\//.test(source)) return { document: await readFile(source) };
  const nonce = randomBytes(nonceBytes);
  const url = new URL('/attestation', source);
  url.searchParams.set('nonce', nonce.toString('hex'));
  const response = await fetch(url, { signal: AbortSignal.timeout(fetchTimeoutMs) });
  if (!response.ok) throw new Error(`GET ${url.href} answered ${response.status}`);
  const document = new Uint8Array(await response.arrayBuffer());
  if (document.length > maxDocumentBytes) throw new AttestationError('size', `it has ${document.length} bytes`);
  return { document, nonce };
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof AttestationError) {
    console.error(`seal: the attestation fails the check ${message}; nothing was sealed`);
    process.exit(failedExit);
  }
  console.error(`seal: ${message}`);
  if (error instanceof UsageError) console.error(`\n${usage}`);
  process.exit(error instanceof UsageError ? usageExit : failedExit);
});
